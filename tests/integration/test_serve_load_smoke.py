"""The service load benchmark in small (``bench/serve_load.py``): it runs to the end,
its watchers hold their streams and count events, its requests all answer, and it
reports each process's CPU time. The demo site is the target, and nginx too where it is
installed (on a free port, its farm and files under the test's own directory)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

BENCH = Path(__file__).resolve().parents[2] / "bench"
URLS, WATCHERS, RATE = 300, 20, 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("target", ["demo", "nginx"])
def test_serve_load_smoke(tmp_path: Path, target: str) -> None:
    if target == "nginx" and not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        pytest.skip("nginx is not installed (the benchmark falls back to the demo site)")
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(BENCH / "serve_load.py"), "--urls", str(URLS),
           "--watchers", str(WATCHERS), "--rate", str(RATE), "--target", target,
           "--port", str(_free_port()), "--work-dir", str(tmp_path / "work"),
           "--rounds", "2", "--max-seconds", "150", "--json", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=170, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["target"] == target
    assert len(result["crawl_records_per_s_unloaded"]) == 3  # either side of each loaded run
    assert all(r > 0 for r in result["crawl_records_per_s_unloaded"])
    assert len(result["crawl_records_per_s_loaded"]) == 2
    assert len(result["crawl_loaded_vs_unloaded_by_round"]) == 2
    assert result["crawl_loaded_vs_unloaded"] > 0
    assert result["api_requests"] > 0 and result["api_failures"] == 0
    assert set(result["api_p50_p99_ms_by_path"]) == {
        "/metrics", "/readyz", "/v1/jobs", "/v1/jobs/{id}", "/v1/jobs/{id}/records"}
    assert result["sse_watchers_connected"] == 2 * WATCHERS  # in each loaded run
    assert result["sse_failures"] == 0
    assert result["sse_streams_ended_by_service"] == 2 * WATCHERS  # the cancels ended them
    assert result["sse_events_per_watcher_min"] >= 2  # the first one at once, then a tick
    for phase in ("unloaded", "loaded"):
        cpu = result["cpu_s"][phase]
        assert cpu["job_processes"] > 0 and cpu["wall"] > 0, (phase, cpu)
    assert result["cpu_s"]["loaded"]["service_api"] > 0
