"""shoal fetch and crawl with their state in PostgreSQL (--db postgresql://... --job NAME)."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

import shoal
from tests.conftest import postgres_url, read_records, run_shoal, run_shoal_file_limit, write_urls
from tests.servers import html_page, site

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def pg_url() -> str:
    return postgres_url()


@pytest.fixture
async def job(pg_url: str) -> str:  # type: ignore[misc]
    name = "t" + uuid.uuid4().hex[:12]
    yield name
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "shoal_{name}" CASCADE')
    finally:
        await conn.close()


async def test_cli_fetch_keeps_its_state_in_postgres(tmp_path: Path, pg_url: str,
                                                     job: str) -> None:
    async with site({f"/p/{i}": html_page(f"p{i}") for i in range(30)}) as srv:
        inp = write_urls(tmp_path / "u.txt", [srv.url(f"/p/{i}") for i in range(30)])
        out = tmp_path / "out.jsonl"
        args = ["fetch", str(inp), "-o", str(out), "-q", "--db", pg_url, "--job", job]
        run = await run_shoal(*args)
        assert run.code == 0, run.stderr
        assert f"shoal_{job}" in run.stderr  # the summary names where the state is
        again = await run_shoal(*args)
        assert again.code == 0 and "nothing to do" in again.stderr
    recs = read_records(out)
    assert sorted(r["url"] for r in recs) == sorted(srv.url(f"/p/{i}") for i in range(30))
    assert srv.log.count(path_prefix="/p/") == 30
    assert not (tmp_path / "out.jsonl.state.db").exists()  # nothing was kept in SQLite
    # export reads the job back from PostgreSQL: byte for byte the run's output
    exported = tmp_path / "export.jsonl"
    run = await run_shoal("export", pg_url, "--job", job, "-o", str(exported))
    assert run.code == 0 and "exported 30 records" in run.stderr, run.stderr
    assert exported.read_bytes() == out.read_bytes()
    csv_run = await run_shoal("export", pg_url, "--job", job, "--format", "csv")
    assert csv_run.code == 0 and len(csv_run.stdout.splitlines()) == 31
    for args, says in [([], "name the job after"), (["--job", "nojob_here"], "no such job")]:
        bad = await run_shoal("export", pg_url, *args)
        assert bad.code == 2 and says in bad.stderr and "Traceback" not in bad.stderr


async def test_library_crawl_on_postgres(pg_url: str, job: str) -> None:
    routes = {f"/p/{i}": html_page(f"p{i}", [f"/p/{(i + 1) % 20}", f"/p/{(i * 3) % 20}"])
              for i in range(20)}
    async with site(routes) as srv:
        cfg = shoal.Config(robots=False, concurrency=8, per_host=8)
        async with shoal.Crawler(cfg, state=pg_url, job=job) as crawler:
            first = [r async for r in crawler.crawl([srv.url("/p/0")], max_pages=8)]
            more = [r async for r in crawler.crawl([srv.url("/p/0")], max_pages=20)]
    assert len(first) == 8 and len(more) == 12
    assert len({r.url for r in first + more}) == 20


async def test_bad_db_urls_are_usage_errors(tmp_path: Path) -> None:
    inp = write_urls(tmp_path / "u.txt", ["http://127.0.0.1:9/"])
    run = await run_shoal("fetch", str(inp), "--db", "mysql://x/y")
    assert run.code == 2 and "--db 'mysql://x/y'" in run.stderr
    run = await run_shoal("fetch", str(inp), "--db", "x.db", "--state", "y.db")
    assert run.code == 2 and "not both" in run.stderr
    run = await run_shoal("fetch", str(inp), "--db", "postgresql://127.0.0.1:9/none",
                          "--job", "bad name!")
    assert run.code == 2 and "--job" in run.stderr
    run = await run_shoal("fetch", str(inp), "--db", "postgresql://postgres@127.0.0.1:9/none")
    assert run.code == 2 and "Traceback" not in run.stderr  # nothing listens there


async def test_an_output_that_fills_up_mid_run_is_a_message_and_a_rerun_completes(
        tmp_path: Path, pg_url: str, job: str) -> None:
    """With the state in PostgreSQL, only the output file grows here: writes past a
    file-size limit fail as on a full disk, mid-run."""
    async with site({f"/p/{i}": html_page(f"p{i}") for i in range(1500)}) as srv:
        urls = [srv.url(f"/p/{i}") for i in range(1500)]
        inp = write_urls(tmp_path / "u.txt", urls)
        out = tmp_path / "out.jsonl"
        args = ["fetch", str(inp), "-o", str(out), "-q", "--db", pg_url, "--job", job]
        run = await run_shoal_file_limit(*args, limit_kb=200)
        message = run.stderr
        assert run.code == 1, message
        assert message.startswith(f"shoal: error: cannot write output {out}: File too large")
        assert "Traceback" not in message and len(message.strip().splitlines()) == 1, message
        assert "re-run" in message
        assert 0 < out.stat().st_size <= 200 * 1024
        rerun = await run_shoal(*args)
    assert rerun.code == 0, rerun.stderr
    assert sorted(r["url"] for r in read_records(out)) == sorted(urls)
    # what was saved is not fetched again; only what was in flight when it stopped
    assert len(urls) <= srv.log.count(path_prefix="/p/") <= len(urls) + 100

