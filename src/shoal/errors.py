"""One error tree for shoal.

ShoalError
 +-- UsageError    bad command line or input file (CLI exit 2)
 +-- ConfigError   an invalid setting; also a UsageError for the CLI
 +-- StoreError    the state database is unusable (wrong run, corrupt, locked)
 +-- FetchError    one URL failed; carries the record's ``error.kind``
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """Exactly the values of a record's ``error.kind``."""

    TIMEOUT = "timeout"
    CONNECT = "connect"
    DNS = "dns"
    TLS = "tls"
    TOO_LARGE = "too_large"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    ROBOTS_DISALLOWED = "robots_disallowed"
    INVALID_URL = "invalid_url"
    PROTOCOL = "protocol"
    BLOCKED_ADDRESS = "blocked_address"
    UNSUPPORTED_SCHEME = "unsupported_scheme"
    HTTP = "http"
    HANDLER = "handler"  # a route handler raised (or timed out) on the page


class ShoalError(Exception):
    """Base of every error shoal raises on purpose."""


class UsageError(ShoalError):
    """The command line or its input cannot be used (exit code 2)."""


class ConfigError(UsageError):
    """A setting is out of range; the message names the flag and the value."""


class StoreError(ShoalError):
    """The state database cannot be used for this run."""


class OutputError(ShoalError):
    """The output cannot be written (a full disk); every record is in the state (exit 1)."""


class WorkerError(ShoalError):
    """A ``--workers`` process failed; the state is saved and a rerun resumes (exit 1)."""


class FetchError(ShoalError):
    """Fetching one URL failed; becomes the record's ``error``."""

    def __init__(self, kind: ErrorKind, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.status = status  # the HTTP status, when a response had begun (too_large)

    def __reduce__(self) -> tuple[type[FetchError], tuple[ErrorKind, str]]:
        return (type(self), (self.kind, self.message))
