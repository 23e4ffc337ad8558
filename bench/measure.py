"""Run one tool as a process group with a hard timeout; measure its CPU, memory and the machine.

- CPU (user, sys) and ``ru_maxrss`` come from ``os.wait4`` on the tool's process: they
  cover the process and every descendant it waited for, as ``/usr/bin/time -v`` reports.
  Linux keeps the RSS a child had *before* exec in its ``ru_maxrss``, so the tool must be
  forked by a small process: the driver runs this file as a script per tool run
  (``python measure.py --json OUT ... -- CMD``), never forking tools from its own, larger,
  process.
- The tool runs in a new session; every 0.5 s the RSS of all processes of that session is
  summed, so a tool that forks workers is measured whole (``tree_peak_rss``). Peak RSS in
  the report is the larger of the two.
- ``/proc/stat`` before and after gives the machine's busy CPU seconds; minus the tool's
  and the server's, that is what other processes used during the run (a noisy neighbour
  shows up there rather than silently in the figures).
- At the timeout the session gets SIGTERM, and SIGKILL 10 s later; figures are still kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Measured:
    returncode: int | None
    timed_out: bool
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_bytes: int  # ru_maxrss of the tool (largest single process)
    tree_peak_rss_bytes: int  # sampled sum over the tool's session
    server_cpu_s: float
    machine_busy_s: float  # all CPUs, everything
    other_cpu_s: float  # busy minus tool minus server

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def peak_rss_bytes(self) -> int:
        return max(self.maxrss_bytes, self.tree_peak_rss_bytes)


def machine_busy_s() -> float:
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def proc_cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(rest[11]) + int(rest[12])  # utime, stime
    return total / _TICK


def session_rss_bytes(sid: int) -> int:
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rpartition(")")[2].split()
            if int(rest[3]) != sid:
                continue
            with open(f"/proc/{entry}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            continue
    return total


def _session_members(sid: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[3]) == sid:
                        return True
            except (OSError, ValueError, IndexError):
                continue
    return False


def kill_session(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def run_measured(cmd: list[str], *, stdout: Path, stderr: Path, timeout: float,
                 server_pids: list[int], env: dict[str, str] | None = None,
                 cwd: Path | None = None, grace: float = 10.0) -> Measured:
    """Run ``cmd`` to completion (or to ``timeout``), measured as described above."""
    busy0 = machine_busy_s()
    server0 = proc_cpu_s(server_pids)
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
    deadline = t0 + timeout
    killed_at: float | None = None
    timed_out = False
    tree_peak = 0
    next_sample = t0
    status = 0
    usage = None
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic()
            if now >= next_sample:
                tree_peak = max(tree_peak, session_rss_bytes(proc.pid))
                next_sample = now + 0.5
            if now >= deadline and killed_at is None:
                timed_out = True
                killed_at = now
                kill_session(proc.pid, signal.SIGTERM)
            elif killed_at is not None and now >= killed_at + grace:
                kill_session(proc.pid, signal.SIGKILL)
                killed_at = float("inf")
            time.sleep(0.05)
    except BaseException:
        kill_session(proc.pid, signal.SIGKILL)
        os.waitpid(proc.pid, 0)
        proc.returncode = -9
        raise
    wall = time.monotonic() - t0
    if _session_members(proc.pid):
        kill_session(proc.pid, signal.SIGKILL)  # anything the tool left behind in its session
    proc.returncode = os.waitstatus_to_exitcode(status)
    busy = machine_busy_s() - busy0
    server = proc_cpu_s(server_pids) - server0
    assert usage is not None
    tool_cpu = usage.ru_utime + usage.ru_stime
    return Measured(
        returncode=proc.returncode, timed_out=timed_out, wall_s=wall,
        user_s=usage.ru_utime, sys_s=usage.ru_stime, maxrss_bytes=usage.ru_maxrss * 1024,
        tree_peak_rss_bytes=tree_peak, server_cpu_s=server, machine_busy_s=busy,
        other_cpu_s=max(0.0, busy - tool_cpu - server))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="run CMD measured; write the figures as JSON")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--stdout", type=Path, required=True)
    ap.add_argument("--stderr", type=Path, required=True)
    ap.add_argument("--timeout", type=float, required=True)
    ap.add_argument("--server-pids", default="", help="comma-separated")
    ap.add_argument("--cwd", type=Path, default=None)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    pids = [int(p) for p in args.server_pids.split(",") if p]
    signal.signal(signal.SIGTERM, _interrupt)  # the driver stopping: kill the tool too
    m = run_measured(cmd, stdout=args.stdout, stderr=args.stderr, timeout=args.timeout,
                     server_pids=pids, cwd=args.cwd)
    args.json.write_text(json.dumps(asdict(m)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
