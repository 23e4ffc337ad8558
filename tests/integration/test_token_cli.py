"""`shoal token create|list|revoke` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.service.tokens import TokenStore
from tests.conftest import run_shoal

pytestmark = pytest.mark.timeout(60)


async def test_create_list_revoke(tmp_path: Path) -> None:
    db = str(tmp_path / "service.db")
    run = await run_shoal("token", "create", "--name", "dashboard", "--read-only", "--db", db)
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    token = lines[-1]
    assert token.startswith("shoal_") and token == token.strip() and " " not in token
    assert "Bearer" in run.stderr and token not in run.stderr
    with TokenStore(db) as store:
        info = store.verify(token)
    assert info is not None and info.read_only and info.name == "dashboard"

    listed = await run_shoal("token", "list", "--db", db)
    assert listed.code == 0, listed.stderr
    assert token not in listed.stdout and token[6:] not in listed.stdout
    [row] = [line for line in listed.stdout.splitlines() if line.startswith(info.id)]
    assert row.split()[:3] == [info.id, "dashboard", "yes"] and row.split()[-1] == "-"

    revoked = await run_shoal("token", "revoke", info.id, "--db", db)
    assert revoked.code == 0, revoked.stderr
    assert revoked.stdout == ""
    with TokenStore(db) as store:
        assert store.verify(token) is None
        assert store.count_active() == 0
    listed = await run_shoal("token", "list", "--db", db)
    [row] = [line for line in listed.stdout.splitlines() if line.startswith(info.id)]
    assert row.split()[-1].endswith("Z")


async def test_default_db_is_in_the_current_directory(tmp_path: Path) -> None:
    run = await run_shoal("token", "create", cwd=tmp_path)
    assert run.code == 0, run.stderr
    with TokenStore(tmp_path / "shoal-service.db", create=False) as store:
        info = store.verify(run.stdout.splitlines()[-1])
    assert info is not None and not info.read_only


async def test_revoke_unknown_is_one_line_exit_2(tmp_path: Path) -> None:
    db = str(tmp_path / "service.db")
    assert (await run_shoal("token", "create", "--db", db)).code == 0
    run = await run_shoal("token", "revoke", "0badf00d", "--db", db)
    assert run.code == 2
    assert run.stderr.count("\n") == 1 and "0badf00d" in run.stderr
    assert run.stderr.startswith("shoal: error:")


async def test_revoke_or_list_without_a_database_is_one_line_exit_2(tmp_path: Path) -> None:
    for args in (["revoke", "0badf00d"], ["list"]):
        run = await run_shoal("token", *args, "--db", str(tmp_path / "none.db"))
        assert run.code == 2 and run.stderr.count("\n") == 1, run.stderr
        assert "no service database" in run.stderr
    assert not (tmp_path / "none.db").exists()
