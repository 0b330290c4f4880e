"""``fbgpu convert``: rewrite a store's hot tick tables in the other on-disk format."""

from __future__ import annotations

from pathlib import Path

import typer

from fbgpu.cli.common import STORE_OPTION, done


def register(app: typer.Typer) -> None:
    """Add the ``convert`` command to ``app``."""

    @app.command("convert")
    def convert(
        to: str = typer.Option(..., "--to", help="arrow | parquet: the hot tables' new format."),
        store: Path = STORE_OPTION,
    ) -> None:
        """Rewrite the hot tick tables (trades, orders, cancels, minute) as ``--to`` and make it
        the store's format.

        arrow: uncompressed, memory-mapped Arrow IPC (fast reads, ~3.7x the disk); parquet: LZ4
        Parquet (small, decoded on every read). Values are unchanged; partitions already in the
        format are left alone, so an interrupted run can be repeated; factors derived from a
        rewritten partition are recomputed by the next ``fbgpu factors``. See docs/data.md.
        """
        from fbgpu.data.store import PART_NAMES, Store

        if to not in PART_NAMES:
            choices = ", ".join(sorted(PART_NAMES))
            raise typer.BadParameter(f"unknown format {to!r}; one of {choices}", param_hint="--to")
        if not store.is_dir():
            raise typer.BadParameter(f"no store at {store}", param_hint="--store")
        n = Store(store).convert(to)
        done(f"convert: {n} partition(s) rewritten as {to} in {store}")
