"""Shared fixtures: the shoal command as a user runs it, and URL files."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest


@dataclass
class Run:
    """A finished ``shoal`` process."""

    code: int
    stdout: str
    stderr: str


def postgres_url() -> str:
    """The test database (SHOAL_TEST_POSTGRES_URL), or skip; under CI, where the tests that
    need it must run, its absence fails the test."""
    url = os.environ.get("SHOAL_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("SHOAL_TEST_POSTGRES_URL must be set under CI")
        pytest.skip("SHOAL_TEST_POSTGRES_URL is not set")
    return url


def shoal_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "shoal", *args]


async def run_shoal(*args: str, stdin: bytes | None = None, timeout: float = 60,
                    cwd: str | Path | None = None) -> Run:
    """Run the shoal command to completion without blocking the test's event loop."""
    proc = await asyncio.create_subprocess_exec(
        *shoal_cmd(*args), stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=cwd,
        env={**os.environ, "COLUMNS": "120"})
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def run_shoal_file_limit(*args: str, limit_kb: int, timeout: float = 60) -> Run:
    """Run the shoal command with writes past ``limit_kb`` KiB of any file failing (EFBIG),
    as they would on a full disk."""
    limited = (f"ulimit -f {limit_kb}; trap '' XFSZ; exec "
               + " ".join(shlex.quote(a) for a in shoal_cmd(*args)))
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", limited, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def read_records(path: str | Path) -> list[dict[str, object]]:
    """Every line of a JSONL output, each required to be a complete JSON object."""
    data = Path(path).read_bytes()
    assert data == b"" or data.endswith(b"\n"), "output ends with a torn line"
    return [orjson.loads(line) for line in data.splitlines()]


def write_urls(path: Path, urls: Iterable[str]) -> Path:
    path.write_text("".join(u + "\n" for u in urls))
    return path


@pytest.fixture
def tmp_out(tmp_path: Path) -> Path:
    return tmp_path / "out.jsonl"
