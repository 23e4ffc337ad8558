"""What the commands share: exit codes, the size type, usage errors, signals, flag checks."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


class ByteSize(click.ParamType):  # type: ignore[type-arg]
    """A size in bytes: ``1048576``, ``512K``, ``10M``, ``1GiB``."""

    name = "bytes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> int:
        if isinstance(value, int):
            return value
        m = _SIZE.match(str(value))
        if not m:
            self.fail(f"{value!r} is not a size (use e.g. 1048576, 512K, 10M, 1G)", param, ctx)
        number, unit = float(m.group(1)), m.group(2).lower()
        return int(number * 1024 ** " kmgt".index(unit or " "))


def fail(message: str) -> NoReturn:
    click.echo(f"shoal: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def db_value(db: str | None) -> str | None:
    """A --db value as a path or a postgresql:// URL (``sqlite:///path`` -> path)."""
    if db and db.startswith("sqlite:///"):
        return db[len("sqlite:///"):] or fail("--db sqlite:/// needs a path")
    if db and "://" in db and not db.startswith(("postgresql://", "postgres://")):
        fail(f"--db {db!r}: use a path, sqlite:///path or postgresql://...")
    return db


def stop_on_signals(stop: Callable[[str], None]) -> Callable[[], None]:
    """SIGINT and SIGTERM on the running loop: the first calls ``stop`` with the signal's
    name (a graceful stop), a second cancels the current task (stop at once). Returns the
    function that takes the handlers away again."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            stop(signal.Signals(signum).name)
        elif main_task is not None:
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)

    def remove() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    return remove


def check_shared_flags(lease: float | None, host_turn: float) -> None:
    if lease is not None and not 1 <= lease <= 86_400:
        fail(f"--lease must be between 1 and 86400 seconds, got {lease:g}")
    if not 0.1 <= host_turn <= 86_400:
        fail(f"--host-turn must be between 0.1 and 86400 seconds, got {host_turn:g}")


def display(dsn: str) -> str:
    from shoal.store.postgres import display_dsn

    return display_dsn(dsn, "").rstrip("#")
