"""``shoal export``: a run's records or items as jsonl, csv or parquet."""

from __future__ import annotations

import os
import sys

import click

from shoal.cli.common import EXIT_OK, db_value, fail
from shoal.errors import UsageError


@click.command()
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
        fail(str(exc))
    except BrokenPipeError:  # the reader left (e.g. `| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OK)
    except OSError as exc:
        fail(f"cannot write {where}: {exc.strerror or exc}")
    click.echo(f"shoal: exported {count} {'items' if items else 'records'} to {where}",
               err=True)


def _export_state(state: str | None, db: str | None, job: str | None) -> str:
    """The one state ``shoal export`` reads: STATE or --db, with --job after '#'."""
    if state and db:
        fail("give STATE or --db, not both (they name the same thing)")
    state = state or db_value(db) or fail("name the state to export: STATE or --db")
    is_pg = state.startswith(("postgresql://", "postgres://"))
    if job is not None:
        if not is_pg:
            fail("--job goes with a postgresql:// database")
        if "#" in state:
            fail("the database URL names its job after '#' already: drop --job")
        state = f"{state}#{job}"
    return state
