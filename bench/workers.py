"""Scale-out on one machine: shoal with its state in SQLite (one process) next to
PostgreSQL with 1, 2 and 4 processes on one job, and the claim rate of the PostgreSQL
frontier with its query plans and index sizes.

Everything stays on loopback: the farm (``farm.py``) is served by nginx (``nginx.py``) or,
without nginx, by ``server.py``; every run is bounded by ``--timeout``. The processes of a
PostgreSQL run are the submitting ``shoal fetch`` plus N-1 ``shoal worker``.

Usage:
    python bench/workers.py --dsn postgresql://postgres@127.0.0.1/shoal_bench
        [--hosts 50] [--pages 400] [--procs 1,2,4] [--claimers 1,2,4] [--repeat 1]

Writes ``bench/results/workers.md`` and ``workers.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO / "src")]

import farm as farm_mod  # noqa: E402
import nginx as nginx_mod  # noqa: E402

from shoal.store.base import HostState, NewUrl  # noqa: E402
from shoal.store.pg_leases import CLAIM_URLS  # noqa: E402
from shoal.store.postgres import PostgresStore  # noqa: E402

SHOAL = [sys.executable, "-m", "shoal"]


def sh(cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=True, **kw)


def wait_all(procs: list[subprocess.Popen[bytes]], deadline: float) -> list[int]:
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            codes.append(p.wait())
    return codes


def count_unique(out: Path) -> tuple[int, int]:
    urls = [json.loads(line)["url"] for line in out.read_bytes().splitlines()]
    return len(urls), len(set(urls))


async def drop_job(dsn: str, job: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "shoal_{job}" CASCADE')
    finally:
        await conn.close()


async def job_exists(dsn: str, job: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval(
            "SELECT to_regclass($1) IS NOT NULL", f'"shoal_{job}".meta')) and bool(
            await conn.fetchval(f'SELECT count(*) FROM "shoal_{job}".meta WHERE key = $1',
                                "shared"))
    finally:
        await conn.close()


def fetch_run(args: argparse.Namespace, urls: Path, work: Path, procs: int | None
              ) -> dict[str, Any]:
    """One timed run: SQLite (procs None) or PostgreSQL with ``procs`` processes."""
    out = work / f"out-{procs or 'sqlite'}.jsonl"
    for p in (out, Path(str(out) + ".state.db")):
        p.unlink(missing_ok=True)
    flags = ["-q", "--concurrency", str(args.concurrency), "--per-host", str(args.per_host)]
    started = time.monotonic()
    deadline = started + args.timeout
    if procs is None:
        submit = sh([*SHOAL, "fetch", str(urls), "-o", str(out), *flags])
        codes = wait_all([submit], deadline)
    else:
        job = f"bench{procs}"
        asyncio.run(drop_job(args.dsn, job))
        started = time.monotonic()
        submit = sh([*SHOAL, "fetch", str(urls), "-o", str(out), "--db", args.dsn, "--job", job,
                     *flags])
        while not asyncio.run(job_exists(args.dsn, job)):
            if time.monotonic() > deadline or submit.poll() is not None:
                break
            time.sleep(0.05)
        workers = [sh([*SHOAL, "worker", "--db", args.dsn, "--exit-when-done", "-q",
                       "--concurrency", str(args.concurrency), "--name", f"b{i}"])
                   for i in range(procs - 1)]
        codes = wait_all([submit, *workers], deadline)
    elapsed = time.monotonic() - started
    lines, unique = count_unique(out) if out.exists() else (0, 0)
    return {"backend": "sqlite" if procs is None else "postgresql", "processes": procs or 1,
            "seconds": round(elapsed, 2), "records": lines, "unique": unique,
            "pages_per_s": round(unique / elapsed, 1), "codes": codes}


# ------------------------------------------------------------------------ claim rate


async def fill(dsn: str, job: str, hosts: int, per_host: int) -> PostgresStore:
    await drop_job(dsn, job)
    store = PostgresStore(dsn, name=job, pool_size=2)
    await store.open()
    batch: list[NewUrl] = []
    for n in range(per_host):
        for h in range(hosts):
            key = f"http://h{h}.bench.test"
            batch.append(NewUrl(f"{key}/p/{n}", key))
        if len(batch) >= 50_000:
            await store.add(batch)
            batch = []
    if batch:
        await store.add(batch)
    return store


async def claimer(dsn: str, job: str, name: str, until: float, target: int, want: int,
                  counts: list[int], latencies: list[float], commits: list[float]) -> None:
    store = PostgresStore(dsn, name=job, pool_size=2)
    await store.open()
    store.start_leases(name, 60.0)
    owned: set[str] = set()
    try:
        while time.monotonic() < until:
            t0 = time.monotonic()
            got = await store.claim({k: want for k in owned},
                                    new_hosts=max(0, target - len(owned)), default=want)
            owned |= {h.key for h in got.hosts}
            if got.rows:
                t1 = time.monotonic()
                latencies.append(t1 - t0)
                await store.complete([(r.id, b'{"url":"%s"}\n' % r.url.encode())
                                      for r in got.rows])
                commits.append(time.monotonic() - t1)
                counts.append(len(got.rows))
            if got.short:
                await store.release_hosts([HostState(k) for k in got.short])
                owned -= got.short
            if not got.rows and not got.hosts and not await store.has_pending():
                return
    finally:
        await store.close()


async def wal_lsn(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))
    finally:
        await conn.close()


async def claim_rate(args: argparse.Namespace, claimers: int) -> dict[str, Any]:
    job = f"claims{claimers}"
    wal0 = await wal_lsn(args.dsn)
    store = await fill(args.dsn, job, args.claim_hosts, args.claim_urls // args.claim_hosts)
    await store.close()
    wal1 = await wal_lsn(args.dsn)
    counts: list[int] = []
    lat: list[float] = []
    commits: list[float] = []
    t0 = time.monotonic()
    until = t0 + args.claim_seconds
    await asyncio.gather(*(claimer(args.dsn, job, f"c{i}", until, 50, args.claim_batch,
                                   counts, lat, commits) for i in range(claimers)))
    elapsed = time.monotonic() - t0
    wal2 = await wal_lsn(args.dsn)
    lat.sort()
    done = max(1, sum(counts))
    return {"wal_add_per_url": round((wal1 - wal0) / args.claim_urls),
            "wal_claim_complete_per_url": round((wal2 - wal1) / done),
            "records_per_s_in_commits": round(done / max(sum(commits), 1e-9)),
            "claimers": claimers, "seconds": round(elapsed, 2), "urls": sum(counts),
            "urls_per_s": round(sum(counts) / elapsed), "claims": len(lat),
            "claim_ms_p50": round(1000 * lat[len(lat) // 2], 2) if lat else None,
            "claim_ms_p99": round(1000 * lat[int(len(lat) * 0.99)], 2) if lat else None}


async def plans(args: argparse.Namespace) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the claim statements on a filled job, and its sizes."""
    job = "plans"
    n = args.plan_urls
    store = await fill(args.dsn, job, args.plan_hosts, n // args.plan_hosts)
    store.start_leases("explain", 60.0)
    half = await store.claim({}, new_hosts=args.plan_hosts // 2, default=n)  # half done
    await store.complete([(r.id, b"{}\n") for r in half.rows])
    await store.release_hosts([HostState(h.key) for h in half.hosts])
    owned = await store.claim({}, new_hosts=20, default=0)  # hold 20 hosts, no URLs yet
    s = f'"shoal_{job}"'
    keys = sorted(h.key for h in owned.hosts)
    conn = await asyncpg.connect(args.dsn)
    out: dict[str, Any] = {"urls": n, "hosts": args.plan_hosts}
    try:
        await conn.execute(f"ANALYZE {s}.urls; ANALYZE {s}.hosts")
        tx = conn.transaction()
        await tx.start()
        claim = CLAIM_URLS.replace("{s}", s)
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + claim, keys,
                                [64] * len(keys), "explain")
        out["claim_urls"] = [r[0] for r in rows]
        pick = (f"SELECT host FROM {s}.hosts WHERE pending AND (owner IS NULL OR "
                "lease_until < clock_timestamp()) AND host <> ALL($1::text[]) "
                "ORDER BY turn_at, host LIMIT 50 FOR UPDATE SKIP LOCKED")
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + pick, [])
        out["acquire_hosts"] = [r[0] for r in rows]
        await tx.rollback()
        sizes = await conn.fetch(
            "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 "
            "AND c.relkind IN ('r', 'i') ORDER BY 2 DESC", f"shoal_{job}")
        out["sizes"] = {r[0]: r[1] for r in sizes}
    finally:
        await conn.close()
        await store.close()
    return out


# ------------------------------------------------------------------------ report


def report(res: dict[str, Any]) -> str:
    lines = ["# Scale-out on one machine", "",
             f"Measured {res['when']} on {os.cpu_count()} cores shared with other work "
             "(the load average is in `workers.json`): the figures are noisy; compare them "
             "with each other, not with other machines.", "",
             f"## Fetch {res['urls']:,} URLs ({res['hosts']} hosts, server: {res['server']}, "
             f"--concurrency {res['concurrency']} per process, --per-host {res['per_host']})",
             "", "| state | processes | seconds | pages/s | records | unique |",
             "|---|---|---|---|---|---|"]
    for r in res["fetch"]:
        lines.append(f"| {r['backend']} | {r['processes']} | {r['seconds']} | "
                     f"{r['pages_per_s']:,} | {r['records']:,} | {r['unique']:,} |")
    lines += ["", f"## Claim rate of the frontier ({res['claim_urls']:,} URLs over "
              f"{res['claim_hosts']:,} hosts; claim + complete, no HTTP)", "",
              "| claimers | URLs/s | claims (with URLs) | claim p50 ms | claim p99 ms "
              "| WAL bytes/URL: add | WAL bytes/URL: claim + complete "
              "| records/s inside commits |",
              "|---|---|---|---|---|---|---|---|"]
    for r in res["claims"]:
        lines.append(f"| {r['claimers']} | {r['urls_per_s']:,} | {r['claims']:,} | "
                     f"{r['claim_ms_p50']} | {r['claim_ms_p99']} | "
                     f"{r.get('wal_add_per_url', '-')} | "
                     f"{r.get('wal_claim_complete_per_url', '-')} | "
                     f"{r.get('records_per_s_in_commits', '-'):,} |")
    p = res["plans"]
    lines += ["", f"## Query plans ({p['urls']:,} URLs, {p['hosts']:,} hosts, half done)", "",
              "Leasing URLs of 20 owned hosts (`CLAIM_URLS`):", "", "```",
              *p["claim_urls"], "```", "", "Acquiring free hosts:", "", "```",
              *p["acquire_hosts"], "```", "", "## Sizes", "",
              "| relation | bytes | bytes per URL |", "|---|---|---|"]
    for name, size in p["sizes"].items():
        lines.append(f"| {name} | {size:,} | {size / p['urls']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--pages", type=int, default=400)
    ap.add_argument("--port", type=int, default=8089)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--per-host", type=int, default=4)
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--claimers", default="1,2,4")
    ap.add_argument("--claim-urls", type=int, default=400_000)
    ap.add_argument("--claim-hosts", type=int, default=2_000)
    ap.add_argument("--claim-batch", type=int, default=64)
    ap.add_argument("--claim-seconds", type=float, default=20)
    ap.add_argument("--plan-urls", type=int, default=1_000_000)
    ap.add_argument("--plan-hosts", type=int, default=10_000)
    ap.add_argument("--no-fetch", action="store_true",
                    help="measure the frontier only; keep the fetch figures already in "
                         "--results-dir/workers.json")
    ap.add_argument("--work-dir", type=Path, default=HERE / ".work" / "workers")
    ap.add_argument("--results-dir", type=Path, default=HERE / "results")
    args = ap.parse_args()

    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    if args.no_fetch:
        res = json.loads((args.results_dir / "workers.json").read_text())
        res["claims"] = []
        return measure_frontier(args, res)
    farm_dir = work / f"farm-{args.hosts}x{args.pages}-{args.port}"
    if not (farm_dir / "truth.json").exists():
        farm_mod.generate(farm_dir, hosts=args.hosts, pages=args.pages, port=args.port,
                          with_1m=False)
    urls = farm_dir / "urls-all.txt"
    server: Any
    if nginx_mod.find_nginx():
        server = nginx_mod.Nginx(work / "nginx", farm_dir, args.port)
        server.start()
        server_name = "nginx"
    else:
        server = sh([sys.executable, str(HERE / "server.py"), str(farm_dir), "--port",
                     str(args.port)])
        time.sleep(2)
        server_name = "bench/server.py"
    res: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "urls": args.hosts * args.pages, "hosts": args.hosts,
                           "server": server_name, "concurrency": args.concurrency,
                           "per_host": args.per_host, "load_before": os.getloadavg(),
                           "fetch": [], "claims": []}
    try:
        for _ in range(args.repeat):
            for procs in [None, *[int(p) for p in args.procs.split(",")]]:
                r = fetch_run(args, urls, work, procs)
                print(json.dumps(r), flush=True)
                res["fetch"].append(r)
    finally:
        if server_name == "nginx":
            server.stop()
        else:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()
    return measure_frontier(args, res)


def measure_frontier(args: argparse.Namespace, res: dict[str, Any]) -> int:
    work = args.work_dir
    res["claim_urls"], res["claim_hosts"] = args.claim_urls, args.claim_hosts
    for k in [int(c) for c in args.claimers.split(",")]:
        r = asyncio.run(claim_rate(args, k))
        print(json.dumps(r), flush=True)
        res["claims"].append(r)
    res["plans"] = asyncio.run(plans(args))
    res["load_after"] = os.getloadavg()
    for job in ["plans", *[f"claims{c}" for c in args.claimers.split(",")],
                *[f"bench{p}" for p in args.procs.split(",")]]:
        asyncio.run(drop_job(args.dsn, job))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "workers.json").write_text(json.dumps(res, indent=1))
    (args.results_dir / "workers.md").write_text(report(res))
    print(report(res))
    shutil.rmtree(work / "nginx", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
