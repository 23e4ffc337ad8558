"""Many watchers of one job: the same event bytes for all, made once a tick; the
streams spread over the tick; the HTTP parser the service runs with."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.servers import site
from tests.service.conftest import Backend
from tests.service.harness import Service, service
from tests.service.test_lifecycle import gated_routes

pytestmark = pytest.mark.timeout(60)

TICK = 0.5
WATCHERS = 40


async def watch(svc: Service, job_id: str, n: int, got: list[tuple[float, bytes]],
                first: asyncio.Event | None = None) -> None:
    """Follow the job's event stream on a connection of its own: the arrival time and
    the data of each event, until ``n`` events or the end of the stream."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(svc.base.rsplit(":", 1)[1]))
    try:
        writer.write(f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        while len(got) < n:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)  # chunked, as HTTP/1.1
            if size == 0:
                return  # the service ended the stream
            chunk = (await reader.readexactly(size + 2))[:-2]
            assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n"), chunk
            got.append((time.monotonic(), chunk[6:-2]))
            if first is not None:
                first.set()
    finally:
        writer.close()


async def test_every_watcher_of_a_job_gets_the_same_events(tmp_path: Path) -> None:
    gate = asyncio.Event()
    async with site(gated_routes(gate, 4)) as srv, \
            service(tmp_path, tick=TICK) as svc:
        job = await svc.start_job({"kind": "fetch", "options": {"no_robots": True},
                                   "urls": [srv.url(f"/{i}") for i in range(4)]})
        await svc.wait_job(job["id"], {"running"})
        started = time.monotonic()
        streams: list[list[tuple[float, bytes]]] = [[] for _ in range(WATCHERS)]
        async with asyncio.TaskGroup() as tg:
            for got in streams:
                tg.create_task(watch(svc, job["id"], 4, got))
        elapsed = time.monotonic() - started
        events = [data for got in streams for _, data in got]
        assert len(events) == 4 * WATCHERS
        assert {orjson.loads(e)["id"] for e in events} == {job["id"]}
        # one event per report of the job's process (one a tick), each sent to many
        # watchers as the same bytes: far fewer distinct events than events sent
        shared = Counter(events)
        assert len(shared) <= elapsed / TICK + 2, (len(shared), elapsed)
        assert max(shared.values()) >= WATCHERS / 2
        # after its first event (at once), each stream gets one a tick...
        for got in streams:
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(got[1:])]
            assert all(TICK * 0.6 < g < TICK * 1.6 for g in gaps), gaps
        # ... at its own phase: the streams' turns are spread over the tick
        phases = sorted(got[2][0] for got in streams)
        assert phases[-1] - phases[0] > TICK / 2, phases
        gate.set()
        await svc.wait_job(job["id"])


async def test_watchers_of_a_queued_job_share_its_event(tmp_path: Path, backend: Backend
                                                        ) -> None:
    """A job without a process (queued here) has its event read from the database,
    once for all its watchers; all get its last event when it is cancelled."""
    gate = asyncio.Event()
    async with site(gated_routes(gate, 2)) as srv, \
            service(tmp_path, tick=TICK, max_running=1, concurrency=4,
                    **backend.kw()) as svc:
        opts: dict[str, Any] = {"no_robots": True}
        running = await svc.start_job({"kind": "fetch", "options": opts,
                                       "urls": [srv.url("/0"), srv.url("/1")]})
        await svc.wait_job(running["id"], {"running"})
        queued = await svc.start_job({"kind": "fetch", "options": opts,
                                      "urls": [srv.url("/0")]})
        reads = 0
        get = svc.manager.db.get

        async def counted(job_id: str) -> Any:  # the real read, counted
            nonlocal reads
            reads += 1
            return await get(job_id)

        svc.manager.db.get = counted  # type: ignore[method-assign]
        streams: list[list[tuple[float, bytes]]] = [[] for _ in range(WATCHERS)]
        async with asyncio.TaskGroup() as tg:
            for got in streams:
                tg.create_task(watch(svc, queued["id"], 3, got))
        events = [orjson.loads(data) for got in streams for _, data in got]
        assert len(events) == 3 * WATCHERS
        assert {e["state"] for e in events} == {"queued"}
        # each watcher's GET looks the job up once; its events are read about twice a tick
        assert reads <= WATCHERS + 20, reads

        ended: list[list[tuple[float, bytes]]] = [[] for _ in range(WATCHERS)]
        async with asyncio.TaskGroup() as tg:
            firsts = [asyncio.Event() for _ in ended]
            for got, first in zip(ended, firsts, strict=True):
                tg.create_task(watch(svc, queued["id"], 100, got, first))
            for first in firsts:
                await first.wait()
            await svc.call("POST", f"/v1/jobs/{queued['id']}/cancel", expect=200)
        # every stream ended (the task group returned) with the job's last state
        assert all(orjson.loads(got[-1][1])["state"] == "cancelled" for got in ended)
        gate.set()
        await svc.wait_job(running["id"])


async def test_the_service_parses_http_with_httptools(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        assert (await svc.call("GET", "/healthz"))[0] == 200
        protocol = svc.server.config.http_protocol_class
        assert protocol.__module__ == "uvicorn.protocols.http.httptools_impl"
