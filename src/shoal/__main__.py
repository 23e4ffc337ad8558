"""``python -m shoal`` and the ``shoal`` command."""

from shoal._signals import exit_on_signals, finish


def main() -> None:
    exit_on_signals()  # before the imports below: a Ctrl-C while starting exits 130 too
    try:
        from shoal.cli import main as cli_main

        cli_main()
    finally:
        finish()


if __name__ == "__main__":
    main()
