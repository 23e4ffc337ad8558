"""Load on the service while a job fetches: API latency and crawl throughput.

Starts the crawl target and `shoal serve` (with `--allow-net 127.0.0.0/8`) on loopback;
this script is the load generator. Runs the same fetch job again and again: once to warm
up, then alone and loaded in turn, ROUNDS loaded runs each between two unloaded ones. In
a loaded run, WATCHERS clients follow a running job's event stream and a steady RATE API
requests per second are sent (job status, job list, a records page, readiness, metrics).
Each loaded run's throughput is compared with the mean of the unloaded runs either side
of it (other load on the machine drifts, and two unloaded runs in a row differ by up to
25 % here); the median of those ratios is the figure. Reports the API latency (p50/p99)
and the job's throughput with and without the load. Everything is bounded: URL count,
watchers, rate, rounds and a time limit.

The target is nginx serving a one-host farm (``farm.py``, under ``bench/.work``) when
nginx is installed, else the bundled demo site (``--target demo``), which is Python and
so takes CPU from the same cores as the crawl and the service. The load generator is as
lean as wrk: raw keep-alive HTTP/1.1 connections on uvloop, no client library. Each
watcher holds its own connection to the event stream for the whole loaded run and counts
the events it receives (each SSE message ends with a blank line; the first one is parsed
and must be the watched job's); each API request is timed from its write to the last
byte of its response and must answer 200.

Each timed run also reports the CPU seconds (user + system, from ``/proc``) of every
process: the target, the service's API process, the job's process (counted once the
service has reaped it), the idle job the watchers follow, this load generator, and what
the rest of the machine used meanwhile. CPU seconds are steadier than throughput on a
shared machine, and show where the loaded run's CPU goes.

Usage: python bench/serve_load.py [--urls 20000] [--watchers 1000] [--rate 200]
                                   [--rounds 3] [--target auto|nginx|demo] [--port 8188]
                                   [--work-dir DIR] [--max-seconds 300] [--json out.json]
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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import farm  # noqa: E402
import nginx as nginx_mod  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
SCHED_EVERY = 0.05  # seconds between two readings of the job's threads' run and wait times
KEEP_IDLE = 2.0  # seconds an API connection may stay idle before the load generator closes it
FARM_PAGES = 1_000  # one host; URLs /m/<k>/<n>.html are distinct aliases of its pages

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


@contextlib.asynccontextmanager
async def nginx_target(work: Path, port: int, pages: int
                       ) -> AsyncIterator[tuple[list[str], list[int]]]:
    """nginx serving a one-host farm under ``work``: yields the URLs and its pids."""
    root = work / f"serve-farm-1x{FARM_PAGES}"
    if not farm.is_current(root, hosts=1, pages=FARM_PAGES, port=port):
        await asyncio.to_thread(farm.generate, root, hosts=1, pages=FARM_PAGES, port=port,
                                with_1m=False, log=False)
    server = nginx_mod.Nginx(work / f"serve-nginx-{port}", root, port)
    await asyncio.to_thread(server.start)
    try:
        addr = farm.host_address(0)
        urls = [farm.alias_url(addr, port, i // FARM_PAGES, i % FARM_PAGES)
                for i in range(pages)]
        async with aiohttp.ClientSession() as http, http.get(urls[-1]) as resp:
            if resp.status != 200 or b"<title>" not in await resp.read():
                raise RuntimeError(f"nginx on port {port} does not serve the farm")
        yield urls, server.pids()
    finally:
        await asyncio.to_thread(server.stop)


@contextlib.asynccontextmanager
async def demo_target(pages: int) -> AsyncIterator[tuple[list[str], list[int]]]:
    """The bundled demo site (Python) in a process of its own."""
    async with process(sys.executable, "-c", TARGET.format(pages=pages),
                       pattern=r"(http://127\.0\.0\.1:\d+)") as (base, pid):
        yield [f"{base}/page/{i}" for i in range(pages)], [pid]


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


def sched_times(pid: int) -> dict[int, tuple[float, float]]:
    """Each thread of a process: (seconds it ran, seconds it waited, runnable, for a CPU),
    from /proc/<pid>/task/<tid>/schedstat; {} once the process is gone."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ran, waited = (int(x) / 1e9 for x in f.read().split()[:2])
        except (OSError, ValueError):
            continue
        out[int(tid)] = (ran, waited)
    return out


async def watch_sched(pid: int, last: dict[int, tuple[float, float]]) -> None:
    """Keep ``last`` up to date with the job process's threads' run and wait times, every
    SCHED_EVERY seconds, until it exits (the last reading misses at most that long)."""
    while times := await asyncio.to_thread(sched_times, pid):
        last.update(times)
        await asyncio.sleep(SCHED_EVERY)


def sched_summary(pid: int | None, last: dict[int, tuple[float, float]]) -> dict[str, float]:
    """How long the job's threads ran and waited for a CPU; its main thread (the event
    loop) apart."""
    main = last.get(pid or -1, (0.0, 0.0))
    return {"job_ran_s": round(sum(r for r, _ in last.values()), 2),
            "job_waited_for_cpu_s": round(sum(w for _, w in last.values()), 2),
            "job_loop_ran_s": round(main[0], 2),
            "job_loop_waited_for_cpu_s": round(main[1], 2)}


async def run_job(http: aiohttp.ClientSession, api: str, urls: list[str], deadline: float,
                  probe: CpuProbe | None = None) -> tuple[float, dict[str, float]]:
    """Start a fetch job; wait for it (its process reaped); its throughput in records per
    second, and the CPU seconds each process used meanwhile, with how long the job's
    threads waited for a CPU."""
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
    pid: int | None = None
    sched: dict[int, tuple[float, float]] = {}
    async with asyncio.TaskGroup() as tg:
        while True:
            async with http.get(f"{api}/v1/jobs/{job['id']}") as resp:
                state = await resp.json()
            if pid is None and state["pid"] is not None:
                pid = int(state["pid"])
                tg.create_task(watch_sched(pid, sched))
            if state["state"] not in ("queued", "running"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the job did not finish in the time limit")
            await asyncio.sleep(0.2)
    if state["counts"]["done"] != len(urls) or state["errors"]:
        raise RuntimeError(f"the job did not fetch every URL: {state['counts']}, "
                           f"errors {state['errors']}")
    # the engine's own run time: not the queueing before it, nor this loop's polling
    elapsed = state["rates"]["elapsed"] or (time.monotonic() - started)
    cpu = (CpuProbe.delta(before, probe.snapshot(), time.monotonic() - t0)
           | sched_summary(pid, sched) if probe is not None else {})
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


# -- the load: raw HTTP/1.1 on loopback, as lean as wrk ----------------------------------


@dataclass
class Watchers:
    """What the event-stream watchers saw."""

    connected: int = 0
    events: int = 0  # SSE messages received, by all watchers
    failures: int = 0  # a watcher that could not connect, was refused or lost its stream
    ended: int = 0  # streams that the service ended (the watched job was cancelled)
    per_watcher: list[int] = field(default_factory=list)  # events each watcher received
    all_connected: asyncio.Event = field(default_factory=asyncio.Event)


async def watcher(host: str, port: int, job_id: str, n_watchers: int, seen: Watchers,
                  deadline: float) -> None:
    """Follow a job's event stream on a connection of its own until the service ends it;
    count the events (an SSE message ends with a blank line, and the JSON in it has no raw
    newline); the first one must be the job's summary."""
    count = 0
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout_at(deadline):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "Accept: text/event-stream\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 "):
                raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
            seen.connected += 1
            if seen.connected == n_watchers:
                seen.all_connected.set()
            checked = False
            tail = b""
            buffer = b""
            while data := await reader.read(65536):
                if not checked:  # the first event, whole: it is the watched job's summary
                    buffer += data
                    start = buffer.find(b"data: ")
                    end = buffer.find(b"\n", start)
                    if start < 0 or end < 0:
                        continue
                    if json.loads(buffer[start + 6:end])["id"] != job_id:
                        raise ValueError("an event of another job")
                    checked = True
                    data, buffer = buffer, b""
                n = data.count(b"\n\n") + (tail[-1:] == b"\n" and data[:1] == b"\n")
                count += n
                seen.events += n
                tail = (tail + data)[-7:]
                if tail == b"\r\n0\r\n\r\n":  # the last chunk: the service ended the stream
                    seen.ended += 1
                    break
            else:
                raise ConnectionError("the stream closed before its last chunk")
    except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
        seen.failures += 1
    finally:
        seen.per_watcher.append(count)
        if writer is not None:
            writer.close()


class Conn:
    """A keep-alive HTTP/1.1 connection for API requests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = time.monotonic()

    async def get(self, request: bytes) -> tuple[int, int]:
        """Send one GET; (status, body length) once the whole response is read."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
        if m is not None:
            body = await self.reader.readexactly(int(m.group(1)))
        else:  # chunked (no API endpoint here streams, but be correct)
            body = await self.reader.readuntil(b"\r\n0\r\n\r\n")
        return status, len(body)


@dataclass
class ApiLoad:
    """Latencies and failures of the API requests."""

    latencies: list[float] = field(default_factory=list)
    by_path: dict[str, list[float]] = field(default_factory=dict)
    failures: int = 0
    why: dict[str, int] = field(default_factory=dict)  # failures by status or error
    connections: int = 0


async def api_load(host: str, port: int, job_id: str, rate: int, stop: asyncio.Event,
                   out: ApiLoad) -> None:
    """A steady ``rate`` GETs a second, cycling through the paths, each on an idle
    keep-alive connection (a new one when none is idle, as an open-loop client must).
    A connection idle for KEEP_IDLE seconds is closed here, before the service's own
    keep-alive timeout (uvicorn's 5 s) could close it under a request."""
    paths = [f"/v1/jobs/{job_id}", "/v1/jobs?limit=20", f"/v1/jobs/{job_id}/records?limit=50",
             "/readyz", "/metrics"]
    requests = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() for p in paths]
    names = [p.split("?")[0].replace(job_id, "{id}") for p in paths]
    for name in names:
        out.by_path[name] = []
    idle: list[Conn] = []
    interval = 1.0 / rate

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        now = time.monotonic()
        while idle and now - idle[0].used > KEEP_IDLE:  # the least recently used first
            idle.pop(0).writer.close()
        conn = idle.pop() if idle else None
        why = ""
        try:
            if conn is None:
                conn = Conn(*await asyncio.open_connection(host, port))
                out.connections += 1
            status, _ = await conn.get(requests[i])
            why = "" if status == 200 else f"{names[i]}: {status}"
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            why = f"{names[i]}: {type(exc).__name__}"
            if conn is not None:
                conn.writer.close()
                conn = None
        latency = time.perf_counter() - t0
        out.latencies.append(latency)
        out.by_path[names[i]].append(latency)
        if not why and conn is not None:
            conn.used = time.monotonic()
            idle.append(conn)
        else:
            out.failures += 1
            out.why[why] = out.why.get(why, 0) + 1

    try:
        async with asyncio.TaskGroup() as tg:
            start = time.monotonic()
            n = 0
            while not stop.is_set():
                tg.create_task(one(n % len(paths)))
                n += 1
                # a steady schedule: catch up if the loop fell behind, never burst past it
                delay = start + n * interval - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await stop.wait()
    finally:
        for conn in idle:
            conn.writer.close()


def pct(data: list[float], p: float) -> float:
    s = sorted(data)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000 if s else float("nan")


@dataclass
class Loaded:
    """The load of all loaded runs together."""

    api: ApiLoad = field(default_factory=ApiLoad)
    seen: Watchers = field(default_factory=Watchers)
    seconds: float = 0.0  # under load
    events: int = 0  # received while a loaded run went on


async def loaded_run(http: aiohttp.ClientSession, api: str, urls: list[str], deadline: float,
                     probe: CpuProbe, args: argparse.Namespace, out: Loaded
                     ) -> tuple[float, dict[str, float]]:
    """The job once more, while WATCHERS follow a running job's events and RATE API
    requests a second go out; the watchers connect before and leave after the timed run
    (cancelling the watched job ends their streams)."""
    host, _, port_text = api.removeprefix("http://").partition(":")
    port = int(port_text)
    async with http.post(f"{api}/v1/jobs", json={
            "kind": "fetch", "urls": urls[:10], "options": {"delay": 3600}}) as resp:
        watched = (await resp.json())["id"]  # a job that stays running
    probe.watched = await job_pid(http, api, watched, deadline)
    seen = Watchers()
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(args.watchers):
                tg.create_task(watcher(host, port, watched, args.watchers, seen, deadline))
            if args.watchers:
                async with asyncio.timeout(30):
                    await seen.all_connected.wait()
            await asyncio.sleep(1)  # every watcher has had its first event
            load = tg.create_task(api_load(host, port, watched, args.rate, stop, out.api))
            started = time.monotonic()
            events = seen.events
            try:
                rate, cpu = await run_job(http, api, urls, deadline, probe)
            finally:
                stop.set()
            out.seconds += time.monotonic() - started
            out.events += seen.events - events
            await load
            async with http.post(f"{api}/v1/jobs/{watched}/cancel") as resp:
                await resp.read()  # ends the watchers' streams
    finally:
        probe.watched = None
    total = out.seen
    total.connected += seen.connected
    total.events += seen.events
    total.failures += seen.failures
    total.ended += seen.ended
    total.per_watcher += seen.per_watcher
    return rate, cpu


def summed(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(sum(r[k] for r in runs), 2) for k in runs[0]}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    deadline = time.monotonic() + args.max_seconds
    pages = args.urls
    target_kind = args.target
    if target_kind == "auto":
        target_kind = "nginx" if nginx_mod.find_nginx() is not None else "demo"
    alone: list[float] = []
    loaded: list[float] = []
    cpu_alone: list[dict[str, float]] = []
    cpu_loaded: list[dict[str, float]] = []
    load = Loaded()
    with tempfile.TemporaryDirectory(prefix="shoal-serve-load-") as tmp:
        target = (nginx_target(Path(args.work_dir), args.port, pages) if target_kind == "nginx"
                  else demo_target(pages))
        service = process(sys.executable, "-m", "shoal", "serve", "--port", "0", "--db",
                          os.path.join(tmp, "service.db"), "--allow-net", "127.0.0.0/8",
                          pattern=r"serving on (http://127\.0\.0\.1:\d+)/")
        async with target as (urls, target_pids), service as (api, service_pid):
            probe = CpuProbe(target=target_pids, service=service_pid)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                # a whole warm-up run: the target and the service reach a steady state first
                warm, _ = await run_job(http, api, urls, deadline)
                # unloaded and loaded runs in turn: each loaded run is compared with the
                # unloaded runs either side of it (the machine's other load drifts)
                for _ in range(args.rounds):
                    rate, cpu = await run_job(http, api, urls, deadline, probe)
                    print(f"unloaded: {rate:,.0f} records/s", file=sys.stderr)
                    alone.append(rate)
                    cpu_alone.append(cpu)
                    rate, cpu = await loaded_run(http, api, urls, deadline, probe, args, load)
                    print(f"loaded:   {rate:,.0f} records/s", file=sys.stderr)
                    loaded.append(rate)
                    cpu_loaded.append(cpu)
                rate, cpu = await run_job(http, api, urls, deadline, probe)
                print(f"unloaded: {rate:,.0f} records/s", file=sys.stderr)
                alone.append(rate)
                cpu_alone.append(cpu)
    ratios = [round(x / ((a + b) / 2), 3)
              for x, a, b in zip(loaded, alone, alone[1:], strict=False)]
    latencies = load.api.latencies
    seen = load.seen
    return {
        "urls": pages, "watchers": args.watchers, "rate": args.rate, "target": target_kind,
        "rounds": args.rounds, "load_average_1min_at_start": args.load_average,
        "crawl_records_per_s_unloaded": [round(r, 1) for r in alone],
        "crawl_records_per_s_loaded": [round(r, 1) for r in loaded],
        # each loaded run against the mean of the unloaded runs before and after it
        "crawl_loaded_vs_unloaded_by_round": ratios,
        "crawl_loaded_vs_unloaded": round(statistics.median(ratios), 3),
        "api_requests": len(latencies), "api_failures": load.api.failures,
        "api_failures_by_cause": load.api.why,
        "api_connections": load.api.connections,
        "api_rate_achieved": round(len(latencies) / load.seconds, 1),
        "api_p50_ms": round(pct(latencies, 0.50), 2),
        "api_p99_ms": round(pct(latencies, 0.99), 2),
        "api_mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
        "sse_watchers_connected": seen.connected,
        "sse_events_received": seen.events,
        "sse_events_during_loaded_runs": load.events,
        "sse_events_per_watcher_min": min(seen.per_watcher, default=0),
        "sse_streams_ended_by_service": seen.ended, "sse_failures": seen.failures,
        "api_p50_p99_ms_by_path": {p: [round(pct(v, 0.5), 2), round(pct(v, 0.99), 2)]
                                   for p, v in sorted(load.api.by_path.items())},
        "warmup_records_per_s": round(warm, 1),
        # CPU seconds (user + system) of each process, all unloaded and all loaded runs
        "cpu_s": {"unloaded": summed(cpu_alone), "loaded": summed(cpu_loaded)},
        "cpu_s_by_run": {"unloaded": cpu_alone, "loaded": cpu_loaded},
    }


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=20_000)
    parser.add_argument("--watchers", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--target", choices=["auto", "nginx", "demo"], default="auto",
                        help="the crawl target: nginx (a static farm) when installed, else "
                             "the demo site")
    parser.add_argument("--port", type=int, default=8188, help="nginx's port")
    parser.add_argument("--work-dir", default=str(BENCH / ".work"),
                        help="where nginx's farm, config and logs live")
    parser.add_argument("--rounds", type=int, default=3,
                        help="loaded runs, each between two unloaded runs")
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--json", default=None)
    ns = parser.parse_args()
    if not (10 <= ns.urls <= 1_000_000 and 0 <= ns.watchers <= 5_000
            and 1 <= ns.rate <= 2_000 and 0 < ns.max_seconds <= 3_600
            and 1024 <= ns.port <= 65535 and 1 <= ns.rounds <= 20):
        parser.error("out of bounds: --urls 10..1e6, --watchers 0..5000, --rate 1..2000, "
                     "--max-seconds up to 3600, --port 1024..65535, --rounds 1..20")
    if ns.target == "nginx" and nginx_mod.find_nginx() is None:
        parser.error("--target nginx: nginx is not installed (apt-get install -y nginx)")
    ns.load_average = round(os.getloadavg()[0], 2)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        result = runner.run(main(ns))
    text = json.dumps(result, indent=2)
    print(text)
    if ns.json:
        with open(ns.json, "w") as fh:
            fh.write(text + "\n")
