"""Load on the service while a job fetches: API latency and crawl throughput.

Starts three processes on loopback only: the demo site (the crawl target), `shoal serve`
(with `--allow-net 127.0.0.0/8`) and this script as the load generator. Runs the same
fetch job four times: to warm up, alone, then while WATCHERS clients follow a running
job's event stream and a steady RATE API requests per second are sent (job status, job
list, a records page, readiness, metrics), then alone again (the mean of the two
unloaded runs is the reference: other load on the machine drifts). Reports the API
latency (p50/p99) and the job's throughput with and without the load. Everything is
bounded: URL count, watchers, rate and a time limit.

Each timed run also reports the CPU seconds (user + system, from ``/proc``) of every
process: the target, the service's API process, the job's process (counted once the
service has reaped it), the idle job the watchers follow, this load generator, and what
the rest of the machine used meanwhile. CPU seconds are steadier than throughput on a
shared machine, and show where the loaded run's CPU goes.

Usage: python bench/serve_load.py [--urls 20000] [--watchers 1000] [--rate 200]
                                   [--max-seconds 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

TICK = os.sysconf("SC_CLK_TCK")

TARGET = """
import asyncio, sys
from shoal.demo.site import serve_demo
async def main():
    async with serve_demo(pages={pages}) as base:
        print(base, flush=True)
        await asyncio.get_running_loop().create_future()
asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def process(*args: str, pattern: str) -> AsyncIterator[tuple[str, int]]:
    """Start a process; yield the first match of ``pattern`` on its output lines, and its
    process id."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"{args[:3]} exited before it was ready")
                m = re.search(pattern, line)
                if m:
                    break
        yield m.group(1), proc.pid
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def proc_cpu(pid: int) -> tuple[float, float]:
    """(its own CPU seconds, those of its children it has reaped): user + system."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0, 0.0
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / TICK


class CpuProbe:
    """CPU seconds of each process of the benchmark, read before and after a timed run."""

    def __init__(self, *, target: list[int], service: int) -> None:
        self.target = target
        self.service = service
        self.watched: int | None = None  # the idle job's process, while it runs

    def snapshot(self) -> dict[str, float]:
        own, reaped = proc_cpu(self.service)
        return {
            "target": sum(proc_cpu(p)[0] for p in self.target),
            "service_api": own,
            # every job's process is the service's child: its time lands here once reaped
            "job_processes": reaped,
            "watched_job": proc_cpu(self.watched)[0] if self.watched else 0.0,
            "load_generator": proc_cpu(os.getpid())[0],
            "machine": machine_busy(),
        }

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float], wall: float
              ) -> dict[str, float]:
        out = {k: round(after[k] - before[k], 2) for k in before}
        machine = out.pop("machine")
        out["others"] = round(machine - sum(out.values()), 2)
        out["wall"] = round(wall, 2)
        return out


async def run_job(http: aiohttp.ClientSession, api: str, urls: list[str], deadline: float,
                  probe: CpuProbe | None = None) -> tuple[float, dict[str, float]]:
    """Start a fetch job; wait for it (its process reaped); its throughput in records per
    second, and the CPU seconds each process used meanwhile."""
    before = probe.snapshot() if probe is not None else {}
    t0 = time.monotonic()
    body = "".join(u + "\n" for u in urls).encode()
    options = {"concurrency": 100, "per_host": 100, "no_robots": "true", "retries": 0,
               "timeout": 10}
    async with http.post(f"{api}/v1/jobs/upload", params=options, data=body,
                         headers={"Content-Type": "text/plain"}) as resp:
        assert resp.status == 201, await resp.text()
        job = await resp.json()
    started = time.monotonic()
    while True:
        async with http.get(f"{api}/v1/jobs/{job['id']}") as resp:
            state = await resp.json()
        if state["state"] not in ("queued", "running"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError("the job did not finish in the time limit")
        await asyncio.sleep(0.2)
    # the engine's own run time: not the queueing before it, nor this loop's polling
    elapsed = state["rates"]["elapsed"] or (time.monotonic() - started)
    cpu = (CpuProbe.delta(before, probe.snapshot(), time.monotonic() - t0)
           if probe is not None else {})
    return state["counts"]["done"] / elapsed, cpu


async def job_pid(http: aiohttp.ClientSession, api: str, job_id: str, deadline: float
                  ) -> int:
    """The process id of a running job, once it has one."""
    while True:
        async with http.get(f"{api}/v1/jobs/{job_id}") as resp:
            pid = (await resp.json())["pid"]
        if pid is not None:
            return int(pid)
        if time.monotonic() > deadline:
            raise TimeoutError("the watched job did not start in the time limit")
        await asyncio.sleep(0.1)


async def watcher(http: aiohttp.ClientSession, api: str, job_id: str, stop: asyncio.Event,
                  counts: list[int]) -> None:
    try:
        async with http.get(f"{api}/v1/jobs/{job_id}/events") as resp:
            async for line in resp.content:
                if line.startswith(b"data: "):
                    counts[0] += 1
                if stop.is_set():
                    return
    except (TimeoutError, aiohttp.ClientError):
        counts[1] += 1


async def api_load(http: aiohttp.ClientSession, api: str, job_id: str, rate: int,
                   stop: asyncio.Event, latencies: list[float], failures: list[int],
                   by_path: dict[str, list[float]]) -> None:
    paths = [f"/v1/jobs/{job_id}", "/v1/jobs?limit=20", f"/v1/jobs/{job_id}/records?limit=50",
             "/readyz", "/metrics"]
    interval = 1.0 / rate

    async def one(path: str) -> None:
        t0 = time.perf_counter()
        try:
            async with http.get(api + path) as resp:
                await resp.read()
                ok = resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            ok = False
        latencies.append(time.perf_counter() - t0)
        by_path.setdefault(path.split("?")[0].replace(job_id, "{id}"), []).append(
            latencies[-1])
        if not ok:
            failures[0] += 1

    async with asyncio.TaskGroup() as tg:
        start = time.monotonic()
        n = 0
        while not stop.is_set():
            tg.create_task(one(paths[n % len(paths)]))
            n += 1
            # a steady schedule: catch up if the loop fell behind, never burst past it
            delay = start + n * interval - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()


def pct(data: list[float], p: float) -> float:
    s = sorted(data)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000 if s else float("nan")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    deadline = time.monotonic() + args.max_seconds
    pages = args.urls
    with tempfile.TemporaryDirectory(prefix="shoal-serve-load-") as tmp:
        target = process(sys.executable, "-c", TARGET.format(pages=pages),
                         pattern=r"(http://127\.0\.0\.1:\d+)")
        service = process(sys.executable, "-m", "shoal", "serve", "--port", "0", "--db",
                          os.path.join(tmp, "service.db"), "--allow-net", "127.0.0.0/8",
                          pattern=r"serving on (http://127\.0\.0\.1:\d+)/")
        async with target as (base, target_pid), service as (api, service_pid):
            probe = CpuProbe(target=[target_pid], service=service_pid)
            urls = [f"{base}/page/{i}" for i in range(pages)]
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
                # a whole warm-up run: the target and the service reach a steady state first
                warm, _ = await run_job(http, api, urls, deadline)
                alone, cpu_alone = await run_job(http, api, urls, deadline, probe)
                print(f"unloaded: {alone:,.0f} records/s", file=sys.stderr)

                stop = asyncio.Event()
                latencies: list[float] = []
                by_path: dict[str, list[float]] = {}
                failures = [0]
                events = [0, 0]
                async with http.post(f"{api}/v1/jobs", json={
                        "kind": "fetch", "urls": urls[:10], "options": {"delay": 3600}}
                                     ) as resp:
                    watched = (await resp.json())["id"]  # a job that stays running
                probe.watched = await job_pid(http, api, watched, deadline)
                async with asyncio.TaskGroup() as tg:
                    for _ in range(args.watchers):
                        tg.create_task(watcher(http, api, watched, stop, events))
                    await asyncio.sleep(2)  # let the watchers connect
                    load = tg.create_task(api_load(http, api, watched, args.rate, stop,
                                                   latencies, failures, by_path))
                    started = time.monotonic()
                    try:
                        loaded, cpu_loaded = await run_job(http, api, urls, deadline, probe)
                    finally:
                        stop.set()
                    measured = time.monotonic() - started
                    await load
                    async with http.post(f"{api}/v1/jobs/{watched}/cancel") as resp:
                        await resp.read()  # ends the watchers' streams
                probe.watched = None
                print(f"loaded:   {loaded:,.0f} records/s", file=sys.stderr)
                # unloaded once more: the machine's other load drifts, so bracket the run
                alone_after, cpu_after = await run_job(http, api, urls, deadline, probe)
                print(f"unloaded: {alone_after:,.0f} records/s", file=sys.stderr)
    return {
        "urls": pages, "watchers": args.watchers, "rate": args.rate,
        "load_average_1min_at_start": args.load_average,
        "crawl_records_per_s_unloaded": [round(alone, 1), round(alone_after, 1)],
        "crawl_records_per_s_loaded": round(loaded, 1),
        "crawl_loaded_vs_unloaded": round(loaded / ((alone + alone_after) / 2), 3),
        "api_requests": len(latencies), "api_failures": failures[0],
        "api_rate_achieved": round(len(latencies) / measured, 1),
        "api_p50_ms": round(pct(latencies, 0.50), 2),
        "api_p99_ms": round(pct(latencies, 0.99), 2),
        "api_mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
        "sse_events_received": events[0], "sse_failures": events[1],
        "api_p50_p99_ms_by_path": {p: [round(pct(v, 0.5), 2), round(pct(v, 0.99), 2)]
                                   for p, v in sorted(by_path.items())},
        "warmup_records_per_s": round(warm, 1),
        # CPU seconds (user + system) of each process during each timed run
        "cpu_s": {"unloaded": cpu_alone, "loaded": cpu_loaded, "unloaded_after": cpu_after},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=20_000)
    parser.add_argument("--watchers", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--json", default=None)
    ns = parser.parse_args()
    if not (10 <= ns.urls <= 1_000_000 and 0 <= ns.watchers <= 5_000
            and 1 <= ns.rate <= 2_000 and 0 < ns.max_seconds <= 3_600):
        parser.error("out of bounds: --urls 10..1e6, --watchers 0..5000, --rate 1..2000, "
                     "--max-seconds up to 3600")
    ns.load_average = round(os.getloadavg()[0], 2)
    result = asyncio.run(main(ns))
    text = json.dumps(result, indent=2)
    print(text)
    if ns.json:
        with open(ns.json, "w") as fh:
            fh.write(text + "\n")
