"""The ``shoal`` command: flags -> Config, run, exit 0 / 2 / 130. No logic of its own."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from shoal import __version__
from shoal._signals import defer_signals, exit_on_signals
from shoal.config import DEFAULT_USER_AGENT, Config, CrawlOptions, RetryPolicy
from shoal.errors import OutputError, ShoalError, StoreError, UsageError, WorkerError

if TYPE_CHECKING:
    from shoal.extract.router import Router
    from shoal.recrawl import Previous
    from shoal.service.tokens import Tokens
    from shoal.warc import WarcWriter

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


def fetch_options(f: Any) -> Any:
    """The flags every fetching command takes (fetch now, crawl later)."""
    opts = [
        click.option("-o", "--output", "output", metavar="OUT.jsonl", default=None,
                     help="Write one JSON record per line here (default: standard output)."),
        click.option("--state", metavar="PATH", default=None,
                     help="State database (SQLite). Default: OUT.jsonl.state.db beside the "
                          "output; a temporary file when writing to standard output."),
        click.option("--db", metavar="PATH_OR_URL", default=None,
                     help="State database: an SQLite path (or sqlite:///path), or "
                          "postgresql://... to keep the run in PostgreSQL (see --job)."),
        click.option("--job", metavar="NAME", default=None,
                     help="With a PostgreSQL --db: the run's name there (default: derived "
                          "from the input)."),
        click.option("--lease", type=float, default=None, metavar="S",
                     help="With a PostgreSQL --db: seconds this process's claims stay its own "
                          "without a heartbeat (default: --timeout + 30)."),
        click.option("--host-turn", type=float, default=20.0, metavar="S",
                     help="With a PostgreSQL --db: seconds this process keeps a host before "
                          "offering it to the workers.  [default: 20]"),
        click.option("--fresh", is_flag=True,
                     help="Forget any earlier run in the state database and start over."),
        click.option("--concurrency", type=int, default=100, show_default=True,
                     help="Requests in flight at most, over all hosts."),
        click.option("--per-host", type=int, default=2, show_default=True,
                     help="Requests in flight at most to one host."),
        click.option("--delay", type=float, default=0.0, show_default=True,
                     help="Minimum seconds between two request starts to one host "
                          "(robots.txt Crawl-delay may raise it)."),
        click.option("--timeout", type=float, default=30.0, show_default=True,
                     help="Seconds one attempt may take in all: connect, headers and body."),
        click.option("--retries", type=int, default=2, show_default=True,
                     help="Retries after a timeout, connection error, broken response, 5xx "
                          "or 429 (at most N+1 attempts), with exponential back-off."),
        click.option("--max-retry-after", type=float, default=30.0, show_default=True,
                     help="Longest Retry-After honoured (seconds); a server asking for more "
                          "gets the URL recorded at once with error 'http'."),
        click.option("--max-bytes", type=ByteSize(), default="10M", show_default=True,
                     help="Largest decoded body; a larger one is recorded as 'too_large'."),
        click.option("--no-robots", is_flag=True,
                     help="Do not fetch or obey robots.txt (on by default)."),
        click.option("--user-agent", default=DEFAULT_USER_AGENT, show_default=True,
                     help="User-Agent header; its first word is the robots.txt token."),
        click.option("--block-private", is_flag=True,
                     help="Refuse loopback, private, link-local and other non-public "
                          "addresses (checked after DNS); allowed by default in the CLI."),
        click.option("--allow-net", multiple=True, metavar="CIDR",
                     help="With --block-private: networks still allowed (repeatable)."),
        click.option("--extract", "extract", multiple=True, metavar="NAME=SELECTOR[@ATTR]",
                     help="Extract an item from each HTML page: field NAME is the text of "
                          "the first element SELECTOR matches, or its attribute ATTR "
                          "(repeatable). Items go to the state; see `shoal export --items`."),
        click.option("--extract-jsonld", is_flag=True,
                     help="Add the page's JSON-LD objects to its item (field `jsonld`)."),
        click.option("--warc", metavar="FILE.warc.gz", default=None,
                     help="Also archive every response (and its request) as WARC 1.1, "
                          "payloads as received; rolls over to FILE-00001.warc.gz ..."),
        click.option("--warc-max-size", type=ByteSize(), default="1G", show_default=True,
                     help="With --warc: start the next file once one passes this size."),
        click.option("--since", metavar="PREVIOUS_STATE", default=None,
                     help="Recrawl against an earlier run's state database: send its ETag "
                          "and Last-Modified (304 answers are recorded unchanged) and mark "
                          "each record `changed`."),
        click.option("-q", "--quiet", is_flag=True,
                     help="No live display; a short progress line on stderr every few "
                          "seconds instead."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def build_config(**kw: Any) -> Config:
    """Config from the command-line values; raises ConfigError naming the flag."""
    return Config(
        concurrency=kw["concurrency"], per_host=kw["per_host"], delay=kw["delay"],
        timeout=kw["timeout"],
        retry=RetryPolicy(retries=kw["retries"], max_retry_after=kw["max_retry_after"]),
        max_bytes=kw["max_bytes"], robots=not kw["no_robots"], user_agent=kw["user_agent"],
        block_private=kw["block_private"], allow_net=tuple(kw["allow_net"]),
        workers=kw.get("workers", 1),
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="shoal")
def cli() -> None:
    """shoal: a fast, polite, crash-safe web fetcher and crawler.

    Every run keeps its state in a database, so re-running the same command after a
    crash or Ctrl-C resumes where it stopped, with exactly one record per URL.
    """


@cli.command()
@click.argument("input", metavar="INPUT")
@fetch_options
@click.option("--workers", type=int, default=1, show_default=True,
              help="Processes to fetch with, each owning a share of the hosts (use one "
                   "per CPU core; the per-host limits hold as each host has one owner).")
def fetch(input: str, **kw: Any) -> None:
    """Fetch every URL in INPUT (a file, one URL per line, or - for standard input).

    Writes one JSON object per distinct URL. Failed URLs are records too (their
    `error` says why); the exit code is 0 when the run completed, 2 for a usage error,
    130 when interrupted (re-run the same command to resume).
    """
    from shoal.engine.source import FileSource, LineSource

    config = _config_or_exit(kw)
    try:
        source = LineSource() if input == "-" else FileSource(input)
    except UsageError as exc:
        _fail(str(exc))
    if input != "-":
        for flag, path in (("--output", kw.get("output")), ("--state", kw.get("state")),
                           ("--db", kw.get("db"))):
            if path and path != "-" and "://" not in path and _same_file(path, input):
                _fail(f"{flag} {path!r} is the input file; it would be overwritten")
    sys.exit(_run_job(config, source, kw))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@cli.command()
@click.argument("seeds", metavar="SEED...", nargs=-1, required=True)
@click.option("--max-pages", type=int, default=None,
              help="Stop after this many records in all (exactly this many when that many "
                   "pages are reachable).")
@click.option("--max-depth", type=int, default=None,
              help="Follow links up to this depth (seeds are depth 0). Default: no limit.")
@click.option("--scope", type=click.Choice(["host", "domain", "any"]), default="host",
              show_default=True,
              help="Follow links on the seeds' hosts, their registrable domains, or anywhere.")
@click.option("--include", multiple=True, metavar="REGEX",
              help="Follow only URLs matching one of these (repeatable).")
@click.option("--exclude", multiple=True, metavar="REGEX",
              help="Never follow URLs matching any of these (repeatable).")
@click.option("--sitemaps", is_flag=True,
              help="Also seed from robots.txt Sitemap lines and /sitemap.xml, within scope.")
@click.option("--max-pages-per-host", type=int, default=None,
              help="At most this many records per host (contains link traps).")
@fetch_options
def crawl(seeds: tuple[str, ...], max_pages: int | None, max_depth: int | None, scope: str,
          include: tuple[str, ...], exclude: tuple[str, ...], sitemaps: bool,
          max_pages_per_host: int | None, **kw: Any) -> None:
    """Crawl from SEED URLs, following links in scope; one record per page, each once.

    Records carry `depth` (0 for seeds) and `parent` (the page where the link was first
    found). Exit codes as for `fetch`; re-run the same command to resume.
    """
    from shoal.api import seeds_name
    from shoal.config import CrawlOptions
    from shoal.engine.source import LineSource

    config = _config_or_exit(kw)
    try:
        options = CrawlOptions(max_pages=max_pages, max_depth=max_depth, scope=scope,
                               include=include, exclude=exclude, sitemaps=sitemaps,
                               max_pages_per_host=max_pages_per_host)
    except UsageError as exc:
        _fail(str(exc))
    source = LineSource(list(seeds), name=seeds_name(list(seeds)))
    sys.exit(_run_job(config, source, kw, crawl=options, seeds=list(seeds)))


@cli.command()
@click.argument("state", metavar="[STATE]", required=False)
@click.option("--db", metavar="PATH_OR_URL", default=None,
              help="The state instead of STATE: an SQLite path (or sqlite:///path), or "
                   "postgresql://... with --job.")
@click.option("--job", metavar="NAME", default=None,
              help="With a PostgreSQL STATE or --db: the job to export (as given to "
                   "`fetch`/`crawl --job`).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]),
              default="jsonl", show_default=True, help="Output format.")
@click.option("-o", "--output", metavar="FILE", default=None,
              help="Write here (default: standard output; parquet needs a file).")
@click.option("--items", is_flag=True,
              help="Export the extracted items (route handlers, --extract) instead of the "
                   "records.")
def export(state: str | None, db: str | None, job: str | None, fmt: str,
           output: str | None, items: bool) -> None:
    """Export a run's records or items (jsonl, csv, parquet).

    STATE is a run's state database (e.g. out.jsonl.state.db), or a PostgreSQL job as
    postgresql://user@host/db#JOB (or --db postgresql://... --job JOB). Records come in output
    order, streamed, so any size of job exports in bounded memory. jsonl is byte for byte
    the run's output; csv and parquet split `error` into error_kind and error_message.
    With --items: one row per item, in record order; csv and parquet columns are the
    items' keys in order of first appearance.
    """
    from shoal.export import export_records
    from shoal.items import export_items

    state = _export_state(state, db, job)
    where = "standard output" if output in (None, "-") else output
    try:
        count = (export_items if items else export_records)(state, fmt, output)
    except UsageError as exc:
        _fail(str(exc))
    except BrokenPipeError:  # the reader left (e.g. `| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OK)
    except OSError as exc:
        _fail(f"cannot write {where}: {exc.strerror or exc}")
    click.echo(f"shoal: exported {count} {'items' if items else 'records'} to {where}",
               err=True)


def _export_state(state: str | None, db: str | None, job: str | None) -> str:
    """The one state ``shoal export`` reads: STATE or --db, with --job after '#'."""
    if state and db:
        _fail("give STATE or --db, not both (they name the same thing)")
    state = state or _db_value(db) or _fail("name the state to export: STATE or --db")
    is_pg = state.startswith(("postgresql://", "postgres://"))
    if job is not None:
        if not is_pg:
            _fail("--job goes with a postgresql:// database")
        if "#" in state:
            _fail("the database URL names its job after '#' already: drop --job")
        state = f"{state}#{job}"
    return state


@cli.command()
@click.option("--pages", type=int, default=2000, show_default=True,
              help="Pages on the generated demo site.")
@click.option("-o", "--output", default="shoal-demo.jsonl", show_default=True,
              help="Where the records go.")
@click.option("--concurrency", type=int, default=50, show_default=True)
@click.option("-q", "--quiet", is_flag=True)
def demo(pages: int, output: str, concurrency: int, quiet: bool) -> None:
    """Serve a generated demo site on 127.0.0.1 and fetch it (no internet needed)."""
    from shoal.demo.site import demo_urls, serve_demo
    from shoal.engine.source import LineSource

    config = Config(concurrency=concurrency, per_host=concurrency, timeout=10.0)
    state = output + ".state.db"

    async def main() -> int:
        async with serve_demo(pages=pages) as base:
            click.echo(f"shoal demo: serving a {pages}-page site at {base}", err=True)
            urls = demo_urls(base, count=pages)
            source = LineSource(urls, name=f"demo:{len(urls)}")
            kw = {"output": output, "state": state, "fresh": True, "quiet": quiet}
            return await _run_async(config, source, kw)

    from shoal._runtime import run

    code = run(main)
    if code == EXIT_OK:
        click.echo(f"shoal demo: records in {output} (try: head -n 3 {output})", err=True)
    sys.exit(code)


def _config_or_exit(kw: dict[str, Any]) -> Config:
    try:
        return build_config(**kw)
    except UsageError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    click.echo(f"shoal: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _db_value(db: str | None) -> str | None:
    """A --db value as a path or a postgresql:// URL (``sqlite:///path`` -> path)."""
    if db and db.startswith("sqlite:///"):
        return db[len("sqlite:///"):] or _fail("--db sqlite:/// needs a path")
    if db and "://" in db and not db.startswith(("postgresql://", "postgres://")):
        _fail(f"--db {db!r}: use a path, sqlite:///path or postgresql://...")
    return db


def _paths(kw: dict[str, Any]) -> tuple[str | None, str | None]:
    """(output path or None for stdout, state path or database URL or None)."""
    db, state = kw.get("db"), kw.get("state")
    if db and state:
        _fail("give --db or --state, not both (they name the same thing)")
    state = _db_value(db) or state
    output = kw.get("output")
    if output in (None, "-"):
        return None, state
    state = state or f"{output}.state.db"
    if os.path.isdir(output):
        _fail(f"output {output!r} is a directory")
    if "://" not in state and Path(state).resolve() == Path(output).resolve():
        _fail(f"--state {state!r} is the output file; the records would overwrite the state")
    parent = Path(output).resolve().parent
    if not parent.is_dir():
        _fail(f"cannot write output {output!r}: directory {str(parent)!r} does not exist")
    return output, state


def _job_name(source: Any, crawl: CrawlOptions | None) -> str:
    """A PostgreSQL run name from the input, so that rerunning the same command resumes."""
    import hashlib

    digest = hashlib.sha256(str(source.name).encode()).hexdigest()[:12]
    return f"{'crawl' if crawl is not None else 'fetch'}_{digest}"


def _router(kw: dict[str, Any]) -> Router | None:
    """The route of ``--extract`` / ``--extract-jsonld``, if given (exit 2 on a bad rule)."""
    from shoal.extract.router import Router
    from shoal.extract.rules import RuleHandler, parse_rules

    specs, jsonld = kw.get("extract") or (), bool(kw.get("extract_jsonld"))
    if not specs and not jsonld:
        return None
    try:
        rules = parse_rules(specs, jsonld=jsonld)
    except UsageError as exc:
        _fail(str(exc))
    router = Router()
    router.add("", RuleHandler(rules, jsonld=jsonld), follow_links=True)
    return router


async def _previous(kw: dict[str, Any], store_path: str) -> Previous | None:
    """The earlier run of ``--since`` (exit 2 when it cannot be used)."""
    from shoal.recrawl import open_previous, same_run

    spec = kw.get("since")
    if not spec:
        return None
    try:
        previous = await open_previous(spec)
    except UsageError as exc:
        _fail(str(exc))
    if same_run(previous, store_path):
        await previous.close()
        _fail(f"--since {spec!r} is this run's own state; give the state of an earlier run "
              "(and a new --state, -o or --job for this one)")
    return previous


def _warc(kw: dict[str, Any], source: Any) -> WarcWriter | None:
    """The WARC writer of ``--warc`` (exit 2 on a bad name or size)."""
    from shoal.warc import WarcWriter

    path = kw.get("warc")
    if not path:
        return None
    try:
        return WarcWriter(path, max_size=kw.get("warc_max_size") or 1024 ** 3,
                          info={"isPartOf": str(source.name)})
    except UsageError as exc:
        _fail(str(exc))


def _run_job(config: Config, source: Any, kw: dict[str, Any], *,
             crawl: CrawlOptions | None = None, seeds: list[str] | None = None) -> int:
    from shoal._runtime import run, tune_gc, tune_malloc

    tune_malloc()
    tune_gc()  # the command line owns its process; the library leaves GC alone
    return run(lambda: _run_async(config, source, kw, crawl=crawl, seeds=seeds))


async def _run_async(config: Config, source: Any, kw: dict[str, Any], *,
                     crawl: CrawlOptions | None = None, seeds: list[str] | None = None) -> int:
    from shoal.engine.engine import Engine
    from shoal.output import Output
    from shoal.progress import ProgressReporter, print_summary
    from shoal.store.base import Store
    from shoal.store.sqlite import SqliteStore

    output_path, state_path = _paths(kw)
    router = _router(kw)
    warc = _warc(kw, source)
    temp_dir = None
    store: Store
    shared = None
    if state_path is not None and state_path.startswith(("postgresql://", "postgres://")):
        from shoal.engine.engine import SharedRun
        from shoal.store.postgres import PostgresStore
        from shoal.worker import is_solo, job_meta, owner_id

        if config.workers > 1:
            _fail("--workers shares one SQLite state file; with a PostgreSQL --db, start "
                  "more shoal processes on the same --job instead")
        try:
            store = PostgresStore(state_path, name=kw.get("job") or _job_name(source, crawl))
        except UsageError as exc:
            _fail(str(exc))
        _check_shared_flags(kw.get("lease"), kw.get("host_turn", 20.0))
        if not is_solo(crawl):  # `shoal worker` processes may join it
            shared = SharedRun(owner=owner_id(None), meta=job_meta(config, crawl, seeds),
                               lease=kw.get("lease"), turn=kw.get("host_turn", 20.0))
    else:
        if state_path is None:  # standard output: the state lives only as long as the run
            temp_dir = tempfile.TemporaryDirectory(prefix="shoal-")
            state_path = os.path.join(temp_dir.name, "state.db")
        store = SqliteStore(state_path)
    previous = await _previous(kw, store.path)
    output = Output(output_path)
    quiet = bool(kw.get("quiet"))

    mode = "crawl" if crawl is not None else "fetch"

    def progress(get_stats: Any) -> Any:
        return ProgressReporter(get_stats=get_stats, quiet=quiet, label=mode).run()

    engine = Engine(config, store, output, crawl=crawl, seeds=seeds, progress=progress,
                    shared=shared, router=router, warc=warc, previous=previous)
    def stop(name: str) -> None:
        click.echo(f"\nshoal: {name}: finishing requests in flight and saving state (again "
                   "to stop at once)", err=True)
        engine.request_stop()

    remove_signals = _stop_on_signals(stop)
    try:
        try:
            await store.open(fresh=bool(kw.get("fresh")))
            result = await engine.run(source)
        except asyncio.CancelledError:
            click.echo("shoal: stopped at once; state saved (re-run to resume)", err=True)
            return EXIT_INTERRUPTED
        except StoreError as exc:
            _fail(str(exc))
        except WorkerError as exc:
            click.echo(f"shoal: error: {exc}", err=True)
            return EXIT_FAILED
        except OutputError as exc:
            click.echo(f"shoal: error: {exc}; every record fetched is saved in {store.path}: "
                       "free some space and re-run the same command to resume", err=True)
            return EXIT_FAILED
        except ShoalError as exc:
            _fail(str(exc))
        finally:
            remove_signals()
            defer_signals()  # what asyncio put back would cut the closing with a traceback
            await store.close()
    finally:
        if temp_dir is not None:
            temp_dir.cleanup()
    if result.output_closed:  # the reader left (e.g. `| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        click.echo("shoal: the reader of the output left; stopped", err=True)
        return EXIT_OK
    if result.nothing_to_do:
        if result.stats.done == 0:
            click.echo("shoal: nothing to do: the input holds no URLs (only blank lines and "
                       "# comments, or nothing at all)", err=True)
        else:
            click.echo(f"shoal: nothing to do: {store.path} already holds every record of "
                       f"this run ({result.stats.done}, in {output.display}); --fresh starts "
                       "over", err=True)
        return EXIT_OK
    print_summary(result.stats, output=output.display,
                  state=None if temp_dir is not None else store.path,
                  interrupted=result.interrupted)
    return EXIT_INTERRUPTED if result.interrupted else EXIT_OK


@cli.command()
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
        _fail(f"--port must be between 0 and 65535, got {port}")
    try:
        settings = ServiceSettings(db=db, jobs_root=jobs_dir, allow_net=allow_net,
                                   max_running=max_running, concurrency=concurrency,
                                   max_jobs_per_token=max_jobs_per_token,
                                   max_urls_per_job=max_urls_per_job, max_upload=max_upload)
    except UsageError as exc:
        _fail(str(exc))
    store = _token_store(settings.db, create=True)
    with store:
        active = store.count_active()
    if not is_loopback(host) and active == 0:
        _fail(f"refusing to listen on {host} (not loopback) with no API token configured: "
              f"create one first with 'shoal token create --db "
              f"{_display(settings.db) if settings.postgres else settings.db}'")
    try:
        sock = listen(host, port)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
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
        _fail("the service did not start (see the messages above)")
    click.echo("shoal: service stopped; running jobs resume at the next start", err=True)


@cli.command()
@click.option("--db", required=True, metavar="postgresql://...",
              help="The PostgreSQL database whose jobs to work on.")
@click.option("--concurrency", type=int, default=100, show_default=True,
              help="Requests in flight at most, per job joined.")
@click.option("--name", default=None,
              help="This worker's name in leases and logs (default: the host name).")
@click.option("--lease", type=float, default=None, metavar="S",
              help="Seconds a claimed URL or host stays this worker's without a heartbeat; "
                   "others take it over after. Default: the job's --timeout + 30 (at least "
                   "--timeout + 5).")
@click.option("--host-turn", type=float, default=20.0, show_default=True, metavar="S",
              help="Seconds a worker keeps a host before it drains it and offers it to "
                   "the others.")
@click.option("--pool-size", type=int, default=4, show_default=True,
              help="Database connections per job joined.")
@click.option("--exit-when-done", is_flag=True,
              help="Exit (code 0) once no job in the database has work left.")
@click.option("-q", "--quiet", is_flag=True, help="Do not log joining and leaving jobs.")
def worker(db: str, concurrency: int, name: str | None, lease: float | None,
           host_turn: float, pool_size: int, exit_when_done: bool, quiet: bool) -> None:
    """Work on every job in a PostgreSQL database, alongside any number of other workers.

    Jobs are submitted by `shoal fetch` or `shoal crawl` with `--db postgresql://...`
    (which work on them too, and write every record of the job to their output). Workers
    can join or leave at any time. SIGINT or SIGTERM: finish requests in flight (5 s at
    most), return the rest to the others, exit 130; a second signal stops at once (its
    leases then run out and others take its URLs over). With --exit-when-done, exit 0
    once nothing is left to do.
    """
    from shoal._runtime import run, tune_gc, tune_malloc
    from shoal.worker import Worker

    if not db.startswith(("postgresql://", "postgres://")):
        _fail(f"--db {db!r}: a worker needs a postgresql:// URL")
    if not 1 <= concurrency <= 100_000:
        _fail(f"--concurrency must be between 1 and 100000, got {concurrency}")
    if not 1 <= pool_size <= 1000:
        _fail(f"--pool-size must be between 1 and 1000, got {pool_size}")
    _check_shared_flags(lease, host_turn)
    if name is not None and (not name.isprintable() or not 1 <= len(name) <= 100):
        _fail("--name must be 1 to 100 printable characters")

    def log(line: str) -> None:
        if not quiet:
            click.echo(f"shoal worker: {line}", err=True)

    async def main() -> int:
        w = Worker(db, concurrency=concurrency, name=name, lease=lease, turn=host_turn,
                   pool_size=pool_size, exit_when_done=exit_when_done, log=log)
        def stop(name: str) -> None:
            log(f"{name}: finishing requests in flight and returning the rest (again to "
                "stop at once)")
            w.request_stop()

        remove_signals = _stop_on_signals(stop)
        log(f"{w.owner} working on {_display(db)}")
        try:
            stopped = await w.run()
        except StoreError as exc:
            _fail(str(exc))
        except asyncio.CancelledError:
            log("stopped at once; its leases run out and others take its URLs over")
            return EXIT_INTERRUPTED
        finally:
            remove_signals()
        log(f"{'stopped' if stopped else 'nothing left to do'}; {w.records} records "
            "fetched here")
        return EXIT_INTERRUPTED if stopped else EXIT_OK

    tune_malloc()
    tune_gc()
    sys.exit(run(main))


def _stop_on_signals(stop: Callable[[str], None]) -> Callable[[], None]:
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


def _check_shared_flags(lease: float | None, host_turn: float) -> None:
    if lease is not None and not 1 <= lease <= 86_400:
        _fail(f"--lease must be between 1 and 86400 seconds, got {lease:g}")
    if not 0.1 <= host_turn <= 86_400:
        _fail(f"--host-turn must be between 0.1 and 86400 seconds, got {host_turn:g}")


def _display(dsn: str) -> str:
    from shoal.store.postgres import display_dsn

    return display_dsn(dsn, "").rstrip("#")


@cli.group()
def token() -> None:
    """API tokens for the service (`shoal serve`): create, list, revoke.

    Tokens are kept hashed in the service database; a token is shown once, when created.
    Send it as `Authorization: Bearer <token>`.
    """


def _service_db_option(f: Any) -> Any:
    return click.option("--db", metavar="PATH_OR_URL", default="shoal-service.db",
                        show_default=True,
                        help="The service database holding the tokens: a path or "
                             "postgresql://... (as `shoal serve --db`).")(f)


def _token_store(db: str, *, create: bool) -> Tokens:
    from shoal.service.tokens import open_tokens

    if "://" in db and not db.startswith(("postgresql://", "postgres://", "sqlite:///")):
        _fail(f"--db {db!r}: use a path, sqlite:///path or postgresql://...")
    try:
        return open_tokens(db, create=create)
    except StoreError as exc:
        _fail(str(exc))


@token.command("create")
@click.option("--read-only", is_flag=True,
              help="The token can watch jobs and metrics but not start or cancel jobs.")
@click.option("--name", default="", help="A label to recognise the token by in `list`.")
@_service_db_option
def token_create(read_only: bool, name: str, db: str) -> None:
    """Create a token; it alone is printed on the last line of standard output."""
    if not name.isprintable() or len(name) > 100:
        _fail("--name must be at most 100 printable characters")
    with _token_store(db, create=True) as store:
        secret, info = store.create(name=name, read_only=read_only)
    kind = "read-only token" if info.read_only else "token"
    click.echo(f"shoal: created {kind} {info.id} in {store.path}. It is shown only this once; keep "
               "it secret and send it as 'Authorization: Bearer <token>'.", err=True)
    click.echo(secret)


@token.command("revoke")
@click.argument("token_id", metavar="ID")
@_service_db_option
def token_revoke(token_id: str, db: str) -> None:
    """Revoke the token with this ID (see `shoal token list`); it stops working at once."""
    from shoal.service.tokens import PREFIX

    # never echo something that may be a secret
    shown = "the token" if token_id.startswith(PREFIX) else f"token {token_id!r}"
    with _token_store(db, create=False) as store:
        if not store.revoke(token_id):
            missing = "no such token" if token_id.startswith(PREFIX) else f"no {shown}"
            _fail(f"{missing} in {store.path} (see 'shoal token list')")
    click.echo(f"shoal: revoked {shown}; it no longer works", err=True)


@token.command("list")
@_service_db_option
def token_list(db: str) -> None:
    """List tokens: id, name, read-only, created, revoked (never the secrets)."""
    with _token_store(db, create=False) as store:
        infos = store.list()
    rows = [("ID", "NAME", "READ-ONLY", "CREATED", "REVOKED")]
    rows += [(t.id, t.name or "-", "yes" if t.read_only else "no", t.created, t.revoked or "-")
             for t in infos]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if not infos:
        click.echo(f"shoal: no tokens in {store.path} (create one with 'shoal token create')",
                   err=True)


def main() -> None:
    """Console entry point: click's usage errors become one line and exit 2."""
    exit_on_signals()
    try:
        code = cli.main(prog_name="shoal", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `shoal`, `shoal token`: just help
        assert exc.ctx is not None
        click.echo(exc.ctx.get_help())
        sys.exit(EXIT_OK)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "shoal"
        click.echo(f"shoal: error: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        click.echo(f"shoal: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
