"""``shoal serve``: the crawl service (HTTP API, dashboard, metrics)."""

from __future__ import annotations

import click

from shoal.cli.common import ByteSize, display, fail
from shoal.cli.token import token_store
from shoal.errors import UsageError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs a token configured.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port to listen on.")
@click.option("--db", metavar="PATH_OR_URL", default="shoal-service.db", show_default=True,
              help="The service database (tokens and jobs): a path (each job's records "
                   "in PATH.jobs/<id>/state.db) or postgresql://... (tokens and jobs in "
                   "the schema shoal-service, each job's records in shoal_svc_<id>).")
@click.option("--jobs-dir", metavar="DIR", default=None,
              help="Where each job's URL file lives [default: PATH.jobs beside a SQLite "
                   "--db, ./shoal-service.jobs with PostgreSQL].")
@click.option("--allow-net", multiple=True, metavar="CIDR",
              help="Networks the private-network guard lets jobs reach (repeatable); "
                   "everything non-public is refused otherwise.")
@click.option("--max-running", type=int, default=8, show_default=True,
              help="Jobs running at once; more wait in the queue.")
@click.option("--concurrency", type=int, default=200, show_default=True,
              help="Requests in flight of all running jobs together, shared fairly among "
                   "them (each gets at most its own concurrency; what one leaves goes to "
                   "the others).")
@click.option("--max-jobs-per-token", type=int, default=4, show_default=True,
              help="Queued or running jobs one token may have.")
@click.option("--max-urls-per-job", type=int, default=1_000_000, show_default=True,
              help="URLs of a fetch job, pages of a crawl job, at most.")
@click.option("--max-upload", type=ByteSize(), default="256M", show_default=True,
              help="Largest uploaded URL file.")
def serve(host: str, port: int, db: str, jobs_dir: str | None, allow_net: tuple[str, ...],
          max_running: int, concurrency: int, max_jobs_per_token: int,
          max_urls_per_job: int, max_upload: int) -> None:
    """Run the crawl service: HTTP API, live dashboard and metrics (see README "Service").

    Jobs are kept in the service database; a job running when the service stops (SIGINT,
    SIGTERM) resumes when it starts again.
    """
    from shoal.service.app import is_loopback
    from shoal.service.server import build_server, listen, run_server
    from shoal.service.settings import ServiceSettings

    if not 0 <= port <= 65535:
        fail(f"--port must be between 0 and 65535, got {port}")
    try:
        settings = ServiceSettings(db=db, jobs_root=jobs_dir, allow_net=allow_net,
                                   max_running=max_running, concurrency=concurrency,
                                   max_jobs_per_token=max_jobs_per_token,
                                   max_urls_per_job=max_urls_per_job, max_upload=max_upload)
    except UsageError as exc:
        fail(str(exc))
    store = token_store(settings.db, create=True)
    with store:
        active = store.count_active()
    if not is_loopback(host) and active == 0:
        fail(f"refusing to listen on {host} (not loopback) with no API token configured: "
             f"create one first with 'shoal token create --db "
             f"{display(settings.db) if settings.postgres else settings.db}'")
    try:
        sock = listen(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    server = build_server(settings, host=host, port=port)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"shoal: serving on http://{shown}:{sock.getsockname()[1]}/ "
               f"(dashboard at /, API at /v1, schema at /openapi.json); "
               f"{'tokens required' if active else 'open: no tokens configured'}", err=True)
    from shoal._runtime import tune_gc, tune_malloc

    tune_malloc()
    tune_gc()  # the service owns its process, as the other commands do
    with sock:
        started = run_server(server, sock)
    if not started:
        fail("the service did not start (see the messages above)")
    click.echo("shoal: service stopped; running jobs resume at the next start", err=True)
