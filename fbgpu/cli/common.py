"""Options and helpers shared by every sub-command."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

STORE_OPTION = typer.Option(Path("./fbgpu-demo"), "--store", help="Store directory.")
BACKEND_OPTION = typer.Option("auto", "--backend", help="cpu | gpu | auto (GPU when usable).")
CONFIG_OPTION = typer.Option(None, "--config", help="TOML configuration file (see docs/config.md).")

console = Console(stderr=True)
log = logging.getLogger("fbgpu")


def load_toml(path: Path | None, section: str | None = None) -> dict[str, Any]:
    """Read a TOML config file (or one ``[section]`` of it); a clear error if it is malformed."""
    from fbgpu.config import ConfigError, read_toml

    if path is None:
        return {}
    try:
        data = read_toml(path)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from e
    if section is None:
        return data
    return data.get(section, {})


def done(summary: str) -> None:
    """The one-line summary every command ends with."""
    console.print(f"[bold green]done[/] {summary}")
