"""``shoal worker``: work on every job of a PostgreSQL database beside other workers."""

from __future__ import annotations

import asyncio
import sys

import click

from shoal.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    check_shared_flags,
    display,
    fail,
    stop_on_signals,
)
from shoal.errors import StoreError


@click.command()
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
        fail(f"--db {db!r}: a worker needs a postgresql:// URL")
    if not 1 <= concurrency <= 100_000:
        fail(f"--concurrency must be between 1 and 100000, got {concurrency}")
    if not 1 <= pool_size <= 1000:
        fail(f"--pool-size must be between 1 and 1000, got {pool_size}")
    check_shared_flags(lease, host_turn)
    if name is not None and (not name.isprintable() or not 1 <= len(name) <= 100):
        fail("--name must be 1 to 100 printable characters")

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

        remove_signals = stop_on_signals(stop)
        log(f"{w.owner} working on {display(db)}")
        try:
            stopped = await w.run()
        except StoreError as exc:
            fail(str(exc))
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
