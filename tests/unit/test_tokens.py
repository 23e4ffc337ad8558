"""The service's token store: hashed at rest, verified, revoked, listed."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.errors import StoreError
from shoal.service.tokens import MIGRATIONS, TokenInfo, TokenStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TokenStore]:
    with TokenStore(tmp_path / "service.db") as s:
        yield s


def test_create_then_verify(store: TokenStore) -> None:
    token, info = store.create(name="ci")
    assert token.startswith("shoal_") and len(token) == len("shoal_") + 43
    assert len(info.id) == 8 and int(info.id, 16) >= 0
    assert info.name == "ci" and not info.read_only and info.revoked is None
    assert info.created.endswith("Z")
    assert store.verify(token) == info
    assert store.count_active() == 1


def test_tokens_and_ids_are_distinct(store: TokenStore) -> None:
    made = [store.create() for _ in range(50)]
    assert len({t for t, _ in made}) == 50 and len({i.id for _, i in made}) == 50
    assert all(store.verify(t) == i for t, i in made)


def test_read_only_flag_is_kept(store: TokenStore) -> None:
    ro, ro_info = store.create(read_only=True)
    rw, _ = store.create()
    assert ro_info.read_only
    assert store.verify(ro) == ro_info
    verified = store.verify(rw)
    assert verified is not None and not verified.read_only


def test_only_hashes_are_stored(tmp_path: Path) -> None:
    path = tmp_path / "service.db"
    with TokenStore(path) as store:
        tokens = [store.create(name="n")[0] for _ in range(3)]
    files = list(tmp_path.iterdir())
    assert path in files
    blob = b"".join(f.read_bytes() for f in files)
    for token in tokens:
        assert token.encode() not in blob
        assert token.removeprefix("shoal_").encode() not in blob
    with sqlite3.connect(path) as db:
        hashes = {r[0] for r in db.execute("SELECT hash FROM tokens")}
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    db.close()
    assert hashes == {hashlib.sha256(t.encode()).digest() for t in tokens}


@pytest.mark.parametrize("bad", [
    "", "shoal_", "Bearer x", "shoal_" + "A" * 42, "shoal_" + "A" * 44, "shoal_" + "!" * 43,
    "xoal_" + "A" * 44, "shoal_" + "A" * 42 + "\n", " shoal_" + "A" * 43,
])
def test_malformed_tokens_fail(store: TokenStore, bad: str) -> None:
    store.create()
    assert store.verify(bad) is None
    assert store.revoke(bad) is False


def test_unknown_token_fails(store: TokenStore) -> None:
    token, _ = store.create()
    other = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert store.verify(other) is None


def test_revoke_by_id(store: TokenStore) -> None:
    token, info = store.create()
    keep, _ = store.create()
    assert store.revoke(info.id) is True
    assert store.verify(token) is None
    assert store.verify(keep) is not None
    assert store.count_active() == 1
    [listed] = [t for t in store.list() if t.id == info.id]
    assert listed.revoked is not None and listed.revoked.endswith("Z")
    assert store.revoke(info.id) is True  # already revoked: still known, time kept
    assert [t for t in store.list() if t.id == info.id] == [listed]


def test_revoke_by_token_and_unknown(store: TokenStore) -> None:
    token, _ = store.create()
    assert store.revoke(token) is True
    assert store.verify(token) is None
    assert store.revoke("0badf00d") is False
    assert store.revoke("not-an-id") is False


def test_list_keeps_order_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "service.db"
    with TokenStore(path) as store:
        a = store.create(name="a")[1]
        b = store.create(name="b", read_only=True)[1]
        store.revoke(a.id)
    with TokenStore(path, create=False) as store:
        listed = store.list()
    assert [t.id for t in listed] == [a.id, b.id]
    assert listed[1] == b and not listed[0].active and listed[1].active
    assert all(isinstance(t, TokenInfo) for t in listed)


def test_unusable_files_raise_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no service database"):
        TokenStore(tmp_path / "missing.db", create=False)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot use"):
        TokenStore(junk)
    newer = tmp_path / "newer.db"
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="newer shoal"):
        TokenStore(newer)
