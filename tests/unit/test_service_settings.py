"""Which --db values the service takes, and where each job's files go."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoal.errors import ConfigError
from shoal.service.settings import ServiceSettings


def test_db_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    lite = ServiceSettings(db="sqlite:///" + str(tmp_path / "s.db"))
    assert lite.db == str(tmp_path / "s.db") and not lite.postgres
    assert lite.jobs_dir == str(tmp_path / "s.db") + ".jobs"
    pg = ServiceSettings(db="postgresql://u@127.0.0.1/db")
    assert pg.postgres and pg.db == "postgresql://u@127.0.0.1/db"
    assert pg.jobs_dir == os.path.join(str(tmp_path), "shoal-service.jobs")
    assert ServiceSettings(db="postgres://h/db", jobs_root="j").jobs_dir == str(tmp_path / "j")
    with pytest.raises(ConfigError, match="postgresql://"):
        ServiceSettings(db="mysql://h/db")


def test_the_fetch_budget_covers_every_running_job() -> None:
    assert ServiceSettings().concurrency == 200
    assert ServiceSettings(concurrency=8, max_running=8).concurrency == 8
    with pytest.raises(ConfigError, match=r"--concurrency must be >= --max-running \(8\)"):
        ServiceSettings(concurrency=7)
    with pytest.raises(ConfigError, match="--concurrency must be >= 1, got 0"):
        ServiceSettings(concurrency=0, max_running=1)
