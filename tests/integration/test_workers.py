"""Many `shoal worker` processes on one job in PostgreSQL: leases, deaths, politeness.

Real PostgreSQL (SHOAL_TEST_POSTGRES_URL; these fail, not skip, under CI), real loopback
servers whose own logs are checked, real `shoal` subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.conftest import postgres_url, read_records, run_shoal, shoal_cmd, write_urls
from tests.servers import RequestLog, html_page, robots_txt, sites, slow

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def pg() -> AsyncIterator[tuple[str, str]]:
    """(URL of a database of its own, a job name): workers join every job in a database,
    so each test gets a new one, dropped afterwards."""
    base = postgres_url()
    name = "shoal_w" + uuid.uuid4().hex[:12]
    parts = urlsplit(base)
    dsn = urlunsplit(parts._replace(path="/" + name))
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield dsn, "w" + uuid.uuid4().hex[:12]
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


class Procs:
    """shoal subprocesses of one test; any still running at the end are killed."""

    def __init__(self, log_dir: Path) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.log_dir = log_dir

    async def start(self, name: str, *args: str) -> asyncio.subprocess.Process:
        err = open(self.log_dir / f"{name}.err", "wb")  # noqa: SIM115 - the child owns it
        try:
            proc = await asyncio.create_subprocess_exec(
                *shoal_cmd(*args), stdout=asyncio.subprocess.DEVNULL, stderr=err,
                env={**os.environ, "COLUMNS": "120"})
        finally:
            err.close()
        self.procs.append(proc)
        return proc

    def stderr(self, name: str) -> str:
        return (self.log_dir / f"{name}.err").read_text()

    async def close(self) -> None:
        for p in self.procs:
            if p.returncode is None:
                p.kill()
            await p.wait()


@contextlib.asynccontextmanager
async def procs(tmp_path: Path) -> AsyncIterator[Procs]:
    ps = Procs(tmp_path)
    try:
        yield ps
    finally:
        await ps.close()


async def query(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def wait_for(dsn: str, sql: str, ok: object = True, *, within: float = 60) -> None:
    """Poll ``sql`` (first column of the first row) until it equals ``ok``, bounded."""
    async with asyncio.timeout(within):
        while True:
            with contextlib.suppress(asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
                rows = await query(dsn, sql)
                if rows and rows[0][0] == ok:
                    return
            await asyncio.sleep(0.1)


def worker_args(dsn: str, name: str, *extra: str) -> list[str]:
    return ["worker", "--db", dsn, "--name", name, "--exit-when-done", *extra]


# lease owners are "<name>:<pid>:<random>"; the submitter's name is the host name
WORKERS = "owner ~ '^w[0-9]-test:'"


async def test_three_workers_one_killed_every_url_has_exactly_one_record(
        tmp_path: Path, pg: tuple[str, str]) -> None:
    dsn, job = pg
    s = f'"shoal_{job}"'
    routes = {f"/p/{i}": slow(0.15, html_page(f"p{i}")) for i in range(25)}
    log = RequestLog()
    async with sites(12, routes, log=log) as srvs, procs(tmp_path) as ps:
        urls = [srv.url(f"/p/{i}") for srv in srvs for i in range(25)]
        inp = write_urls(tmp_path / "urls.txt", urls)
        out = tmp_path / "out.jsonl"
        submit = await ps.start("submit", "fetch", str(inp), "-o", str(out), "-q", "--db", dsn,
                                "--job", job, "--concurrency", "2", "--timeout", "2",
                                "--no-robots")
        await wait_for(dsn, f"SELECT value FROM {s}.meta WHERE key = 'shared'", "1")
        workers = [await ps.start(f"w{n}", *worker_args(dsn, f"w{n}-test", "--concurrency",
                                                        "4", "--lease", "6", "-q"))
                   for n in range(3)]
        # midway: kill the worker holding the most leases on URLs not yet done
        await wait_for(dsn, f"SELECT count(*) >= 60 FROM {s}.urls WHERE state = 2")
        await wait_for(dsn, f"SELECT count(DISTINCT owner) >= 3 FROM {s}.urls "
                            f"WHERE state = 0 AND {WORKERS}")
        held = await query(dsn, f"SELECT owner, count(*) FROM {s}.urls WHERE state = 0 "
                                f"AND {WORKERS} GROUP BY owner ORDER BY 2 DESC")
        victim_owner, victim_held = held[0][0], held[0][1]
        victim = workers[int(victim_owner[1])]
        victim.send_signal(signal.SIGKILL)
        assert await victim.wait() == -signal.SIGKILL
        orphans = [r[0] for r in await query(
            dsn, f"SELECT id FROM {s}.urls WHERE state = 0 AND owner = $1", victim_owner)]
        assert victim_held > 0
        async with asyncio.timeout(120):
            assert await submit.wait() == 0, ps.stderr("submit")
            codes = [await w.wait() for w in workers]
    assert sorted(codes) == sorted([0, 0, -signal.SIGKILL]), [ps.stderr(f"w{n}")
                                                              for n in range(3)]
    records = read_records(out)
    assert sorted(str(r["url"]) for r in records) == sorted(urls)  # each once, none lost
    assert {r["status"] for r in records} == {200}
    rows = await query(dsn, f"SELECT count(*) FILTER (WHERE state = 2), count(*) "
                            f"FROM {s}.urls")
    assert rows[0][0] == rows[0][1] == len(urls)
    # what the dead worker held was taken over and finished by the others
    finished = await query(dsn, f"SELECT state, owner FROM {s}.urls WHERE id = ANY($1)",
                           orphans)
    assert orphans and len(finished) == len(orphans)
    assert all(state == 2 and owner != victim_owner for state, owner in finished)
    for n in range(3):
        for line in ps.stderr(f"w{n}").splitlines():
            assert "Traceback" not in line


async def test_politeness_holds_across_workers(tmp_path: Path, pg: tuple[str, str]) -> None:
    dsn, job = pg
    s = f'"shoal_{job}"'
    per_host, delay = 2, 0.25
    log = RequestLog()
    pages = {f"/p/{i}": slow(0.3, html_page(f"p{i}")) for i in range(16)}
    # the last host asks for more than --delay in robots.txt: every worker must honour it
    routes = [pages, pages, {**pages, "/robots.txt": robots_txt(crawl_delay=0.5)}]
    async with sites(3, routes, log=log) as srvs, procs(tmp_path) as ps:
        urls = [srv.url(f"/p/{i}") for srv in srvs for i in range(16)]
        inp = write_urls(tmp_path / "urls.txt", urls)
        out = tmp_path / "out.jsonl"
        submit = await ps.start("submit", "fetch", str(inp), "-o", str(out), "-q", "--db", dsn,
                                "--job", job, "--concurrency", "1", "--per-host",
                                str(per_host), "--delay", str(delay), "--timeout", "5",
                                "--host-turn", "0.5")
        await wait_for(dsn, f"SELECT value FROM {s}.meta WHERE key = 'shared'", "1")
        workers = [await ps.start(f"w{n}", *worker_args(dsn, f"w{n}-test", "--concurrency",
                                                        "2", "--host-turn", "0.5", "-q"))
                   for n in range(3)]
        async with asyncio.timeout(150):
            assert await submit.wait() == 0, ps.stderr("submit")
            assert [await w.wait() for w in workers] == [0, 0, 0], [
                ps.stderr(f"w{n}") for n in range(3)]
    assert sorted(str(r["url"]) for r in read_records(out)) == sorted(urls)
    for srv in srvs:
        host = srv.netloc
        assert log.max_in_flight(host) <= per_host, host
        gap = 0.5 if srv is srvs[2] else delay
        assert log.min_gap(host) >= gap, (host, log.min_gap(host))
        # fetched once, kept in the database for every later owner
        assert log.count(host, "/robots.txt") == 1, (host, log.starts(host))
    # the hosts really were shared: several processes fetched from each
    owners = await query(dsn, f"SELECT host, count(DISTINCT owner) FROM {s}.urls GROUP BY host")
    assert sum(n >= 2 for _, n in owners) >= 2, owners


async def test_sigterm_returns_the_workers_leases(tmp_path: Path, pg: tuple[str, str]) -> None:
    dsn, job = pg
    s = f'"shoal_{job}"'
    log = RequestLog()
    routes = {f"/p/{i}": slow(0.3, html_page(f"p{i}")) for i in range(8)}
    async with sites(4, routes, log=log) as srvs, procs(tmp_path) as ps:
        urls = [srv.url(f"/p/{i}") for srv in srvs for i in range(8)]
        inp = write_urls(tmp_path / "urls.txt", urls)
        out = tmp_path / "out.jsonl"
        submit = await ps.start("submit", "fetch", str(inp), "-o", str(out), "-q", "--db", dsn,
                                "--job", job, "--concurrency", "2", "--no-robots")
        await wait_for(dsn, f"SELECT value FROM {s}.meta WHERE key = 'shared'", "1")
        worker = await ps.start("w0", "worker", "--db", dsn, "--name", "w0-test",
                                "--concurrency", "8")
        await wait_for(dsn, f"SELECT count(*) > 0 FROM {s}.urls "
                            f"WHERE state = 0 AND {WORKERS}")
        await asyncio.wait_for(log.wait_started(3), 30)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 30) == 130
        # nothing of the job stays with it: URLs back to pending, hosts free
        left = await query(dsn, f"SELECT count(*) FROM {s}.urls WHERE state = 0 "
                                f"AND {WORKERS}")
        owned = await query(dsn, f"SELECT count(*) FROM {s}.hosts WHERE {WORKERS}")
        assert left[0][0] == 0 and owned[0][0] == 0
        assert "returning the rest" in ps.stderr("w0")
        assert await asyncio.wait_for(submit.wait(), 90) == 0, ps.stderr("submit")
    assert sorted(str(r["url"]) for r in read_records(out)) == sorted(urls)


async def test_a_crawl_is_shared_with_workers(tmp_path: Path, pg: tuple[str, str]) -> None:
    dsn, job = pg
    s = f'"shoal_{job}"'
    routes = {f"/p/{i}": slow(0.05, html_page(f"p{i}", [f"/p/{i + 1}", f"/p/{(2 * i) % 30}",
                                                        "http://127.0.0.1:9/elsewhere"]))
              for i in range(30)}
    async with sites(2, routes) as srvs, procs(tmp_path) as ps:
        seeds = [srv.url("/p/0") for srv in srvs]
        out = tmp_path / "out.jsonl"
        submit = await ps.start("submit", "crawl", *seeds, "-o", str(out), "-q", "--db", dsn,
                                "--job", job, "--concurrency", "2", "--no-robots",
                                "--host-turn", "0.5")
        await wait_for(dsn, f"SELECT value FROM {s}.meta WHERE key = 'shared'", "1")
        workers = [await ps.start(f"w{n}", *worker_args(dsn, f"w{n}-test", "--concurrency",
                                                        "2", "--host-turn", "0.5", "-q"))
                   for n in range(2)]
        async with asyncio.timeout(120):
            assert await submit.wait() == 0, ps.stderr("submit")
            assert [await w.wait() for w in workers] == [0, 0]
    records = read_records(out)
    want = sorted(srv.url(f"/p/{i}") for srv in srvs for i in range(31))  # /p/30: a 404
    assert sorted(str(r["url"]) for r in records) == want
    assert all(r["parent"] is not None for r in records if r["depth"] != 0)
    owners = await query(dsn, f"SELECT count(DISTINCT owner) FROM {s}.urls")
    assert owners[0][0] >= 2  # workers fetched part of it


async def test_worker_usage_errors_are_one_line_and_exit_2() -> None:
    for args, says in [
        (["--db", "state.db"], "needs a postgresql:// URL"),
        (["--db", "postgresql://x/y", "--concurrency", "0"], "--concurrency"),
        (["--db", "postgresql://x/y", "--lease", "0"], "--lease"),
        (["--db", "postgresql://x/y", "--host-turn", "0"], "--host-turn"),
        (["--db", "postgresql://postgres@127.0.0.1:9/none"], "cannot connect"),
        ([], "--db"),
    ]:
        run = await run_shoal("worker", *args, "-q", timeout=30)
        assert run.code == 2, (args, run.stderr)
        assert says in run.stderr and "Traceback" not in run.stderr, (args, run.stderr)


async def test_a_worker_with_nothing_to_do_exits_0(pg: tuple[str, str]) -> None:
    dsn, _ = pg
    run = await run_shoal("worker", "--db", dsn, "--exit-when-done", timeout=60)
    assert run.code == 0, run.stderr
    assert "nothing left to do" in run.stderr
