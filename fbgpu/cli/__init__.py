"""The ``fbgpu`` command line: one sub-command per pipeline step, all reading/writing a store.

Each step lives in its own module (``fbgpu/cli/<step>.py``) exposing ``register(app)``; they are
attached in :mod:`fbgpu.cli.commands`. Every command that finishes on a store records its step,
wall time and backend in the store's run record (``run.json``), which the report shows.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

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
        handlers=[RichHandler(show_path=False)],
        force=True,
    )


def _option_value(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _record(argv: list[str], seconds: float) -> None:
    """Record a finished step in the store's run record (best effort, never fails the command)."""
    steps = [a for a in argv if not a.startswith("-")]
    if not steps or steps[0] in ("report", "demo"):
        return  # the report is the reader of the record; the demo records its own stages
    store = _option_value(argv, "--store")
    if store is None or not Path(store).is_dir():
        return
    try:
        from fbgpu.data.runlog import record_step
        from fbgpu.data.store import Store
        from fbgpu.engine.backend import get_backend

        backend = get_backend(_option_value(argv, "--backend") or "auto")
        record_step(Store(store), steps[0], seconds, backend=backend.name,
                    device=backend.device, config={"argv": argv})
    except Exception:  # the run record is informational
        logging.getLogger("fbgpu").debug("could not record the run", exc_info=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fbgpu`` script; returns the exit code."""
    from fbgpu.cli import commands

    commands.register(app)
    argv = list(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
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
    _record(argv, time.perf_counter() - t0)
    return 0
