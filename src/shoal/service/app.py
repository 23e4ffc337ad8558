"""The service's HTTP API (FastAPI): jobs, records, exports, live events, health, metrics.

``create_app`` builds the application; its lifespan opens the service database and runs
the ``JobManager``, which owns every job's engine. Errors are JSON: ``{"detail": ...}``
(a 422 lists each bad field by its location and adds ``message``, one line naming it).
"""


import asyncio
import contextlib
import ipaddress
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal import __version__
from shoal.client.resolver import TableResolver
from shoal.errors import ConfigError, ErrorKind, StoreError
from shoal.service.jobdb import JobRow
from shoal.service.jobs import JobError, JobManager
from shoal.service.metrics import Metrics
from shoal.service.models import CrawlJob, FetchJob, FetchOptions, JobRequest
from shoal.service.records import RecordFilter, stream_export
from shoal.service.settings import ServiceSettings
from shoal.service.tokens import open_tokens

JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$", description="the job's id")]
StatusClass = Literal["1xx", "2xx", "3xx", "4xx", "5xx", "none"]
ERROR_KIND = "^(" + "|".join([*(k.value for k in ErrorKind), "none"]) + ")$"

AUTH_TTL = 1.0  # seconds a token check is remembered
AUTH_CACHE = 1_000  # tokens remembered at most

bearer = HTTPBearer(auto_error=False, description="A token from `shoal token create`.")


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the service on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's id ('' when the service is open) and what it may do."""

    token: str
    read_only: bool


class Timing:
    """ASGI middleware: every API request's latency (to the start of its response), by
    method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()
        answered: float | None = None  # when the headers went out

        async def send_status(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                answered = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # time to the response's start: an event stream's length is not its latency
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            end = answered if answered is not None else time.perf_counter()
            self.metrics.observe_request(scope["method"], template, status, end - started)


class JobList(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: int | None


class RecordPage(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: int
    has_more: bool


def create_app(settings: ServiceSettings, *, loopback: bool = True,
               resolver: TableResolver | None = None) -> FastAPI:
    """The application. ``loopback``: it listens on loopback only, so with no token
    configured it is open; on any other address every request needs a token."""
    metrics = Metrics()
    tokens = open_tokens(settings.db, schema=settings.schema)  # creates the tables
    manager = JobManager(settings, metrics, resolver=resolver)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with manager:
                yield
        finally:
            await asyncio.to_thread(tokens.close)

    # no /docs or /redoc: FastAPI's pages load their scripts from a CDN
    app = FastAPI(title="shoal", version=__version__, lifespan=lifespan,
                  max_body_size=settings.max_body, docs_url=None, redoc_url=None,
                  description="The shoal crawl service: jobs, records, live progress.")
    app.state.manager = manager
    app.state.tokens = tokens
    app.state.metrics = metrics
    app.add_middleware(Timing, metrics=metrics)

    # -- errors -----------------------------------------------------------------------------
    @app.exception_handler(JobError)
    async def job_error(request: Request, exc: JobError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        # the database is unreachable or failing: not the client's fault, nor a crash
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        loc = [str(p) for p in first["loc"]]
        where = ".".join(p for p in loc if p not in ("body", "query", "path")) or (
            loc[0] if loc else "request")
        return JSONResponse({"detail": errors, "message": f"{where}: "
                                                          f"{first['msg']}"}, status_code=422)

    # -- access -----------------------------------------------------------------------------
    # Known tokens and the token count are remembered for AUTH_TTL seconds: a lookup is
    # a thread hop, a cached answer is free. So a revoked token stops working within
    # AUTH_TTL. Unknown tokens are never cached.
    known: dict[str, tuple[float, Principal]] = {}
    count: list[float] = [0.0, 0.0]  # [expires, active tokens]

    async def principal(creds: Annotated[HTTPAuthorizationCredentials | None,
                                         Depends(bearer)]) -> Principal:
        now = time.monotonic()
        if creds is not None:
            hit = known.get(creds.credentials)
            if hit is not None and hit[0] > now:
                return hit[1]
            info = await asyncio.to_thread(tokens.verify, creds.credentials)
            if info is not None:
                if len(known) >= AUTH_CACHE:
                    known.clear()
                who = known[creds.credentials] = (now + AUTH_TTL,
                                                  Principal(info.id, info.read_only))
                return who[1]
            known.pop(creds.credentials, None)
            raise HTTPException(401, "unknown or revoked token",
                                headers={"WWW-Authenticate": "Bearer"})
        if count[0] <= now:
            count[:] = [now + AUTH_TTL, await asyncio.to_thread(tokens.count_active)]
        if loopback and count[1] == 0:
            return Principal("", False)  # no tokens configured, loopback only: open
        raise HTTPException(401, "a bearer token is required (shoal token create)",
                            headers={"WWW-Authenticate": "Bearer"})

    async def writer(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if who.read_only:
            raise HTTPException(403, "this token is read-only: it can watch, not change jobs")
        return who

    Reader = Annotated[Principal, Depends(principal)]
    Writer = Annotated[Principal, Depends(writer)]

    async def job_row(job_id: JobId, who: Reader) -> JobRow:
        row = await manager.get(job_id)
        if row is None:
            raise HTTPException(404, f"no job {job_id}")
        return row

    Job = Annotated[JobRow, Depends(job_row)]

    # -- health and metrics -----------------------------------------------------------------
    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"], responses={503: {"description": "not ready"}})
    async def readyz(who: Reader) -> JSONResponse:
        """Readiness: the job runner is up and the service is not shutting down."""
        if manager.ready.is_set() and not manager.stopping:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics", tags=["service"], response_class=Response)
    async def get_metrics(who: Reader) -> Response:
        """Prometheus exposition."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    # -- jobs -------------------------------------------------------------------------------
    def check_options(job: FetchJob | CrawlJob) -> None:
        try:
            job.options.config(allow_net=settings.allow_net)
            if isinstance(job, CrawlJob):
                job.options.crawl_options()
        except ConfigError as exc:
            raise _invalid(["body", "options"], str(exc)) from exc

    async def write_urls(job_id: str, lines: list[str]) -> None:
        def write() -> None:
            os.makedirs(manager.job_dir(job_id), exist_ok=True)
            with open(manager.urls_path(job_id), "w", encoding="utf-8") as fh:
                fh.writelines(u + "\n" for u in lines)

        await asyncio.to_thread(write)

    @app.post("/v1/jobs", status_code=201, tags=["jobs"],
              responses={409: {}, 413: {}, 429: {}, 503: {}})
    async def create_job(job: Annotated[JobRequest, Body()], who: Writer) -> dict[str, Any]:
        """Start a fetch job (``urls``) or a crawl job (``seeds``) with CLI options."""
        check_options(job)
        await manager.check_quota(who.token)
        job_id = manager.new_id()
        spec: dict[str, Any] = {"options": job.options.model_dump()}
        if isinstance(job, FetchJob):
            if len(job.urls) > settings.max_urls_per_job:
                raise _invalid(["body", "urls"], f"at most {settings.max_urls_per_job} URLs "
                                                 "per job")
            await write_urls(job_id, job.urls)
            count = len(job.urls)
        else:
            pages = job.options.max_pages
            if pages is not None and pages > settings.max_urls_per_job:
                raise _invalid(["body", "options", "max_pages"],
                               f"at most {settings.max_urls_per_job} pages per job")
            if pages is None:
                spec["options"]["max_pages"] = settings.max_urls_per_job
            spec["seeds"] = job.seeds
            count = len(job.seeds)
        try:
            row = await manager.create(job_id=job_id, kind=job.kind, spec=spec,
                                       token=who.token, urls=count)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, manager.job_dir(job_id), True)
            raise
        return manager.summary(row)

    @app.post("/v1/jobs/upload", status_code=201, tags=["jobs"],
              max_body_size=settings.max_upload,
              responses={409: {}, 413: {}, 429: {}, 503: {}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "text/plain": {"schema": {"type": "string"}}}}})
    async def upload_job(request: Request, options: Annotated[FetchOptions, Query()],
                         who: Writer) -> dict[str, Any]:
        """Start a fetch job from a file of URLs (one per line) sent as the request body,
        streamed to disk; the options are query parameters."""
        fetch = FetchJob(kind="fetch", urls=["-"], options=options)
        check_options(fetch)
        await manager.check_quota(who.token)
        job_id = manager.new_id()
        path = manager.urls_path(job_id)
        await asyncio.to_thread(os.makedirs, manager.job_dir(job_id), exist_ok=True)
        lines = 0
        ok = False
        fh = await asyncio.to_thread(open, path, "wb")
        try:
            last = b"\n"
            async for chunk in request.stream():
                if not chunk:
                    continue
                lines += chunk.count(b"\n")
                last = chunk[-1:]
                if lines > settings.max_urls_per_job:
                    raise _invalid(["body"], f"at most {settings.max_urls_per_job} URLs per job")
                await asyncio.to_thread(fh.write, chunk)
            if last != b"\n":
                lines += 1
                await asyncio.to_thread(fh.write, b"\n")
            if lines == 0:
                raise _invalid(["body"], "the file holds no URLs")
            if lines > settings.max_urls_per_job:
                raise _invalid(["body"], f"at most {settings.max_urls_per_job} URLs per job")
            ok = True
        finally:
            await asyncio.to_thread(fh.close)
            if not ok:
                await asyncio.to_thread(shutil.rmtree, manager.job_dir(job_id), True)
        spec = {"options": options.model_dump()}
        try:
            row = await manager.create(job_id=job_id, kind="fetch", spec=spec,
                                       token=who.token, urls=lines)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, manager.job_dir(job_id), True)
            raise
        return manager.summary(row)

    @app.get("/v1/jobs", tags=["jobs"])
    async def list_jobs(who: Reader,
                        limit: Annotated[int, Query(ge=1, le=500)] = 50,
                        cursor: Annotated[int | None, Query(ge=0, le=1 << 62)] = None
                        ) -> JobList:
        """Jobs, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""
        rows = await manager.db.page(cursor, limit)
        items = [manager.summary(manager.current(r)) for r in rows]
        for item in items:
            item.pop("hosts", None)
            item.pop("latest", None)
        return JobList(items=items, next_cursor=rows[-1].seq if len(rows) == limit else None)

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], responses={404: {}})
    async def get_job(row: Job) -> dict[str, Any]:
        """State, counts, rates, errors by kind, per-host summary, latest records."""
        return manager.summary(row)

    @app.post("/v1/jobs/{job_id}/pause", tags=["jobs"], responses={404: {}, 409: {}})
    async def pause_job(job_id: JobId, who: Writer) -> dict[str, Any]:
        """Finish the requests in flight and stop; the job keeps its state."""
        return manager.summary(await manager.pause(job_id))

    @app.post("/v1/jobs/{job_id}/resume", tags=["jobs"],
              responses={404: {}, 409: {}, 429: {}})
    async def resume_job(job_id: JobId, who: Writer) -> dict[str, Any]:
        """Queue a paused job again; it continues where it stopped."""
        return manager.summary(await manager.resume(job_id))

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"], responses={404: {}, 409: {}})
    async def cancel_job(job_id: JobId, who: Writer) -> dict[str, Any]:
        """Stop at once; records committed so far stay available."""
        return manager.summary(await manager.cancel(job_id))

    @app.delete("/v1/jobs/{job_id}", status_code=204, tags=["jobs"], responses={404: {}})
    async def delete_job(job_id: JobId, who: Writer) -> Response:
        """Cancel the job if it runs and delete it with its records."""
        await manager.delete(job_id)
        return Response(status_code=204)

    @app.get("/v1/jobs/{job_id}/records", tags=["records"], responses={404: {}})
    async def get_records(
            row: Job,
            cursor: Annotated[int, Query(ge=0, le=1 << 62)] = 0,
            limit: Annotated[int, Query(ge=1, le=1000)] = 100,
            status_class: StatusClass | None = None,
            error_kind: Annotated[str | None, Query(pattern=ERROR_KIND)] = None,
            host: Annotated[str | None, Query(max_length=2000)] = None) -> Response:
        """Records in output order (the CLI's output objects), filtered; follow
        ``next_cursor`` while ``has_more``."""
        filt = RecordFilter(status_class=status_class, error_kind=error_kind, host=host)
        lines, nxt, more = await manager.records(row.id).page(cursor, limit, filt)
        body = (b'{"items":[' + b",".join(lines) + b'],"next_cursor":' + str(nxt).encode()
                + b',"has_more":' + (b"true" if more else b"false") + b"}")
        return Response(body, media_type="application/json")

    @app.get("/v1/jobs/{job_id}/export", tags=["records"], responses={404: {}},
             response_class=StreamingResponse)
    async def export(row: Job, format: Literal["jsonl", "csv"] = "jsonl"
                     ) -> StreamingResponse:
        """Every record committed so far, streamed (never built in memory)."""
        media = "application/x-ndjson" if format == "jsonl" else "text/csv; charset=utf-8"
        return StreamingResponse(
            stream_export(manager.records(row.id), format), media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{row.id}.{format}"'})

    @app.get("/v1/jobs/{job_id}/events", tags=["records"], responses={404: {}},
             response_class=StreamingResponse)
    async def events(row: Job) -> StreamingResponse:
        """Server-Sent Events: the job's summary about once a second until it ends."""
        job_id = row.id

        async def stream() -> AsyncIterator[bytes]:
            # the same bytes for every watcher of the job, made once a tick (manager.event);
            # this stream writes them at its slot's turn, once a tick (service.ticker)
            slot = manager.ticker.slot()
            while True:
                event = await manager.event(job_id)
                if event is None:
                    yield b"event: deleted\ndata: {}\n\n"
                    return
                data, final = event
                yield b"data: " + data + b"\n\n"
                if final or not await manager.ticker.wait(slot):
                    return

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    # -- dashboard --------------------------------------------------------------------------
    static = resources.files("shoal.service") / "dashboard"

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(str(static / "index.html"))

    app.mount("/dashboard", StaticFiles(directory=str(static)), name="dashboard")
    return app


def _invalid(loc: list[str], message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": tuple(loc), "msg": message, "type": "value_error"}])

