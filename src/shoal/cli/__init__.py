"""The ``shoal`` command: flags -> Config, run, exit 0 / 2 / 130. No logic of its own.

One module a command or group: ``run`` (fetch, crawl, demo), ``export``, ``serve``,
``worker``, ``token``; ``common`` holds what they share.
"""

from __future__ import annotations

import sys

import click

from shoal import __version__
from shoal._signals import exit_on_signals
from shoal.cli import export, run, serve, token, worker
from shoal.cli.common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="shoal")
def cli() -> None:
    """shoal: a fast, polite, crash-safe web fetcher and crawler.

    Every run keeps its state in a database, so re-running the same command after a
    crash or Ctrl-C resumes where it stopped, with exactly one record per URL.
    """


for command in (run.fetch, run.crawl, export.export, run.demo, serve.serve, worker.worker,
                token.token):
    cli.add_command(command)


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
