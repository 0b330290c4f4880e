"""Options and helpers shared by every sub-command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import typer

#: Commands that only read the store: they do not take its write lock.
READ_ONLY_COMMANDS = frozenset({"bench", "export"})


def _lock_store(ctx: typer.Context, value: Path | None) -> Path | None:
    """``--store`` callback: hold the store's write lock until the command ends.

    A second writing command on the same store fails with exit status 4 naming the holder, or
    waits ``FBGPU_LOCK_WAIT`` seconds for it (:mod:`fbgpu.data.lock`); stale temporaries of
    killed writers are removed when the lock is taken.
    """
    if value is None or ctx.resilient_parsing or ctx.info_name in READ_ONLY_COMMANDS:
        return value
    from fbgpu.data.lock import lock_for_command, release, wait_seconds

    try:
        wait_seconds()
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--store") from e
    lock_for_command(value)
    ctx.call_on_close(lambda: release(value))
    return value


STORE_OPTION = typer.Option(
    Path("./fbgpu-demo"), "--store", callback=_lock_store,
    help="Store directory (held under a write lock while the command runs; FBGPU_LOCK_WAIT="
         "seconds waits for another writer instead of failing).")
BACKEND_OPTION = typer.Option("auto", "--backend", help="cpu | gpu | auto (GPU when usable).")
CONFIG_OPTION = typer.Option(None, "--config", help="TOML configuration file (see docs/config.md).")

log = logging.getLogger("fbgpu")


def load_toml(path: Path | None, section: str | None = None) -> dict[str, Any]:
    """Read a TOML config file (or one ``[section]`` of it); a clear error (exit status 1) if it
    is missing, binary, malformed or names a section no command knows."""
    from fbgpu.config import ConfigError, load_config_file

    if path is None:
        return {}
    try:
        data = load_config_file(path)  # an unknown top-level section is an error
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from e
    if section is None:
        return data
    return data.get(section, {})


def done(summary: str) -> None:
    """The one-line summary every command ends with (on stderr; styled on a terminal)."""
    if sys.stderr.isatty():
        from rich.console import Console

        Console(stderr=True).print(f"[bold green]done[/] {summary}")
    else:
        print(f"done {summary}", file=sys.stderr, flush=True)
