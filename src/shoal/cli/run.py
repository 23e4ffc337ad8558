"""``shoal fetch``, ``shoal crawl`` and ``shoal demo``: their flags -> Config, and the run."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shoal._signals import defer_signals
from shoal.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ByteSize,
    check_shared_flags,
    db_value,
    fail,
    stop_on_signals,
)
from shoal.config import DEFAULT_USER_AGENT, Config, CrawlOptions, RetryPolicy
from shoal.errors import OutputError, ShoalError, StoreError, UsageError, WorkerError

if TYPE_CHECKING:
    from shoal.extract.router import Router
    from shoal.recrawl import Previous
    from shoal.warc import WarcWriter


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


@click.command()
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
        fail(str(exc))
    if input != "-":
        for flag, path in (("--output", kw.get("output")), ("--state", kw.get("state")),
                           ("--db", kw.get("db"))):
            if path and path != "-" and "://" not in path and _same_file(path, input):
                fail(f"{flag} {path!r} is the input file; it would be overwritten")
    sys.exit(_run_job(config, source, kw))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@click.command()
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
        fail(str(exc))
    source = LineSource(list(seeds), name=seeds_name(list(seeds)))
    sys.exit(_run_job(config, source, kw, crawl=options, seeds=list(seeds)))


@click.command()
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
        fail(str(exc))


def _paths(kw: dict[str, Any]) -> tuple[str | None, str | None]:
    """(output path or None for stdout, state path or database URL or None)."""
    db, state = kw.get("db"), kw.get("state")
    if db and state:
        fail("give --db or --state, not both (they name the same thing)")
    state = db_value(db) or state
    output = kw.get("output")
    if output in (None, "-"):
        return None, state
    state = state or f"{output}.state.db"
    if os.path.isdir(output):
        fail(f"output {output!r} is a directory")
    if "://" not in state and Path(state).resolve() == Path(output).resolve():
        fail(f"--state {state!r} is the output file; the records would overwrite the state")
    parent = Path(output).resolve().parent
    if not parent.is_dir():
        fail(f"cannot write output {output!r}: directory {str(parent)!r} does not exist")
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
        fail(str(exc))
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
        fail(str(exc))
    if same_run(previous, store_path):
        await previous.close()
        fail(f"--since {spec!r} is this run's own state; give the state of an earlier run "
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
        fail(str(exc))


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
            fail("--workers shares one SQLite state file; with a PostgreSQL --db, start "
                 "more shoal processes on the same --job instead")
        try:
            store = PostgresStore(state_path, name=kw.get("job") or _job_name(source, crawl))
        except UsageError as exc:
            fail(str(exc))
        check_shared_flags(kw.get("lease"), kw.get("host_turn", 20.0))
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

    remove_signals = stop_on_signals(stop)
    try:
        try:
            await store.open(fresh=bool(kw.get("fresh")))
            result = await engine.run(source)
        except asyncio.CancelledError:
            click.echo("shoal: stopped at once; state saved (re-run to resume)", err=True)
            return EXIT_INTERRUPTED
        except StoreError as exc:
            fail(str(exc))
        except WorkerError as exc:
            click.echo(f"shoal: error: {exc}", err=True)
            return EXIT_FAILED
        except OutputError as exc:
            click.echo(f"shoal: error: {exc}; every record fetched is saved in {store.path}: "
                       "free some space and re-run the same command to resume", err=True)
            return EXIT_FAILED
        except ShoalError as exc:
            fail(str(exc))
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
