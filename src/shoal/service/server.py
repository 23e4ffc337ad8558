"""``shoal serve``: the application under uvicorn, drained cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn
from fastapi import FastAPI

from shoal.client.resolver import TableResolver
from shoal.service.app import create_app, is_loopback
from shoal.service.jobs import JobManager
from shoal.service.settings import ServiceSettings


class ServiceServer(uvicorn.Server):
    """A uvicorn server that, on SIGINT/SIGTERM, first ends the live event streams and
    stops the jobs taking work, so that the connections close and the drain is short."""

    def __init__(self, config: uvicorn.Config, manager: JobManager) -> None:
        super().__init__(config)
        self.manager = manager
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # a signal handler runs between two bytecodes: touch the loop only through this
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.manager.begin_shutdown)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM start a graceful stop. Unlike uvicorn's own, the signal is not
        raised again afterwards: a drained service exits with status 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    @property
    def port(self) -> int:
        """The port actually bound (for ``--port 0``), once started."""
        for server in self.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("the server is not listening")


def build_server(settings: ServiceSettings, *, host: str, port: int,
                 sockets: list[socket.socket] | None = None,
                 resolver: TableResolver | None = None) -> ServiceServer:
    """The app and its uvicorn server (not yet started)."""
    app: FastAPI = create_app(settings, loopback=is_loopback(host), resolver=resolver)
    # httptools parses requests and frames responses in C: under 200 requests a second and
    # 1,000 event streams it costs the API process much less CPU than h11 (bench/README.md).
    # No access log: a line per request would cost more than most requests. The loop is
    # uvloop, set by run_server (loop="none": uvicorn does not pick one).
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", log_level="warning",
                            access_log=False, timeout_graceful_shutdown=int(settings.drain_grace)
                            + 5, loop="none", http="httptools", proxy_headers=False,
                            server_header=False)
    return ServiceServer(config, app.state.manager)


def listen(host: str, port: int) -> socket.socket:
    """A bound socket for ``host:port``.

    Raises:
        OSError: the address cannot be bound (in use, not local, ...).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)  # connections wait in the backlog until the app is up
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def run_server(server: ServiceServer, sock: socket.socket) -> bool:
    """Serve on ``sock`` until SIGINT/SIGTERM (uvloop when present); False if the
    application failed to start."""
    from shoal._runtime import loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(server.serve(sockets=[sock]))
    return server.started
