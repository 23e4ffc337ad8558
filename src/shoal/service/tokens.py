"""API tokens for the service: created, verified and revoked in the service database.

``Tokens`` holds what does not depend on the database; ``TokenStore`` keeps the tokens in
the service's SQLite file, ``pgservice.PgTokenStore`` in PostgreSQL.

Only a SHA-256 of each token is stored. A slow password hash (bcrypt, scrypt) is not
needed: tokens are 256-bit random secrets, so there is no dictionary to try and a fast
hash is as strong as the token. Verification looks the hash up in a unique index: timing
can at most leak bytes of the *hash* of a guess, which tells nothing about the secret, and
the row found is checked once more with ``hmac.compare_digest``.
"""

from __future__ import annotations

import abc
import builtins
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal, Self

from shoal.errors import StoreError
from shoal.store.sqlite import migrate

PREFIX = "shoal_"
DEFAULT_DB = "shoal-service.db"
# token_urlsafe(32) is 43 characters of the base64url alphabet
_TOKEN = re.compile(r"shoal_[A-Za-z0-9_-]{43}\Z")
_ID = re.compile(r"[0-9a-f]{8}\Z")
_COLUMNS = "id, name, read_only, created, revoked"

# Versioned migrations of the service database (tokens, then the service's jobs):
# index i moves the schema from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE tokens (
        id        TEXT PRIMARY KEY,        -- short public identifier (8 hex digits)
        name      TEXT,
        hash      BLOB NOT NULL UNIQUE,    -- sha256 of the token, never the token
        read_only INTEGER NOT NULL,
        created   TEXT NOT NULL,           -- ISO 8601, UTC
        revoked   TEXT                     -- when revoked, else NULL
    );
    """,
    # 2: the service's jobs (shoal serve); each job's records live in its own state file
    """
    CREATE TABLE jobs (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- listing order
        id       TEXT NOT NULL UNIQUE,
        kind     TEXT NOT NULL,            -- fetch | crawl
        spec     TEXT NOT NULL,            -- JSON: seeds and options (URLs live in a file)
        state    TEXT NOT NULL,            -- queued running paused completed cancelled failed
        token    TEXT NOT NULL,            -- id of the token that created it ('' when open)
        urls     INTEGER NOT NULL,         -- input URLs (fetch) or seeds (crawl)
        created  TEXT NOT NULL,
        started  TEXT,
        finished TEXT,
        error    TEXT,
        summary  TEXT                      -- JSON: counts when the last run ended
    );
    CREATE INDEX jobs_state ON jobs (state);
    """,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenInfo:
    """What is known about a token, short of the secret itself."""

    id: str
    name: str
    read_only: bool
    created: str
    revoked: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None


def open_tokens(db: str, *, create: bool = True, schema: str = "shoal-service") -> Tokens:
    """The tokens of the service database ``db``: a path, sqlite:///path or postgresql://...

    Raises:
        StoreError: as ``TokenStore`` or ``PgTokenStore``.
    """
    if db.startswith(("postgresql://", "postgres://")):
        from shoal.service.pgservice import PgTokenStore

        return PgTokenStore(db, create=create, schema=schema)
    if db.startswith("sqlite:///"):
        db = db[len("sqlite:///"):]
    return TokenStore(db, create=create)


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# What the backends' SQL returns: a row of the tokens table, one with its hash last, and
# the columns a token is looked up by.
TokenRow = tuple[str, str | None, int, str, str | None]  # id, name, read_only, created, revoked
HashedRow = tuple[str, str | None, int, str, str | None, bytes]
KeyColumn = Literal["hash", "id"]


def _info(row: TokenRow) -> TokenInfo:
    return TokenInfo(id=row[0], name=row[1] or "", read_only=bool(row[2]), created=row[3],
                     revoked=row[4])


class Tokens(abc.ABC):
    """The tokens table, in SQLite (``TokenStore``) or PostgreSQL (``PgTokenStore``).

    What the two share lives here: drawing, hashing and checking tokens, revoking by id or
    by token, turning rows into ``TokenInfo``. Each backend runs the SQL of the methods
    marked abstract.
    """

    path: str

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def create(self, *, name: str = "", read_only: bool = False) -> tuple[str, TokenInfo]:
        """A new token and its info; the token itself is returned here and never again."""
        token = PREFIX + secrets.token_urlsafe(32)
        created = _now()
        while True:  # an id collision (1 in 4 billion per pair) just draws another
            info = TokenInfo(id=secrets.token_hex(4), name=name, read_only=read_only,
                             created=created)
            if self._insert(info, _hash(token)):
                return token, info

    def verify(self, token: str) -> TokenInfo | None:
        """The token's info if it is known and not revoked; None otherwise."""
        if not isinstance(token, str) or not _TOKEN.match(token):
            return None
        digest = _hash(token)
        row = self._find(digest)
        if row is None or not hmac.compare_digest(bytes(row[5]), digest) or row[4] is not None:
            return None
        return _info(row[:5])

    def revoke(self, id_or_token: str) -> bool:
        """Revoke a token by its id or by the token itself; False if there is none such.

        Revoking a revoked token keeps its first revocation time and returns True.
        """
        if _TOKEN.match(id_or_token):
            return self._revoke("hash", _hash(id_or_token), _now())
        if _ID.match(id_or_token.lower()):
            return self._revoke("id", id_or_token.lower(), _now())
        return False

    def list(self) -> builtins.list[TokenInfo]:
        """Every token, oldest first (revoked ones too)."""
        return [_info(r) for r in self._rows()]

    @abc.abstractmethod
    def count_active(self) -> int:
        """Tokens not revoked."""

    @abc.abstractmethod
    def _insert(self, info: TokenInfo, digest: bytes) -> bool:
        """Add a token's row (``digest``: its hash); False if its id is taken."""

    @abc.abstractmethod
    def _find(self, digest: bytes) -> HashedRow | None:
        """The row whose hash is ``digest``: id, name, read_only, created, revoked, hash."""

    @abc.abstractmethod
    def _revoke(self, column: KeyColumn, key: str | bytes, when: str) -> bool:
        """Set ``revoked`` to ``when`` in the row whose ``column`` is ``key`` unless it is
        set already; False if there is no such row."""

    @abc.abstractmethod
    def _rows(self) -> builtins.list[TokenRow]:
        """Every row, oldest first: id, name, read_only, created, revoked."""


class TokenStore(Tokens):
    """The tokens table of the service database; safe to share between threads.

    Raises:
        StoreError: the file cannot be opened, is not a database, is from a newer shoal,
            or (with ``create=False``) does not exist.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = str(path)
        if not create and not os.path.isfile(self.path):
            raise StoreError(f"no service database at {self.path}")
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open service database {self.path}: {exc}") from exc
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        db = self._db
        try:
            db.execute("PRAGMA busy_timeout=5000")
            migrate(db, MIGRATIONS, str(self.path))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot use service database {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def count_active(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM tokens WHERE revoked IS NULL"
                                   ).fetchone()
        return int(row[0])

    def _insert(self, info: TokenInfo, digest: bytes) -> bool:
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO tokens (id, name, hash, read_only, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (info.id, info.name, digest, int(info.read_only), info.created))
            except sqlite3.IntegrityError:
                return False
        return True

    def _find(self, digest: bytes) -> HashedRow | None:
        with self._lock:
            row: HashedRow | None = self._db.execute(
                f"SELECT {_COLUMNS}, hash FROM tokens WHERE hash = ?", (digest,)).fetchone()
        return row

    def _revoke(self, column: KeyColumn, key: str | bytes, when: str) -> bool:
        with self._lock:
            self._db.execute(
                f"UPDATE tokens SET revoked = ? WHERE {column} = ? AND revoked IS NULL",
                (when, key))
            found = self._db.execute(f"SELECT 1 FROM tokens WHERE {column} = ?",
                                     (key,)).fetchone()
        return found is not None

    def _rows(self) -> builtins.list[TokenRow]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM tokens ORDER BY created, rowid").fetchall()
        return rows
