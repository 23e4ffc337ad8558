"""The shoal command as a user runs it: exit codes, messages, stdin, resume, signals."""

from __future__ import annotations

import asyncio
import os
import random
import shlex
import signal
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import read_records, run_shoal, run_shoal_file_limit, shoal_cmd, write_urls
from tests.servers import html_page, site

pytestmark = pytest.mark.timeout(120)

RECORD_FIELDS = {"url", "final_url", "status", "error", "content_type", "bytes", "elapsed_ms",
                 "attempts", "depth", "redirects", "title", "links", "sha256", "fetched_at"}


def pages(n: int, *, delay: float = 0.0) -> dict[str, object]:
    async def page(request: web.Request) -> web.Response:
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text=html_page(f"Page {request.path}", ["/a", "/b"]),
                            content_type="text/html")

    return {f"/p/{i}": page for i in range(n)}


async def test_fetch_writes_one_record_per_distinct_url(tmp_path: Path, tmp_out: Path) -> None:
    async with site(pages(20)) as srv:
        urls = [srv.url(f"/p/{i}") for i in range(20)]
        spelled = srv.url("/p/3").replace("http://", "HTTP://") + "#frag"
        lines = ["# a comment", "", *urls, spelled, "not a url", "ftp://example.com/x"]
        inp = write_urls(tmp_path / "urls.txt", lines)
        run = await run_shoal("fetch", str(inp), "-o", str(tmp_out), "--quiet")
    assert run.code == 0, run.stderr
    recs = read_records(tmp_out)
    assert len(recs) == 22
    assert all(set(r) == RECORD_FIELDS for r in recs)
    by_url = {r["url"]: r for r in recs}
    assert len(by_url) == 22
    ok = [r for r in recs if r["status"] == 200]
    assert len(ok) == 20 and all(r["title"] == f"Page /p/{r['url'].rsplit('/', 1)[1]}"
                                 for r in ok)
    assert all(r["links"] == 2 and r["error"] is None and r["attempts"] == 1 for r in ok)
    kinds = {r["url"]: r["error"]["kind"] for r in recs if r["error"]}  # type: ignore[index]
    assert kinds == {"not a url": "invalid_url", "ftp://example.com/x": "unsupported_scheme"}
    assert "20 records" in run.stderr or "records this run" in run.stderr
    assert str(tmp_out) in run.stderr  # the summary says where the output went


@pytest.mark.parametrize("via", ["file", "stdin"])
async def test_an_input_starting_with_a_byte_order_mark_is_read_from_its_first_url(
        tmp_path: Path, tmp_out: Path, via: str) -> None:
    # what Notepad and Excel save as "UTF-8": the file starts with EF BB BF
    async with site(pages(2)) as srv:
        data = b"\xef\xbb\xbf" + "".join(srv.url(f"/p/{i}") + "\r\n"
                                         for i in range(2)).encode()
        if via == "file":
            inp = tmp_path / "u.txt"
            inp.write_bytes(data)
            run = await run_shoal("fetch", str(inp), "-o", str(tmp_out), "-q")
        else:
            run = await run_shoal("fetch", "-", "-o", str(tmp_out), "-q", stdin=data)
    assert run.code == 0, run.stderr
    recs = read_records(tmp_out)
    assert sorted(r["url"] for r in recs) == [srv.url("/p/0"), srv.url("/p/1")]
    assert all(r["status"] == 200 and r["error"] is None for r in recs)


async def test_stdin_input_and_stdout_output(tmp_path: Path) -> None:
    async with site(pages(3)) as srv:
        data = "".join(srv.url(f"/p/{i}") + "\n" for i in range(3)).encode()
        run = await run_shoal("fetch", "-", "--quiet", stdin=data)
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 3
    assert all(line.startswith('{"url":') for line in lines)  # nothing else on stdout
    assert "shoal" in run.stderr


async def test_a_reader_leaving_standard_output_early_stops_quietly(tmp_path: Path) -> None:
    n = 3000  # far more output than a pipe holds
    async with site(pages(n)) as srv:
        inp = write_urls(tmp_path / "u.txt", [srv.url(f"/p/{i}") for i in range(n)])
        command = " ".join([*(shlex.quote(a) for a in shoal_cmd("fetch", str(inp), "-q")),
                            "| head -n 2"])
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", f"set -o pipefail; {command}", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        fetched = srv.log.count(path_prefix="/p/")
    assert proc.returncode == 0, err.decode()  # shoal's own code (pipefail)
    assert len(out.decode().splitlines()) == 2
    assert "Traceback" not in err.decode() and "Error" not in err.decode(), err.decode()
    assert fetched < n  # it stopped, rather than fetching the rest for nobody


async def test_stdin_still_open_is_fetched_as_it_comes_and_sigint_exits(
        tmp_path: Path, tmp_out: Path) -> None:
    # a producer that writes a few URLs and keeps the pipe open (tail -f, a generator)
    async with site(pages(3)) as srv:
        proc = await asyncio.create_subprocess_exec(
            *shoal_cmd("fetch", "-", "-o", str(tmp_out), "-q"), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert proc.stdin is not None
        try:
            proc.stdin.write("".join(srv.url(f"/p/{i}") + "\n" for i in range(2)).encode())
            await proc.stdin.drain()
            await _wait_for_lines(tmp_out, 2, proc)  # not held back for more input
            assert tmp_out.exists() and len(read_records(tmp_out)) == 2
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 15)  # not stuck reading
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 130, err.decode()
        assert "Traceback" not in err.decode()
        # the same input again (the pipe's lines read before are skipped): one more URL
        data = "".join(srv.url(f"/p/{i}") + "\n" for i in range(3)).encode()
        run = await run_shoal("fetch", "-", "-o", str(tmp_out), "-q", stdin=data)
        assert run.code == 0, run.stderr
    assert sorted(r["url"] for r in read_records(tmp_out)) == [srv.url(f"/p/{i}")
                                                               for i in range(3)]


async def test_a_second_sigint_while_finishing_up_exits_130_without_a_traceback(
        tmp_path: Path, tmp_out: Path) -> None:
    # After the summary, shoal still closes its state and waits for its input reader (here
    # a standard input that stays open): a second Ctrl-C lands there.
    async with site(pages(1)) as srv:
        proc = await asyncio.create_subprocess_exec(
            *shoal_cmd("fetch", "-", "-o", str(tmp_out), "-q"), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert proc.stdin is not None and proc.stderr is not None
        err = b""
        try:
            proc.stdin.write(srv.url("/p/0").encode() + b"\n")
            await proc.stdin.drain()
            await _wait_for_lines(tmp_out, 1, proc)
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(15):
                while b"interrupted:" not in err:  # the summary's last line
                    line = await proc.stderr.readline()
                    assert line, err.decode()
                    err += line
                proc.send_signal(signal.SIGINT)
                err += await proc.stderr.read()
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err and b"Error" not in err, err.decode()


async def test_a_named_pipe_or_process_substitution_is_read_as_input(
        tmp_path: Path, tmp_out: Path) -> None:
    fifo = tmp_path / "urls.fifo"  # what `shoal fetch <(make-urls)` hands over: a pipe
    os.mkfifo(fifo)
    async with site(pages(3)) as srv:
        data = "".join(srv.url(f"/p/{i}") + "\n" for i in range(3))
        writer = asyncio.create_task(asyncio.to_thread(fifo.write_text, data))
        run = await run_shoal("fetch", str(fifo), "-o", str(tmp_out), "-q")
        await asyncio.wait_for(writer, 10)
    assert run.code == 0, run.stderr
    assert sorted(r["url"] for r in read_records(tmp_out)) == [srv.url(f"/p/{i}")
                                                               for i in range(3)]


@pytest.mark.parametrize(("args", "message"), [
    (["--concurrency", "0"], "--concurrency must be between 1 and 100000, got 0"),
    (["--per-host", "-1"], "--per-host"),
    (["--timeout", "0"], "--timeout"),
    (["--max-bytes", "lots"], "is not a size"),
    (["--retries", "x"], "'x' is not a valid integer"),
    (["--bogus"], "No such option '--bogus'"),
])
async def test_usage_errors_exit_2_with_one_clear_line(tmp_path: Path, args: list[str],
                                                       message: str) -> None:
    inp = write_urls(tmp_path / "u.txt", ["http://127.0.0.1:9/"])
    run = await run_shoal("fetch", str(inp), *args)
    assert run.code == 2
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""


@pytest.mark.parametrize("case", ["state-under-a-file", "state-is-a-directory", "output-device"])
async def test_unusable_state_or_output_path_exits_2_with_one_line(tmp_path: Path,
                                                                   case: str) -> None:
    inp = write_urls(tmp_path / "u.txt", ["http://127.0.0.1:9/"])
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-dir").mkdir()
    args = {
        "state-under-a-file": ["-o", str(tmp_path / "o.jsonl"),
                               "--state", str(tmp_path / "a-file" / "sub" / "s.db")],
        "state-is-a-directory": ["-o", str(tmp_path / "o.jsonl"), "--fresh",
                                 "--state", str(tmp_path / "a-dir")],
        "output-device": ["-o", "/dev/full", "--state", str(tmp_path / "s.db")],
    }[case]
    if case == "output-device" and not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    run = await run_shoal("fetch", str(inp), "-q", *args)
    assert run.code == 2, run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, \
        run.stderr
    assert "cannot" in run.stderr


@pytest.mark.parametrize("spelling", ["same", "relative"])
async def test_state_naming_the_output_file_is_refused(tmp_path: Path, spelling: str) -> None:
    inp = write_urls(tmp_path / "u.txt", ["http://127.0.0.1:9/"])
    out = tmp_path / "out.jsonl"
    state = str(out) if spelling == "same" else "./out.jsonl"
    for _ in range(2):  # the second time both exist
        run = await run_shoal("fetch", str(inp), "-o", str(out), "--state", state, "-q",
                              "--retries", "0", cwd=tmp_path)
        assert run.code == 2, run.stderr
        assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
        assert "--state" in run.stderr and "output" in run.stderr
        out.write_text("")


async def test_a_second_run_on_a_state_in_use_is_refused(tmp_path: Path, tmp_out: Path) -> None:
    # e.g. a cron job started again before the last one ended: two runs would fetch every
    # URL twice and write the same output file at once
    n = 200
    async with site(pages(n, delay=0.02)) as srv:
        urls = [srv.url(f"/p/{i}") for i in range(n)]
        inp = write_urls(tmp_path / "u.txt", urls)
        args = ["fetch", str(inp), "-o", str(tmp_out), "-q", "--concurrency", "4",
                "--per-host", "4"]
        first = await _start(args)
        try:
            await _wait_for_lines(tmp_out, 5, first)
            second = await run_shoal(*args)
            assert second.code == 2, second.stderr
            assert "in use" in second.stderr and len(second.stderr.strip().splitlines()) == 1
            _, err = await asyncio.wait_for(first.communicate(), 60)
        finally:
            if first.returncode is None:
                first.kill()
                await first.wait()
        assert first.returncode == 0, err.decode()
        assert srv.log.count(path_prefix="/p/") == n  # nothing fetched twice
    assert Counter(r["url"] for r in read_records(tmp_out)) == Counter(urls)
    again = await run_shoal(*args)  # the lock went with the run
    assert again.code == 0 and "nothing to do" in again.stderr


async def test_unreadable_input_exits_2(tmp_path: Path) -> None:
    run = await run_shoal("fetch", str(tmp_path / "missing.txt"))
    assert run.code == 2
    assert "cannot read input file" in run.stderr and "Traceback" not in run.stderr


async def test_help_lists_every_flag_with_default() -> None:
    run = await run_shoal("fetch", "--help")
    assert run.code == 0
    for flag in ("--output", "--state", "--concurrency", "--per-host", "--delay", "--timeout",
                 "--retries", "--max-bytes", "--no-robots", "--user-agent", "--quiet",
                 "--fresh", "--max-retry-after"):
        assert flag in run.stdout, flag
    assert "default: 100" in run.stdout


async def test_rerun_of_finished_run_does_nothing_and_fresh_starts_over(
        tmp_path: Path, tmp_out: Path) -> None:
    async with site(pages(5)) as srv:
        inp = write_urls(tmp_path / "u.txt", [srv.url(f"/p/{i}") for i in range(5)])
        first = await run_shoal("fetch", str(inp), "-o", str(tmp_out), "-q")
        assert first.code == 0
        again = await run_shoal("fetch", str(inp), "-o", str(tmp_out), "-q")
        assert again.code == 0 and "nothing to do" in again.stderr
        assert srv.log.count(path_prefix="/p/") == 5  # nothing fetched twice
        assert len(read_records(tmp_out)) == 5
        fresh = await run_shoal("fetch", str(inp), "-o", str(tmp_out), "-q", "--fresh")
        assert fresh.code == 0
        assert srv.log.count(path_prefix="/p/") == 10
        assert len(read_records(tmp_out)) == 5


async def test_state_of_another_input_is_refused(tmp_path: Path, tmp_out: Path) -> None:
    async with site(pages(2)) as srv:
        a = write_urls(tmp_path / "a.txt", [srv.url("/p/0")])
        b = write_urls(tmp_path / "b.txt", [srv.url("/p/1")])
        assert (await run_shoal("fetch", str(a), "-o", str(tmp_out), "-q")).code == 0
        run = await run_shoal("fetch", str(b), "-o", str(tmp_out), "-q")
    assert run.code == 2
    assert "belongs to another run" in run.stderr and "--fresh" in run.stderr


async def test_appended_input_lines_are_fetched_on_rerun(tmp_path: Path, tmp_out: Path) -> None:
    async with site(pages(6)) as srv:
        inp = write_urls(tmp_path / "u.txt", [srv.url(f"/p/{i}") for i in range(3)])
        assert (await run_shoal("fetch", str(inp), "-o", str(tmp_out), "-q")).code == 0
        with inp.open("a") as fh:
            fh.write("".join(srv.url(f"/p/{i}") + "\n" for i in range(3, 6)))
        assert (await run_shoal("fetch", str(inp), "-o", str(tmp_out), "-q")).code == 0
    assert sorted(r["url"] for r in read_records(tmp_out)) == sorted(
        srv.url(f"/p/{i}") for i in range(6))


async def _start(args: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *shoal_cmd(*args), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def _wait_for_lines(path: Path, n: int, proc: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        if proc.returncode is not None:
            return
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
async def test_killed_run_resumes_to_exactly_one_record_per_url(
        tmp_path: Path, tmp_out: Path, sig: signal.Signals) -> None:
    n = 400
    async with site(pages(n, delay=0.01)) as srv:
        urls = [srv.url(f"/p/{i}") for i in range(n)]
        inp = write_urls(tmp_path / "u.txt", urls)
        args = ["fetch", str(inp), "-o", str(tmp_out), "-q", "--concurrency", "8",
                "--per-host", "8"]
        proc = await _start(args)
        await _wait_for_lines(tmp_out, 60, proc)
        proc.send_signal(sig)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        if sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL
        else:
            assert proc.returncode == 130, err.decode()
            assert "Traceback" not in err.decode()
            partial = read_records(tmp_out)  # a graceful stop leaves no torn line
            assert 0 < len(partial) < n
            assert len({r["url"] for r in partial}) == len(partial)
        fetched_before = srv.log.count(path_prefix="/p/")
        run = await run_shoal(*args)
        assert run.code == 0, run.stderr
    recs = read_records(tmp_out)
    assert sorted(r["url"] for r in recs) == sorted(urls)  # none lost, none twice
    assert all(r["status"] == 200 for r in recs)
    # the rerun fetched only what was not already recorded (plus what was in flight)
    assert srv.log.count(path_prefix="/p/") - fetched_before <= n - 60 + 16


async def test_sigkill_at_random_moments_never_loses_or_doubles(tmp_path: Path,
                                                                tmp_out: Path) -> None:
    n = 600
    rng = random.Random(7)
    async with site(pages(n, delay=0.02)) as srv:
        urls = [srv.url(f"/p/{i}") for i in range(n)]
        inp = write_urls(tmp_path / "u.txt", urls)
        args = ["fetch", str(inp), "-o", str(tmp_out), "-q", "--concurrency", "16",
                "--per-host", "16"]
        killed = 0
        for _ in range(5):
            proc = await asyncio.create_subprocess_exec(
                *shoal_cmd(*args), stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
            await asyncio.sleep(rng.uniform(0.3, 0.9))
            if proc.returncode is None:
                proc.kill()
                killed += 1
            await proc.wait()
        assert killed >= 3
        run = await run_shoal(*args)
        assert run.code == 0, run.stderr
    recs = read_records(tmp_out)
    assert Counter(r["url"] for r in recs) == Counter(urls)


async def test_second_sigint_stops_at_once_with_state_consistent(tmp_path: Path,
                                                                 tmp_out: Path) -> None:
    n = 100
    async with site(pages(n, delay=20)) as srv:  # requests that would hang for long
        urls = [srv.url(f"/p/{i}") for i in range(n)]
        inp = write_urls(tmp_path / "u.txt", urls)
        args = ["fetch", str(inp), "-o", str(tmp_out), "-q", "--concurrency", "4",
                "--per-host", "4", "--timeout", "60"]
        proc = await _start(args)
        for _ in range(200):
            if srv.log.count(path_prefix="/p/") >= 4:
                break
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 130, err.decode()
        assert "Traceback" not in err.decode()
    assert not tmp_out.exists() or read_records(tmp_out) == []
    assert Path(str(tmp_out) + ".state.db").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_before_the_run_starts_exits_130_without_a_traceback(
        tmp_path: Path, tmp_out: Path, sig: signal.Signals) -> None:
    # A FIFO as input holds shoal in open() until a writer comes: started, run not begun.
    fifo = tmp_path / "urls.fifo"
    os.mkfifo(fifo)
    proc = await _start(["fetch", str(fifo), "-o", str(tmp_out), "-q"])
    wchan = Path(f"/proc/{proc.pid}/wchan")
    try:
        for _ in range(1000):  # 10 s at most
            if wchan.exists() and wchan.read_text() == "wait_for_partner":
                break
            await asyncio.sleep(0.01)
        else:
            pytest.skip("this kernel does not show where a process waits (/proc/PID/wchan)")
        proc.send_signal(sig)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130, err.decode()
    assert "Traceback" not in err.decode()
    assert len(err.decode().strip().splitlines()) == 1, err.decode()


async def test_empty_input_says_there_is_nothing_to_fetch(tmp_path: Path, tmp_out: Path) -> None:
    inp = write_urls(tmp_path / "u.txt", ["# just a comment", "", "   "])
    run = await run_shoal("fetch", str(inp), "-o", str(tmp_out), "-q")
    assert run.code == 0
    assert "the input holds no URLs" in run.stderr
    assert read_records(tmp_out) == []


async def test_invalid_lines_count_as_records_of_the_run(tmp_path: Path, tmp_out: Path) -> None:
    inp = write_urls(tmp_path / "u.txt", ["not a url", "mailto:a@b", "http://"])
    run = await run_shoal("fetch", str(inp), "-o", str(tmp_out), "-q")
    assert run.code == 0, run.stderr
    assert "3 records this run" in run.stderr
    assert "invalid_url 2" in run.stderr and "unsupported_scheme 1" in run.stderr
    assert len(read_records(tmp_out)) == 3


async def test_bare_command_shows_help() -> None:
    run = await run_shoal()
    assert run.code == 0 and "Usage: shoal" in run.stdout and "error" not in run.stderr


async def test_output_or_state_naming_the_input_is_refused(tmp_path: Path) -> None:
    inp = write_urls(tmp_path / "u.txt", ["http://127.0.0.1:9/"])
    for flag in ("-o", "--state"):
        run = await run_shoal("fetch", str(inp), flag, str(inp))
        assert run.code == 2 and "is the input file" in run.stderr
    assert inp.read_text() == "http://127.0.0.1:9/\n"  # untouched


async def test_help_lists_every_command() -> None:
    run = await run_shoal("--help")
    assert run.code == 0
    listed = {line.split()[0] for line in run.stdout.split("Commands:")[1].splitlines()
              if line.strip()}
    assert listed == {"crawl", "demo", "export", "fetch", "serve", "token", "worker"}


@pytest.mark.parametrize("limit_kb", [100, 400])
async def test_a_full_disk_mid_run_is_a_message_and_a_rerun_completes(
        tmp_path: Path, tmp_out: Path, limit_kb: int) -> None:
    """Writes past a file-size limit fail as on a full disk (the state database or the
    output meets it first): one clear line, no traceback, and nothing lost."""
    async with site(pages(2000)) as srv:
        urls = [srv.url(f"/p/{i}") for i in range(2000)]
        inp = write_urls(tmp_path / "urls.txt", urls)
        args = ["fetch", str(inp), "-o", str(tmp_out), "-q", "--concurrency", "50"]
        run = await run_shoal_file_limit(*args, limit_kb=limit_kb)
        message = run.stderr
        assert run.code in (1, 2), message
        assert "Traceback" not in message, message
        assert "shoal: error:" in message and "re-run" in message, message
        assert len(message.strip().splitlines()) == 1, message
        rerun = await run_shoal(*args)
    assert rerun.code == 0, rerun.stderr
    recs = read_records(tmp_out)
    assert sorted(r["url"] for r in recs) == sorted(urls)  # each once, none lost
