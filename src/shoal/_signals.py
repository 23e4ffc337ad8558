"""SIGINT and SIGTERM outside a run: exit 130 at once, without a traceback.

Installed first thing by the command (it imports nothing heavy), so that a Ctrl-C while
shoal starts up (imports, opening the input) or after its run has finished ends like one
during the run. During the run the engine's own handlers take over (graceful stop).
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

EXIT_INTERRUPTED = 130


_stopping = False


def _interrupted(signum: int, frame: FrameType | None) -> None:
    # nothing is in flight outside a run, and the state database is consistent at every
    # commit: stopping here loses nothing
    global _stopping
    if _stopping:  # a second signal while exiting: do not wait for anything
        os._exit(EXIT_INTERRUPTED)
    _stopping = True
    try:
        sys.stderr.write(f"\nshoal: {signal.Signals(signum).name}: stopped\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr is gone: exit all the same
    raise SystemExit(EXIT_INTERRUPTED)


def exit_on_signals() -> None:
    """SIGINT and SIGTERM end the process with exit code 130 (main thread only)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupted)
