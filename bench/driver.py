"""The benchmark driver behind ``bench/run``: set up, serve the farm, run every tool, report.

Standard library only (any Python 3.11+). Steps, each skipped when already done:

1. setup: uv, the project's environment (``uv sync --frozen``), the peers' virtual
   environment (``bench/.work/peers-venv`` from ``requirements-peers.txt``), nginx from
   the system packages (apt-get when missing);
2. the farm (``farm.py``) under the work dir, regenerated only when its parameters change;
3. the server: nginx (default) or the aiohttp one (``--server python``), checked on every
   host against the ground truth before anything is measured;
4. for each workload, each repeat, each tool (serially): run it with a hard timeout,
   measure it (``measure.py``), verify its output (``verify.py``), and for the polite
   workload analyse nginx's access log; results.json is rewritten after every run;
5. results.md (``report.py``) and results.png (``chart.py``, in the peers' venv).

Every request goes to 127.0.0.0/8. Every run stops at ``--timeout``; the whole suite stops
at ``--max-hours``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import farm  # noqa: E402
import measure  # noqa: E402
import nginx as nginx_mod  # noqa: E402
import report  # noqa: E402
import verify  # noqa: E402

REPO = BENCH.parent
TOOLS = ["shoal", "shoal-w2", "plain", "scrapy", "crawlee"]
SHOAL_TOOLS = {"shoal": [], "shoal-w2": ["--workers", "2"]}  # tool -> extra flags
PEER_SCRIPTS = {"plain": "plain.py", "scrapy": "scrapy_peer.py", "crawlee": "crawlee_peer.py"}
PEER_PACKAGES = ["scrapy", "twisted", "crawlee", "impit", "aiohttp", "uvloop", "selectolax",
                 "matplotlib"]
CONCURRENCY = 100
LAG_RE = re.compile(r"loop lag:\s+p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms")


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # fetch | crawl
    title: str
    per_host: int
    delay: float = 0.0
    full_list: str | None = None  # farm file for fetch
    quick_list: str | None = None
    full_seed: str | None = None  # farm seed name for crawl
    quick_seed: str | None = None


WORKLOADS = {
    "fetch100k": Workload("fetch100k", "fetch", "fetch every page of the farm once",
                          per_host=100, full_list="urls-all.txt", quick_list="urls-small.txt"),
    "fetch1m": Workload("fetch1m", "fetch",
                        "memory: ten times the fetch list (distinct URLs, same pages)",
                        per_host=100, full_list="urls-alias.txt", quick_list="urls-all.txt"),
    "crawl50k": Workload("crawl50k", "crawl", "crawl from one seed, following links, until "
                         "the reachable set is done", per_host=100, full_seed="crawl",
                         quick_seed="small"),
    "polite": Workload("polite", "fetch", "polite fetch: per host at most 2 in flight and "
                       "starts 50 ms apart", per_host=2, delay=0.05, full_list="urls-all.txt",
                       quick_list="urls-small.txt"),
}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work_dir.resolve()
        self.results: Path = args.results_dir.resolve()
        self.farm_dir = self.work / f"farm-{args.hosts}x{args.pages}"
        self.peers_venv = self.work / "peers-venv"
        self.peers_python = self.peers_venv / "bin" / "python"
        self.shoal = Path(args.shoal_bin) if args.shoal_bin else REPO / ".venv" / "bin" / "shoal"
        self.server: nginx_mod.Nginx | None = None
        self.pyserver: subprocess.Popen[bytes] | None = None
        self.truth: farm.Truth | None = None
        self.runs: list[dict[str, Any]] = []
        self.meta: dict[str, Any] = {}

    # ---------------------------------------------------------------- setup

    def log(self, msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def uv(self) -> list[str]:
        exe = shutil.which("uv")
        if exe:
            return [exe]
        probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True)
        if probe.returncode != 0:
            self.log("installing uv with pip (as the project README does)")
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "uv"], check=True)
        return [sys.executable, "-m", "uv"]

    def setup(self) -> None:
        a = self.args
        if set(a.tools) & set(SHOAL_TOOLS) and not a.shoal_bin:
            self.log("project environment: uv sync --frozen")
            subprocess.run([*self.uv(), "sync", "--frozen", "--project", str(REPO)],
                           check=True, cwd=REPO)
        if set(a.tools) - set(SHOAL_TOOLS) or a.chart:
            self.ensure_peers()
        if a.server == "nginx" and nginx_mod.find_nginx() is None:
            self.install_nginx()

    def ensure_peers(self) -> None:
        req = BENCH / "requirements-peers.txt"
        stamp = self.peers_venv / ".requirements.sha256"
        digest = hashlib.sha256(req.read_bytes()).hexdigest()
        if self.peers_python.exists() and stamp.exists() and stamp.read_text() == digest:
            return
        project_python = REPO / ".venv" / "bin" / "python"
        py = str(project_python) if project_python.exists() else sys.executable
        self.log(f"peers venv: {self.peers_venv} (Python of {py})")
        uv = self.uv()
        subprocess.run([*uv, "venv", "--quiet", "--clear", "--python", py,
                        str(self.peers_venv)], check=True)
        subprocess.run([*uv, "pip", "install", "--quiet", "--python", str(self.peers_python),
                        "-r", str(req)], check=True)
        stamp.write_text(digest)

    def install_nginx(self) -> None:
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", "nginx"]
        prefix: list[str] = []
        if os.geteuid() != 0:
            if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"]).returncode == 0:
                prefix = ["sudo", "-n"]
            else:
                raise SystemExit("nginx is missing: run `apt-get install -y nginx` as root, "
                                 "or use --server python (slower; not for throughput figures)")
        self.log("installing nginx from the system packages")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*prefix, "apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run([*prefix, *cmd], check=True, env=env)

    # ---------------------------------------------------------------- farm and server

    def ensure_farm(self) -> None:
        a = self.args
        if not farm.is_current(self.farm_dir, hosts=a.hosts, pages=a.pages, port=a.port):
            self.log(f"generating the farm in {self.farm_dir} ({a.hosts} hosts x {a.pages} "
                     "pages)")
            farm.generate(self.farm_dir, hosts=a.hosts, pages=a.pages, port=a.port)
        self.truth = farm.Truth(self.farm_dir)

    def start_server(self) -> None:
        a = self.args
        if a.server == "nginx":
            self.server = nginx_mod.Nginx(self.work / "nginx", self.farm_dir, a.port)
            self.server.start()
        else:
            py = self.server_python()
            with open(self.work / "pyserver.log", "wb") as logf:
                self.pyserver = subprocess.Popen(
                    [py, str(BENCH / "server.py"), str(self.farm_dir), "--port", str(a.port)],
                    stdout=subprocess.PIPE, stderr=logf, start_new_session=True)
            assert self.pyserver.stdout is not None
            line = self.pyserver.stdout.readline()
            if line.strip() != b"ready":
                self.stop_server()
                raise SystemExit(f"the Python server did not start: see {self.work}/pyserver.log")
        self.check_server()

    def server_python(self) -> str:
        for p in (self.peers_python, REPO / ".venv" / "bin" / "python"):
            if p.exists():
                return str(p)
        return sys.executable

    def server_pids(self) -> list[int]:
        if self.server is not None:
            return self.server.pids()
        return [self.pyserver.pid] if self.pyserver is not None else []

    def check_server(self) -> None:
        """Every host answers robots.txt and a page with the farm's own content."""
        assert self.truth is not None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for addr in self.truth.hosts:
            for path in ("/robots.txt", "/p/1.html", "/m/3/1.html"):
                url = f"http://{addr}:{self.args.port}{path}"
                with opener.open(url, timeout=10) as resp:
                    body = resp.read().decode()
                if path != "/robots.txt":
                    want = self.truth.expect(url)
                    assert want is not None
                    if f"<title>{want[0].replace('&', '&amp;')}</title>" not in body:
                        raise SystemExit(f"{url} does not serve this farm: is another server "
                                         f"on port {self.args.port}? Pass --port.")
        self.log(f"server ({self.args.server}) answers on all {len(self.truth.hosts)} hosts")

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.pyserver is not None:
            if self.pyserver.poll() is None:
                self.pyserver.terminate()
                try:
                    self.pyserver.wait(10)
                except subprocess.TimeoutExpired:
                    self.pyserver.kill()
                    self.pyserver.wait()
            self.pyserver = None

    # ---------------------------------------------------------------- runs

    def workload_source(self, w: Workload) -> tuple[str, list[str] | None, int]:
        """(list file or seed URL, expected URLs for fetch, count)."""
        assert self.truth is not None
        quick = self.args.quick
        if w.kind == "fetch":
            name = w.quick_list if quick else w.full_list
            assert name is not None
            path = self.farm_dir / name
            n = sum(1 for _ in verify.read_urls(path))
            return str(path), None, n
        which = w.quick_seed if quick else w.full_seed
        assert which is not None
        return self.truth.seeds[which], None, self.truth.reachable[which]

    def command(self, tool: str, w: Workload, source: str, count: int, out: Path) -> list[str]:
        per_host = str(w.per_host)
        if tool in SHOAL_TOOLS:
            cmd = [str(self.shoal), w.kind, source, "-o", str(out),
                   "--concurrency", str(CONCURRENCY), "--per-host", per_host, "--fresh", "-q",
                   *SHOAL_TOOLS[tool]]
            if w.kind == "crawl":
                cmd += ["--max-pages", str(count), "--scope", "any"]
            if w.delay:
                cmd += ["--delay", str(w.delay)]
            return cmd
        cmd = [str(self.peers_python), str(BENCH / "peers" / PEER_SCRIPTS[tool]), w.kind,
               source, "-o", str(out), "--concurrency", str(CONCURRENCY),
               "--per-host", per_host]
        if w.kind == "crawl":
            cmd += ["--max-pages", str(count)]
        if w.delay:
            cmd += ["--delay", str(w.delay)]
        return cmd

    def timeout_for(self, urls: int) -> float:
        """--timeout, or by default 600 s and 1 ms per URL beyond that (1M URLs: 1,000 s)."""
        if self.args.timeout is not None:
            return float(self.args.timeout)
        return max(600.0, urls / 1000)

    def measured(self, cmd: list[str], rundir: Path, stem: str, env: dict[str, str],
                 timeout: float) -> measure.Measured:
        """Run ``cmd`` under measure.py, a small process, so ru_maxrss is the tool's own."""
        out = rundir / f"{stem}.measure.json"
        out.unlink(missing_ok=True)
        wrapper = [sys.executable, str(BENCH / "measure.py"), "--json", str(out),
                   "--stdout", str(rundir / f"{stem}.stdout"),
                   "--stderr", str(rundir / f"{stem}.log"),
                   "--timeout", str(timeout),
                   "--server-pids", ",".join(map(str, self.server_pids())),
                   "--cwd", str(rundir), "--", *cmd]
        proc = subprocess.Popen(wrapper, env=env)
        try:
            proc.wait(timeout + 60)  # measure.py enforces the timeout itself
        except BaseException:
            proc.terminate()  # it kills the tool's session, then exits
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"measure.py failed ({proc.returncode}) for {shlex.join(cmd)}")
        return measure.Measured(**json.loads(out.read_text()))

    def expected_urls(self, w: Workload, source: str) -> Any:
        assert self.truth is not None
        if w.kind == "fetch":
            return verify.read_urls(Path(source))
        which = w.quick_seed if self.args.quick else w.full_seed
        assert which is not None
        return self.truth.crawl_set(which)

    def run_one(self, tool: str, w: Workload, rep: int) -> dict[str, Any]:
        assert self.truth is not None
        source, _, count = self.workload_source(w)
        rundir = self.work / "runs" / w.name
        rundir.mkdir(parents=True, exist_ok=True)
        out = rundir / f"{tool}-{rep}.jsonl"
        for stale in rundir.glob(f"{tool}-{rep}.jsonl*"):
            stale.unlink()
        cmd = self.command(tool, w, source, count, out)
        if self.server is not None:
            self.server.reset_log()
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "pythonpath")}
        env.update(NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1", NO_PROXY="*", no_proxy="*")
        self.log(f"{w.name} run {rep}: {tool}: {shlex.join(cmd)}")
        m = self.measured(cmd, rundir, f"{tool}-{rep}", env, self.timeout_for(count))
        stderr_text = (rundir / f"{tool}-{rep}.log").read_text(errors="replace")
        lag = LAG_RE.findall(stderr_text)
        chk = verify.check_output(out, self.expected_urls(w, source), self.truth)
        politeness = None
        if w.delay and self.server is not None:
            self.server.flush_log()
            pol, _ = nginx_mod.analyse(self.server.access_log, per_host=w.per_host,
                                       delay=w.delay)
            politeness = pol.to_dict()
        rec = {
            "workload": w.name, "tool": tool, "rep": rep, "urls": count, "command": cmd,
            "records": chk.records, "wall_s": m.wall_s,
            "pages_per_s": chk.records / m.wall_s if m.wall_s else 0.0,
            "cpu_s": m.cpu_s, "user_s": m.user_s, "sys_s": m.sys_s,
            "peak_rss_bytes": m.peak_rss_bytes, "maxrss_bytes": m.maxrss_bytes,
            "tree_peak_rss_bytes": m.tree_peak_rss_bytes,
            "lag_p50_ms": float(lag[-1][0]) if lag else None,
            "lag_p99_ms": float(lag[-1][1]) if lag else None,
            "lag_max_ms": float(lag[-1][2]) if lag else None,
            "returncode": m.returncode, "timed_out": m.timed_out,
            "check": chk.to_dict(), "check_summary": chk.summary(),
            "politeness": politeness, "server_cpu_s": m.server_cpu_s,
            "other_cpu_s": m.other_cpu_s, "machine_busy_s": m.machine_busy_s,
            "cpus": os.cpu_count() or 1, "log": str(rundir / f"{tool}-{rep}.log"),
        }
        if tool in SHOAL_TOOLS:
            rec["shoal_source"] = source_digest()
        self.log(f"  -> {rec['pages_per_s']:,.0f} pages/s, {m.wall_s:.1f}s, CPU {m.cpu_s:.1f}s, "
                 f"peak RSS {m.peak_rss_bytes / 1e6:,.0f} MB, lag p99 "
                 f"{rec['lag_p99_ms']} ms, correct: {chk.summary()}"
                 + (f", politeness ok: {politeness['ok']}/{politeness['ok_with_tolerance']}"
                    if politeness else "")
                 + (f", other CPU {m.other_cpu_s:.1f}s" if m.other_cpu_s > 1 else ""))
        if not self.args.keep_outputs:
            for f in rundir.glob(f"{tool}-{rep}.jsonl*"):
                f.unlink()
        return rec

    # ---------------------------------------------------------------- report

    def collect_meta(self) -> None:
        a = self.args
        cpu = "?"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
            mem = next(int(line.split()[1]) for line in
                       Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal"))
        except (OSError, StopIteration):
            mem = 0
        versions: dict[str, str] = {"python": platform.python_version()}
        if "shoal" in a.tools:
            versions["shoal"] = self.shoal_version()
        if self.peers_python.exists() and set(a.tools) - {"shoal"}:
            code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) "
                    f"for p in {PEER_PACKAGES!r}}}))")
            got = subprocess.run([str(self.peers_python), "-c", code], capture_output=True,
                                 text=True)
            if got.returncode == 0:
                versions.update(json.loads(got.stdout))
        if a.server == "nginx":
            exe = nginx_mod.find_nginx()
            got = subprocess.run([exe or "nginx", "-v"], capture_output=True, text=True)
            versions["nginx"] = got.stderr.strip().rpartition("/")[2]
        assert self.truth is not None
        info = {}
        for name in a.workloads:
            w = WORKLOADS[name]
            _, _, count = self.workload_source(w)
            info[name] = {"title": w.title, "urls": count, "per_host": w.per_host,
                          "delay": w.delay, "hosts": len(self.truth.hosts),
                          "bound": len(self.truth.hosts) / w.delay if w.delay else None,
                          "concurrency": CONCURRENCY}
            info[name]["title"] += (f" ({count:,} URLs, {len(self.truth.hosts)} hosts, "
                                    f"concurrency {CONCURRENCY}, per host {w.per_host}"
                                    + (f", delay {w.delay} s" if w.delay else "") + ")")
        self.meta = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": a.quick, "repeat": a.repeat, "tools": a.tools, "workloads": a.workloads,
            "server": ("nginx " + versions.get("nginx", "")) if a.server == "nginx"
            else "aiohttp (bench/server.py)",
            "farm": f"{len(self.truth.hosts)} hosts x {self.truth.pages} pages of about 20 kB",
            "machine": f"{cpu}, {os.cpu_count()} CPUs, {mem / 1e6:.0f} GB RAM, Linux "
                       f"{platform.release()}",
            "versions": versions,
            "command": "bench/run " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
            "workload_info": info,
        }

    def shoal_version(self) -> str:
        py = self.shoal.parent / "python"
        got = subprocess.run([str(py), "-c", "import importlib.metadata as m; "
                              "print(m.version('shoal'))"], capture_output=True, text=True)
        ver = got.stdout.strip() or "?"
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True).stdout.strip()
        if rev:
            ver += f" ({rev}{' + uncommitted changes in src/' if dirty else ''}"
            ver += f", source digest {source_digest()})"
        return ver

    def write_results(self, final: bool) -> None:
        self.results.mkdir(parents=True, exist_ok=True)
        data = {"meta": self.meta, "runs": self.runs}
        chart = self.results / "results.png"
        if final and self.args.chart and self.runs:
            self.write_json(data)
            ok = self.peers_python.exists() and subprocess.run(
                [str(self.peers_python), str(BENCH / "chart.py"),
                 str(self.results / "results.json"), str(chart)]).returncode == 0
            if ok:
                self.meta["chart"] = str(chart)
            else:
                self.log("chart skipped (needs the peers venv with matplotlib)")
        self.write_json(data)
        if final:
            md = report.render(data)
            tmp = self.results / "results.md.tmp"
            tmp.write_text(md + "\n")
            os.replace(tmp, self.results / "results.md")
            self.log(f"wrote {self.results / 'results.md'}")

    def write_json(self, data: dict[str, Any]) -> None:
        tmp = self.results / "results.json.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=str))
        os.replace(tmp, self.results / "results.json")

    # ---------------------------------------------------------------- main

    def main(self) -> int:
        a = self.args
        self.work.mkdir(parents=True, exist_ok=True)
        if not a.no_setup:
            self.setup()
        for tool in a.tools:
            if tool in SHOAL_TOOLS and not self.shoal.exists():
                raise SystemExit(f"{self.shoal} missing: run `uv sync` or drop --no-setup")
            if tool not in SHOAL_TOOLS and not self.peers_python.exists():
                raise SystemExit(f"{self.peers_python} missing: drop --no-setup")
        self.ensure_farm()
        deadline = time.monotonic() + a.max_hours * 3600
        try:
            try:
                self.start_server()
            except RuntimeError as exc:
                raise SystemExit(f"bench: {exc}") from None
            self.collect_meta()
            for name in a.workloads:
                w = WORKLOADS[name]
                for rep in range(1, a.repeat + 1):
                    for tool in a.tools:
                        if SHOAL_TOOLS.get(tool) and w.kind != "fetch":
                            continue  # --workers is for fetch
                        if time.monotonic() > deadline:
                            self.log(f"--max-hours reached: skipping {name} {tool} run {rep}")
                            continue
                        self.runs.append(self.run_one(tool, w, rep))
                        self.write_results(final=False)
                        time.sleep(1)
        finally:
            self.stop_server()
            if self.meta:
                self.write_results(final=True)
        return 0


def source_digest() -> str:
    """A short digest of shoal's source as it is on disk now (it may change between runs)."""
    h = hashlib.sha256()
    for path in sorted((REPO / "src").rglob("*.py")):
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark shoal against its peers on a loopback nginx web farm.")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes: fetch 10k URLs, memory 100k, crawl 10k, polite 10k; "
                         "repeat 1 unless --repeat")
    ap.add_argument("--tools", default=",".join(TOOLS),
                    help="comma-separated, from: " + ",".join(TOOLS))
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help="comma-separated, from: " + ",".join(WORKLOADS))
    ap.add_argument("--repeat", type=int, default=None, help="runs per tool and workload "
                    "(default 3, 1 with --quick)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="hard limit on one tool run, seconds (default: 600, or 1 ms per "
                         "URL when that is more: 1,000 s for the 1M-URL list)")
    ap.add_argument("--max-hours", type=float, default=8,
                    help="start no run after this many hours (default 8)")
    ap.add_argument("--server", choices=["nginx", "python"], default="nginx")
    ap.add_argument("--port", type=int, default=8088)
    ap.add_argument("--hosts", type=int, default=100, help="farm hosts (127.0.0.2 ...)")
    ap.add_argument("--pages", type=int, default=1000, help="farm pages per host")
    ap.add_argument("--work-dir", type=Path, default=BENCH / ".work")
    ap.add_argument("--results-dir", type=Path, default=BENCH / "results")
    ap.add_argument("--shoal-bin", default=None, help="shoal executable (default: the "
                    "project's .venv/bin/shoal after uv sync)")
    ap.add_argument("--no-setup", action="store_true",
                    help="install nothing (no uv sync, peers venv or nginx)")
    ap.add_argument("--no-chart", dest="chart", action="store_false")
    ap.add_argument("--keep-outputs", action="store_true",
                    help="keep each run's JSONL output under the work dir")
    args = ap.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for t in args.tools:
        if t not in TOOLS:
            ap.error(f"unknown tool {t!r}; choose from {','.join(TOOLS)}")
    for w in args.workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}; choose from {','.join(WORKLOADS)}")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1 or (args.timeout is not None and args.timeout <= 0):
        ap.error("--repeat and --timeout must be positive")
    if not 1 <= args.hosts <= 250 or args.pages < 10 or args.pages % 10:
        ap.error("--hosts must be 1..250 and --pages a multiple of 10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return Bench(args).main()
    except KeyboardInterrupt:
        print("[bench] interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
