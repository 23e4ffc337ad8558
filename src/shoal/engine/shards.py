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

A follower reads its job from standard input and keeps the pipe open as its lifeline, as
``engine.child`` describes: end of file means the leader is gone (even SIGKILLed), and the
follower stops at once; SIGINT is the leader's business; SIGTERM is handled like the
leader handles SIGINT: the first finishes requests in flight, a second stops at once.
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
from shoal.engine.child import child_signals, close_children, on_sigterm, open_lifeline, spawn

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
            proc = await spawn("shoal.engine.shards", stdout=asyncio.subprocess.DEVNULL)
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
        await close_children(self._procs, grace=grace)


async def _follow(spec: FollowerSpec) -> int:
    from shoal.engine.engine import Engine
    from shoal.store.sqlite import SqliteStore

    current = asyncio.current_task()
    assert current is not None
    main_task: asyncio.Task[object] = current
    store = SqliteStore(spec.state, lock=False)  # the leader holds the run's lock
    engine = Engine(spec.config, store, None, shard=spec.shard)
    # the leader gone: stop now, the state is consistent
    lifeline = await open_lifeline(main_task.cancel)
    remove = on_sigterm(engine.request_stop, main_task.cancel)
    try:
        await store.open()
        result = await engine.run(None)
        code = 130 if result.interrupted else 0
    except asyncio.CancelledError:
        code = 130
    finally:
        remove()
        lifeline.close()
    await store.close()
    return code


def main() -> None:
    child_signals()  # before anything else: asked to stop while starting, stop at once
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
