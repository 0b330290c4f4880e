"""The ``fbgpu`` command line: one sub-command per pipeline step, all reading/writing a store.

Each step lives in its own module (``fbgpu/cli/<step>.py``) exposing ``register(app)``; they are
attached in :mod:`fbgpu.cli.commands`. Every command that finishes on a store records its step,
wall time and backend in the store's run record (``run.json``), which the report shows; a step
that fails at run time is recorded there as failed, with its error (see :func:`main` for the exit
statuses).
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


def _record(argv: list[str], seconds: float, code: int, error: str) -> None:
    """Record the step in the store's run record (best effort, never fails the command).

    Exit 0 records the step as finished. Exit 2 (the input was rejected: usage, config or bad
    data, e.g. a malformed ingest file, which promises an unchanged store) records nothing. Any
    other failure records the step with ``status: failed`` and its error, so that the record
    never calls a failed step finished; the other steps' entries are kept.
    """
    if code == 2 or "--help" in argv:
        return  # nothing ran (or the input was rejected before anything was written)
    steps = [a for a in argv if not a.startswith("-")]
    if not steps or steps[0] in ("report", "demo"):
        return  # the report is the reader of the record; the demo records its own stages
    if steps[0] not in {c.name for c in app.registered_commands}:
        return
    store = _option_value(argv, "--store")
    if store is None or not Path(store).is_dir():
        return
    try:
        from fbgpu.data.runlog import record_step
        from fbgpu.data.store import Store
        from fbgpu.engine.backend import get_backend

        backend = get_backend(_option_value(argv, "--backend") or "auto")
        status = {"status": "ok"} if code == 0 else {
            "status": "failed", "error": error or f"exit status {code}", "exit_code": code}
        record_step(Store(store), steps[0], seconds, backend=backend.name,
                    device=backend.device, config={"argv": argv}, **status)
    except Exception:  # the run record is informational
        logging.getLogger("fbgpu").debug("could not record the run", exc_info=True)


def _exit_code(value: object) -> tuple[int, str]:
    """A ``SystemExit`` code as an exit status (a message code is printed and gives 1)."""
    if value is None:
        return 0, ""
    if isinstance(value, int):
        return value, ""
    print(f"fbgpu: error: {value}", file=sys.stderr)
    return 1, str(value)


def _invoke(argv: list[str]) -> tuple[int, str]:
    """Run the app on ``argv``; return (exit status, error message for the run record).

    ``standalone_mode=False`` makes typer *return* the code of ``typer.Exit(n)`` (and 130 for
    Ctrl-C) and *raise* usage errors, ``ClickException``s and ``Abort``; every one of those is
    turned into its exit status here, with its message on stderr.
    """
    try:
        rv = app(args=argv, standalone_mode=False)
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        return 1, "aborted"
    except KeyboardInterrupt:
        print("fbgpu: interrupted", file=sys.stderr)
        return 130, "interrupted"
    except SystemExit as e:
        return _exit_code(e.code)
    except typer.TyperException as e:  # usage errors (2), BadParameter (2), ClickException
        show = getattr(e, "show", None)
        if type(e).__name__ == "NoArgsIsHelpError":
            pass  # the help has been printed already; exit 2 like typer's standalone mode
        elif callable(show):
            show()
        else:
            print(f"Error: {e.format_message()}", file=sys.stderr)
        return int(e.exit_code), e.format_message()
    except Exception as e:  # a clear one-line error, not a traceback, for bad input
        logging.getLogger("fbgpu").debug("error", exc_info=True)
        print(f"fbgpu: error: {e}", file=sys.stderr)
        return 1, f"{type(e).__name__}: {e}"
    # typer.Exit(n) is returned as n; a command that finishes returns None
    code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
    if code == 130:
        print("fbgpu: interrupted", file=sys.stderr)
        return 130, "interrupted"
    return code, "" if code == 0 else f"exit status {code}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fbgpu`` script; returns the exit status.

    0: success (``--help`` too). 1: a step failed (an unexpected error, printed as one line
    ``fbgpu: error: ...``; ``-v`` logs the traceback). 2: usage error, bad option value or config,
    or input rejected (e.g. ``fbgpu ingest`` of a malformed file; the store is unchanged).
    130: interrupted (Ctrl-C). Messages go to stderr.
    """
    from fbgpu.cli import commands

    commands.register(app)
    argv = list(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    code, error = _invoke(argv)
    _record(argv, time.perf_counter() - t0, code, error)
    return code
