"""The ``fbgpu`` command line: one sub-command per pipeline step, all reading/writing a store.

Each step lives in its own module (``fbgpu/cli/<step>.py``) exposing ``register(app)``; they are
attached in :mod:`fbgpu.cli.commands`. Every command that finishes on a store records its step,
wall time and backend in the store's run record (``run.json``), which the report shows; a step
that fails at run time is recorded there as failed, with its error (see :func:`main` for the exit
statuses).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import NoReturn

import typer

from fbgpu.errors import ExitStatus, exit_status_of

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
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        handlers=[_log_handler()], force=True)


def _log_handler() -> logging.Handler:
    """Rich's handler on a terminal; plain one-line records otherwise (logs piped to a file or
    a CI log: no wrapping at 80 columns, and no ~60 ms of ``rich`` imports in every process)."""
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        return handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           datefmt="%Y-%m-%d %H:%M:%S"))
    return handler


def _option_value(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _record(argv: list[str], seconds: float, code: int, error: str) -> None:
    """Record the step in the store's run record (best effort, never fails the command).

    Status 0 records the step as finished; 3 (failed while running) and 130 (interrupted) record
    it with ``status: failed`` and its error, so that the record never calls a failed step
    finished. Statuses 1 (usage/config), 2 (input rejected) and 4 (store busy) mean nothing was
    written, so nothing is recorded and the store stays byte-identical (``fbgpu.errors``).
    """
    if code not in (ExitStatus.OK, ExitStatus.FAILED, ExitStatus.INTERRUPTED) \
            or "--help" in argv:
        return
    steps = [a for a in argv if not a.startswith("-")]
    if not steps or steps[0] in ("report", "demo"):
        return  # the report is the reader of the record; the demo records its own stages
    names = {c.name for c in app.registered_commands} | {
        g.typer_instance.info.name for g in app.registered_groups if g.typer_instance}
    if steps[0] not in names:
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
    """A ``SystemExit`` code as an exit status (a message code is printed and gives 3)."""
    if value is None:
        return ExitStatus.OK, ""
    if isinstance(value, int):
        return value, ""
    print(f"fbgpu: error: {value}", file=sys.stderr)
    return ExitStatus.FAILED, str(value)


def _invoke(argv: list[str]) -> tuple[int, str]:
    """Run the app on ``argv``; return (exit status, error message for the run record).

    ``standalone_mode=False`` makes typer *return* the code of ``typer.Exit(n)`` (and 130 for
    Ctrl-C) and *raise* usage errors, ``ClickException``s and ``Abort``; every one of those is
    turned into its exit status here (``fbgpu.errors.ExitStatus``), with its message on stderr.
    Click's own usage status 2 becomes 1: 2 is kept for rejected input.
    """
    try:
        rv = app(args=argv, standalone_mode=False)
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        return ExitStatus.USAGE, "aborted"
    except KeyboardInterrupt:
        print("fbgpu: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED, "interrupted"
    except SystemExit as e:
        return _exit_code(e.code)
    except typer.TyperException as e:  # usage errors, BadParameter, ClickException
        show = getattr(e, "show", None)
        if callable(show):  # a usage error, or the help when no command is given
            show()
        else:
            print(f"Error: {e.format_message()}", file=sys.stderr)
        return ExitStatus.USAGE, e.format_message()
    except Exception as e:  # a clear one-line error, not a traceback
        status = exit_status_of(e)
        logging.getLogger("fbgpu").debug("error", exc_info=True)
        print(f"fbgpu: error: {e}", file=sys.stderr)
        if status in (ExitStatus.REJECTED, ExitStatus.BUSY):
            print("the store was not changed", file=sys.stderr)
        return status, f"{type(e).__name__}: {e}"
    # typer.Exit(n) is returned as n; a command that finishes returns None
    code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
    if code == ExitStatus.INTERRUPTED:
        print("fbgpu: interrupted", file=sys.stderr)
        return code, "interrupted"
    return code, "" if code == 0 else f"exit status {code}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fbgpu`` script; returns the exit status.

    0 success (``--help`` too); 1 usage or config error; 2 input rejected (the store is
    unchanged); 3 the step failed while running (one line ``fbgpu: error: ...``; ``-v`` logs the
    traceback); 4 the store is locked by another writer; 130 interrupted. The table is in
    :mod:`fbgpu.errors`. Messages go to stderr.
    """
    from fbgpu.cli import commands

    commands.register(app)
    argv = list(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    code, error = _invoke(argv)
    _record(argv, time.perf_counter() - t0, code, error)
    return code


def run() -> NoReturn:
    """Process entry point (``fbgpu`` script, ``python -m fbgpu``): :func:`main`, then leave.

    The process ends with ``os._exit`` after Python's own clean-up (garbage collection, which
    joins Arrow's scanner threads while Arrow is still alive; ``atexit`` handlers; logging and
    stdio flushed). Why: Arrow's (and other native libraries') thread pools are C++ statics
    whose destructors can run while a worker thread is still joinable, and ``std::terminate``
    then aborts an otherwise finished command with SIGABRT ("terminate called without an active
    exception", exit -6; apache/arrow#34314). Skipping the native static destructors keeps the
    exit status the one :func:`main` returned. Every file the store writes is closed (and
    fsynced where durability matters) before ``main`` returns, and the store lock is released
    by the kernel with the process.
    """
    # fbgpu's configuration models use no pydantic plugin, and looking for plugins scans every
    # installed distribution's entry points (importlib.metadata) when the first model is built:
    # ~0.03 s of every command. Set PYDANTIC_DISABLE_PLUGINS yourself (even to "") to decide.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    code: int = ExitStatus.FAILED
    try:
        code = main()
    except KeyboardInterrupt:
        print("fbgpu: interrupted", file=sys.stderr)
        code = ExitStatus.INTERRUPTED
    except BaseException:  # shown, then the failed status
        traceback.print_exc()
    finally:
        gc.collect()
        atexit._run_exitfuncs()  # Python's handlers, once, here
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to add
                stream.flush()
        os._exit(int(code))
