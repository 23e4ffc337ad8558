"""The benchmark suite in small: generate a farm, serve it, fetch it with shoal, report.

Runs ``bench/driver.py`` (what ``bench/run`` runs) on 10 hosts x 1,000 pages = 10,000
URLs, shoal only, served by the bundled aiohttp server (``bench/server.py``) on
127.0.0.2-127.0.0.11, even where nginx is installed: no root, no system packages, no
peers, nothing beyond loopback. Then checks the output against the farm's ground truth
itself, and that the results table was written.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import read_records

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
HOSTS, PAGES = 10, 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return int(s.getsockname()[1])


def _farm_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_farm", BENCH / "farm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_smoke_fetch_10k_with_shoal(tmp_path: Path) -> None:
    shoal = shutil.which("shoal", path=str(Path(sys.executable).parent))
    assert shoal is not None, "shoal is not installed next to this Python"
    work, results = tmp_path / "work", tmp_path / "results"
    cmd = [sys.executable, str(BENCH / "driver.py"), "--tools", "shoal",
           "--workloads", "fetch100k", "--repeat", "1", "--server", "python", "--no-setup",
           "--no-chart", "--keep-outputs", "--hosts", str(HOSTS), "--pages", str(PAGES),
           "--port", str(_free_port()), "--timeout", "120", "--shoal-bin", shoal,
           "--work-dir", str(work), "--results-dir", str(results)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=170, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]

    # the driver's own verdict
    data = json.loads((results / "results.json").read_text())
    [rec] = data["runs"]
    assert rec["tool"] == "shoal" and rec["urls"] == HOSTS * PAGES
    assert rec["check"]["ok"], rec["check"]
    assert rec["returncode"] == 0 and not rec["timed_out"]
    assert rec["pages_per_s"] > 0 and rec["peak_rss_bytes"] > 0 and rec["cpu_s"] > 0
    assert rec["lag_p99_ms"] is not None  # parsed from shoal's summary

    # and checked here, independently, against the farm's ground truth
    farm_dir = work / f"farm-{HOSTS}x{PAGES}"
    truth = json.loads((farm_dir / "truth.json").read_text())
    page_of = _farm_module().page_of
    urls = (farm_dir / "urls-all.txt").read_text().split()
    records = read_records(work / "runs" / "fetch100k" / "shoal-1.jsonl")
    assert len(records) == len(urls) == HOSTS * PAGES
    assert {r["url"] for r in records} == set(urls)
    assert all(r["status"] == 200 and r["error"] is None for r in records)
    for r in records:
        host, n = page_of(r["url"])
        title, links = truth["pages_by_host"][host][n]
        assert (r["title"], r["links"]) == (title, links), r["url"]
    assert any("—" in r["title"] and "&" in r["title"] for r in records)  # entities decoded

    # the results table
    md = (results / "results.md").read_text()
    assert "## fetch100k" in md
    assert "| shoal |" in md and "| yes |" in md
    assert "## Targets (shoal)" in md
