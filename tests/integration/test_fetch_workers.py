"""``shoal fetch --workers N``: one run over N processes that own disjoint shares of hosts."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from shoal.engine.shards import shard_of
from tests.conftest import read_records, run_shoal, shoal_cmd, write_urls
from tests.servers import RequestLog, html_page, sites

pytestmark = pytest.mark.timeout(120)


def pages(n: int, *, delay: float = 0.0) -> dict[str, object]:
    async def page(request: web.Request) -> web.Response:
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text=html_page(f"Page {request.path}", ["/a"]),
                            content_type="text/html")

    return {f"/p/{i}": page for i in range(n)}


def _children(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _wait_for_lines(path: Path, n: int, proc: asyncio.subprocess.Process) -> None:
    for _ in range(1500):
        if proc.returncode is not None:
            return
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never reached {n} lines")


async def _start_midway(args: list[str], out: Path, lines: int
                        ) -> tuple[asyncio.subprocess.Process, list[int]]:
    """Start ``shoal`` (stderr piped), wait for ``lines`` records; (process, followers)."""
    proc = await asyncio.create_subprocess_exec(
        *shoal_cmd(*args), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    await _wait_for_lines(out, lines, proc)
    return proc, _children(proc.pid)


async def _wait_gone(pids: list[int], seconds: float) -> None:
    for _ in range(int(seconds / 0.05)):
        if not any(_alive(p) for p in pids):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"processes {pids} outlived their leader")


async def test_workers_share_hosts_and_write_one_record_per_url(tmp_path: Path) -> None:
    log = RequestLog()
    async with sites(6, pages(30, delay=0.01), log=log) as hosts:
        urls = [h.url(f"/p/{i}") for h in hosts for i in range(30)]
        inp = write_urls(tmp_path / "u.txt", [*urls, "not a url", urls[0]])
        out = tmp_path / "out.jsonl"
        run = await run_shoal("fetch", str(inp), "-o", str(out), "-q", "--workers", "3",
                              "--per-host", "2", "--concurrency", "12")
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr
    recs = read_records(out)
    assert Counter(r["url"] for r in recs) == Counter([*urls, "not a url"])
    assert all(r["status"] == 200 for r in recs if r["url"] != "not a url")
    assert "181 records this run" in run.stderr  # the summary counts every process's records
    for h in hosts:
        assert log.max_in_flight(h.netloc) <= 2
    assert log.max_in_flight() <= 12  # --concurrency is shared out, not multiplied
    # the hosts really were spread over more than one process
    assert len({shard_of(f"http://{h.netloc}", 3) for h in hosts}) > 1
    again = await run_shoal("fetch", str(inp), "-o", str(out), "-q", "--workers", "3")
    assert again.code == 0 and "nothing to do" in again.stderr


async def test_killed_leader_takes_its_workers_with_it_and_a_rerun_completes(
        tmp_path: Path) -> None:
    async with sites(4, pages(150, delay=0.02)) as hosts:
        urls = [h.url(f"/p/{i}") for h in hosts for i in range(150)]
        inp = write_urls(tmp_path / "u.txt", urls)
        out = tmp_path / "out.jsonl"
        args = ["fetch", str(inp), "-o", str(out), "-q", "--workers", "2", "--per-host", "2"]
        proc, followers = await _start_midway(args, out, 50)
        assert followers, "no worker process was started"
        proc.kill()
        await proc.wait()
        await _wait_gone(followers, 15)
        run = await run_shoal(*args)
        assert run.code == 0, run.stderr
    recs = read_records(out)
    assert Counter(r["url"] for r in recs) == Counter(urls)  # none lost, none twice


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_interrupted_workers_save_state_and_exit_130(tmp_path: Path,
                                                           sig: signal.Signals) -> None:
    async with sites(4, pages(100, delay=0.02)) as hosts:
        urls = [h.url(f"/p/{i}") for h in hosts for i in range(100)]
        inp = write_urls(tmp_path / "u.txt", urls)
        out = tmp_path / "out.jsonl"
        args = ["fetch", str(inp), "-o", str(out), "-q", "--workers", "2", "--per-host", "2"]
        proc, followers = await _start_midway(args, out, 40)
        proc.send_signal(sig)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 130, err.decode()
        assert "Traceback" not in err.decode()
        await _wait_gone(followers, 5)
        partial = read_records(out)
        assert 0 < len(partial) < len(urls)
        assert len({r["url"] for r in partial}) == len(partial)
        run = await run_shoal(*args)
        assert run.code == 0, run.stderr
    assert Counter(r["url"] for r in read_records(out)) == Counter(urls)


async def test_a_dead_worker_fails_the_run_and_a_rerun_completes(tmp_path: Path) -> None:
    async with sites(4, pages(100, delay=0.02)) as hosts:
        urls = [h.url(f"/p/{i}") for h in hosts for i in range(100)]
        inp = write_urls(tmp_path / "u.txt", urls)
        out = tmp_path / "out.jsonl"
        args = ["fetch", str(inp), "-o", str(out), "-q", "--workers", "2", "--per-host", "2"]
        proc, (follower,) = await _start_midway(args, out, 40)
        os.kill(follower, signal.SIGKILL)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 1, err.decode()
        message = err.decode()
        assert "worker process 1" in message and "re-run" in message
        assert "Traceback" not in message
        run = await run_shoal(*args)
        assert run.code == 0, run.stderr
    assert Counter(r["url"] for r in read_records(out)) == Counter(urls)


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0"], "--workers must be between 1 and 64"),
    (["--workers", "2", "--db", "postgresql://nobody@127.0.0.1:1/none"], "--workers"),
])
async def test_bad_workers_values_are_usage_errors(tmp_path: Path, args: list[str],
                                                   message: str) -> None:
    inp = write_urls(tmp_path / "u.txt", ["http://127.0.0.1:9/"])
    run = await run_shoal("fetch", str(inp), "-o", str(tmp_path / "o.jsonl"), *args)
    assert run.code == 2 and message in run.stderr and "Traceback" not in run.stderr


async def test_crawl_has_no_workers_flag() -> None:
    run = await run_shoal("crawl", "http://127.0.0.1:9/", "--workers", "2")
    assert run.code == 2 and "--workers" in run.stderr
