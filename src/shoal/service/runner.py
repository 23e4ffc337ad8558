"""A running job as the service sees it: its process, what it last reported, its share.

The job's engine runs in a child process (``service.jobproc``); the service talks to it
with JSON lines over the child's standard input and output. ``JobProcess`` is the
service's end of those pipes; ``Live`` holds what the API shows of the job while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from shoal.engine.child import close_children, spawn
from shoal.engine.stats import Statistics
from shoal.service.jobdb import JobRow

EXIT_GRACE = 10.0  # seconds a job's process gets to end once its lifeline is closed


class JobProcess:
    """One job's child process: started with its spec, sent control messages, heard."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    @classmethod
    async def start(cls, spec: dict[str, Any]) -> JobProcess:
        """Start ``python -m shoal.service.jobproc`` and hand it the job."""
        job = cls(await spawn("shoal.service.jobproc", stdout=asyncio.subprocess.PIPE))
        job.send(spec)  # the pipe stays open: it is the child's lifeline
        return job

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def send(self, message: dict[str, Any]) -> None:
        """Write one message; a process that has ended (or is ending) misses it."""
        stdin = self._proc.stdin
        if stdin is None or stdin.is_closing() or self._proc.returncode is not None:
            return
        with contextlib.suppress(ConnectionError):
            stdin.write(orjson.dumps(message) + b"\n")

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """What the process writes, a message at a time, until it closes its output."""
        stdout = self._proc.stdout
        assert stdout is not None
        while line := await stdout.readline():
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # not a message (a stray print can never land here: see jobproc)
            if isinstance(message, dict):
                yield message

    async def wait(self) -> int:
        return await self._proc.wait()

    async def close(self, *, grace: float = EXIT_GRACE) -> None:
        """Close its lifeline (it stops at once), wait ``grace`` seconds, then kill it."""
        await close_children([self._proc], grace=grace)

    def kill(self) -> None:
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    def kill_after(self, seconds: float) -> None:
        """Kill it if it is still running ``seconds`` from now (a stop it did not obey)."""
        asyncio.get_running_loop().call_later(seconds, self.kill)


def exit_description(pid: int, code: int) -> str:
    """How a job's process ended, for the job's ``error``."""
    if code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    return (f"the job's process (pid {pid}) {how} before the job ended; the records it "
            "committed are kept: resume the job to go on from there")


@dataclass(slots=True, eq=False)
class Live:
    """A job with a process: what it last reported and the share it may use."""

    row: JobRow
    requested: int  # the job's own --concurrency
    share: int = 0  # requests in flight it may have now: its share of the fetch budget
    stop: str | None = None  # pause | cancel | delete | shutdown
    grace: float = 0.0  # seconds its requests in flight get, once stopped
    done: asyncio.Event = field(default_factory=asyncio.Event)
    proc: JobProcess | None = None
    stats: Statistics | None = None  # the last reported statistics
    part: dict[str, Any] | None = None  # the live part of its summary, as last reported
    ended: dict[str, Any] | None = None  # its "end" or "error" message
    event: bytes = b""  # the last progress snapshot, JSON
    previous: Statistics | None = None  # the last snapshot passed to the metrics

    def request_stop(self, grace: float) -> None:
        """Ask the job's process to stop, its requests in flight getting ``grace`` seconds;
        safe before the process runs (it is told as it starts) and after."""
        self.grace = grace
        if self.proc is not None:
            self.proc.send({"op": "stop", "grace": grace})
            self.proc.kill_after(grace + EXIT_GRACE)

    def set_share(self, share: int) -> bool:
        """A new share of the fetch budget; True if it changed."""
        if share == self.share:
            return False
        self.share = share
        if self.proc is not None:
            self.proc.send({"op": "concurrency", "limit": share})
        return True

    def hear(self, message: dict[str, Any]) -> None:
        """Take a report (or the final message) from the job's process."""
        kind = message.get("type")
        if kind in ("report", "end"):
            self.stats = Statistics(**message["stats"])
            self.part = message["summary"]
        if kind in ("end", "error"):
            self.ended = message
