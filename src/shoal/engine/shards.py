"""``--workers N``: one run spread over N processes, each owning a disjoint share of hosts.

The leader (the process the user started, shard 0) loads the input, fetches its own hosts
and writes the output; N - 1 followers (``python -m shoal.engine.shards``, one per other
shard) fetch theirs. They share nothing but the state database: each takes only the
pending URLs of its hosts, commits their records there (record seqs are assigned inside
each write transaction, so they rise in commit order across processes), and the leader
appends every committed record to the output in seq order, as a resume would. So the
crash story is the single-process one: the database is the truth and a rerun picks up
whatever has no record, whichever process had it.

Hosts never move between processes, so each host's politeness (per-host limit, delay,
robots.txt, Retry-After) is kept by exactly one scheduler; only a redirect to a host of
another shard is followed by the process that owns the original URL.

A follower reads its job from standard input and keeps the pipe open: end of file means
the leader is gone (even SIGKILLed), and the follower stops at once. It ignores SIGINT (a
terminal's Ctrl-C reaches the whole process group; the leader decides) and treats SIGTERM
like the leader treats SIGINT: the first finishes requests in flight, a second stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import signal
import struct
import sys
import zlib
from dataclasses import dataclass

from shoal.config import Config

FOLLOWER_EXIT_GRACE = 10.0  # seconds followers get to finish after the leader's stop


@dataclass(frozen=True, slots=True)
class Shard:
    """This process's share of the hosts: those with ``shard_of(host, count) == index``."""

    index: int
    count: int

    def owns(self, host: str) -> bool:
        return shard_of(host, self.count) == self.index


def shard_of(host: str, count: int) -> int:
    """Which of ``count`` shards a host key belongs to (stable across processes and runs)."""
    return zlib.crc32(host.encode()) % count if count > 1 else 0


@dataclass(frozen=True, slots=True)
class FollowerSpec:
    """What a follower process needs: the run's config and where its state lives."""

    config: Config
    state: str  # an SQLite path
    shard: Shard


class Followers:
    """The follower processes of a leader: started, signalled, awaited."""

    def __init__(self) -> None:
        self._procs: list[asyncio.subprocess.Process] = []
        self._stopping = False

    async def start(self, config: Config, state: str, count: int) -> None:
        for index in range(1, count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shoal.engine.shards",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
            self._procs.append(proc)
            payload = pickle.dumps(FollowerSpec(config, state, Shard(index, count)))
            assert proc.stdin is not None
            proc.stdin.write(struct.pack("!I", len(payload)) + payload)
            await proc.stdin.drain()  # the pipe stays open: it is the follower's lifeline

    def failed(self) -> str | None:
        """A description of the first follower that exited with an error, if any."""
        # a follower that had not yet set up its handlers when asked to stop dies of it
        stopped = (None, 0, 130, -signal.SIGTERM) if self._stopping else (None, 0, 130)
        for i, proc in enumerate(self._procs, start=1):
            code = proc.returncode
            if code not in stopped:
                return f"worker process {i} (pid {proc.pid}) exited with code {code}"
        return None

    @property
    def running(self) -> bool:
        return any(p.returncode is None for p in self._procs)

    def stop(self) -> None:
        """Ask every follower to finish requests in flight and exit (a second call: at once)."""
        self._stopping = True
        for proc in self._procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)

    async def wait(self) -> None:
        """Until every follower has exited."""
        for proc in self._procs:
            await proc.wait()

    async def close(self, *, grace: float = FOLLOWER_EXIT_GRACE) -> None:
        """Make sure no follower outlives the leader: close the lifelines, wait ``grace``
        seconds, then kill what is left."""
        for proc in self._procs:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
        try:
            async with asyncio.timeout(grace):
                await self.wait()
        except TimeoutError:
            for proc in self._procs:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await self.wait()


async def _follow(spec: FollowerSpec) -> int:
    from shoal.engine.engine import Engine
    from shoal.store.sqlite import SqliteStore

    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    assert current is not None
    main_task: asyncio.Task[object] = current
    store = SqliteStore(spec.state, lock=False)  # the leader holds the run's lock
    engine = Engine(spec.config, store, None, shard=spec.shard)
    terms = 0

    def on_term() -> None:
        nonlocal terms
        terms += 1
        if terms == 1:
            engine.request_stop()
        else:
            main_task.cancel()

    running = True

    class Lifeline(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            if running:
                main_task.cancel()  # the leader is gone: stop now, the state is consistent

    transport, _ = await loop.connect_read_pipe(Lifeline, sys.stdin)
    loop.add_signal_handler(signal.SIGTERM, on_term)
    if _terms_before_loop:
        on_term()
    try:
        await store.open()
        result = await engine.run(None)
        code = 130 if result.interrupted else 0
    except asyncio.CancelledError:
        code = 130
    finally:
        running = False
        loop.remove_signal_handler(signal.SIGTERM)
        transport.close()
    await store.close()
    return code


_terms_before_loop = 0


def _early_term(signum: int, frame: object) -> None:
    global _terms_before_loop
    _terms_before_loop += 1


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the leader decides what Ctrl-C means
    signal.signal(signal.SIGTERM, _early_term)  # asked to stop while starting: stop at once
    from shoal._runtime import run, tune_gc, tune_malloc

    header = sys.stdin.buffer.read(4)
    if len(header) < 4:
        sys.exit(130)  # the leader went away before handing over the job
    (size,) = struct.unpack("!I", header)
    spec = pickle.loads(sys.stdin.buffer.read(size))
    if not isinstance(spec, FollowerSpec):
        raise TypeError(f"expected a FollowerSpec, got {type(spec).__name__}")
    tune_malloc()
    tune_gc()
    sys.exit(run(lambda: _follow(spec)))


if __name__ == "__main__":
    # run as a module this file is __main__: use the importable copy, whose classes are
    # the ones the leader pickled
    from shoal.engine.shards import main as _main

    _main()
