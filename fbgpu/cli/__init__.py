"""The ``fbgpu`` command line: one sub-command per pipeline step, all reading/writing a store.

Each step lives in its own module (``fbgpu/cli/<step>.py``) exposing ``register(app)``.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.logging import RichHandler

app = typer.Typer(
    name="fbgpu",
    help="Full-band volume-price stock selection on GPU and CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, console=None)],
        force=True,
    )


def _register_all() -> None:
    from fbgpu.cli import commands

    commands.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fbgpu`` script; returns the exit code."""
    _register_all()
    try:
        app(args=argv, standalone_mode=False)
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except SystemExit as e:
        return int(e.code or 0)
    except Exception as e:  # a clear one-line error, not a traceback, for bad input
        import click

        if isinstance(e, click.ClickException):
            e.show()
            return e.exit_code
        if isinstance(e, click.exceptions.Abort):
            return 130
        logging.getLogger("fbgpu").debug("error", exc_info=True)
        print(f"fbgpu: error: {e}", file=sys.stderr)
        return 1
    return 0
