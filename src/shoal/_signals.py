"""SIGINT and SIGTERM outside a run: exit 130, without a traceback.

Installed first thing by the command (it imports nothing heavy), so that a Ctrl-C while
shoal starts up (imports, opening the input) ends like one during the run. During the run
the engine's own handlers take over (graceful stop). After it, while shoal closes its
state and its loop, a signal is remembered rather than raised, so that nothing is cut
half-way; the process then exits 130. A second signal at any of these times exits at once.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

EXIT_INTERRUPTED = 130
_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_stopping = False  # a signal was received outside the run
_remembered: int | None = None  # received while finishing up


def _say(signum: int, what: str) -> None:
    try:
        sys.stderr.write(f"\nshoal: {signal.Signals(signum).name}: {what}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr is gone: exit all the same


def _interrupted(signum: int, frame: FrameType | None) -> None:
    # before the run: nothing is in flight and the state database is consistent at every
    # commit, so stopping here loses nothing
    global _stopping
    if _stopping:  # a second signal while exiting: do not wait for anything
        os._exit(EXIT_INTERRUPTED)
    _stopping = True
    _say(signum, "stopped")
    raise SystemExit(EXIT_INTERRUPTED)


def _remember(signum: int, frame: FrameType | None) -> None:
    # after the run: its state is saved; let the closing finish, then exit 130
    global _remembered
    if _remembered is not None:
        os._exit(EXIT_INTERRUPTED)
    _remembered = signum


def exit_on_signals() -> None:
    """Before the run: SIGINT and SIGTERM end the process with exit code 130."""
    for sig in _SIGNALS:
        signal.signal(sig, _interrupted)


def defer_signals() -> None:
    """After the run: SIGINT and SIGTERM are remembered; ``finish`` exits 130 for them."""
    for sig in _SIGNALS:
        signal.signal(sig, _remember)


def finish() -> None:
    """The command is over: signals change nothing any more (the interpreter would put
    back the default handlers while it shuts down); exit 130 if one came while finishing.
    """
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if _remembered is not None:
        raise SystemExit(EXIT_INTERRUPTED)
