"""``fbgpu ingest``: load vendor files into the store, with a validation report."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from fbgpu.cli.common import STORE_OPTION, done, load_toml
from fbgpu.errors import ExitStatus, exit_status_of

FORMAT_OPTION = typer.Option(..., "--format", help=(
    "sse-order | sse-trade | sse-tick | szse-order | szse-trade | minute-bars | daily-bars | "
    "index-weights | securities | qlib (a qlib directory; --index names its instruments "
    "file)"))
IN_OPTION = typer.Option(..., "--in", help="Input file(s) or directories (CSV, .gz, .zip, "
                         "Parquet); repeat --in for more.")
DATE_OPTION = typer.Option(None, "--date", help="Trading date YYYY-MM-DD, needed when the "
                           "files carry no date.")
MAPPING_OPTION = typer.Option(None, "--mapping", help="TOML mapping: column names, codes and "
                              "options (docs/ingest.md).")
CONFIG_OPTION = typer.Option(None, "--config", help="TOML config; its [ingest] section is used "
                             "as the mapping when --mapping is not given.")
INDEX_OPTION = typer.Option(None, "--index", help="Index name for index-weights files without "
                            "an index column (e.g. csi500).")


def _rejected(e: Exception) -> NoReturn:
    """Nothing written: the message, the promise that the store is unchanged, and the error's
    exit status (2 for bad input files, 1 for a bad mapping or argument; fbgpu/errors.py)."""
    typer.echo(f"fbgpu ingest: error: {e}", err=True)
    typer.echo("the store was not changed", err=True)
    raise typer.Exit(exit_status_of(e)) from e


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest_cmd(
        fmt: str = FORMAT_OPTION,
        inputs: list[Path] = IN_OPTION,
        store: Path = STORE_OPTION,
        date: str | None = DATE_OPTION,
        mapping: Path | None = MAPPING_OPTION,
        config: Path | None = CONFIG_OPTION,
        index: str | None = INDEX_OPTION,
    ) -> None:
        """Ingest vendor Level-2, bar or reference files into canonical store partitions.

        Bad input stops with the file, row and column at fault and leaves the store unchanged.
        """
        from fbgpu.data.ingest import FORMATS, IngestError, ingest

        if fmt == "qlib":  # a qlib directory (docs/ingest.md#qlib)
            from fbgpu.data.ingest.qlib import ingest_qlib
            if len(inputs) != 1:
                raise typer.BadParameter("--format qlib takes one qlib directory",
                                         param_hint="--in")
            try:
                report = ingest_qlib(store, inputs[0], instruments=index,
                                     options=mapping)  # [qlib] symbols/dates/volume
            except IngestError as e:
                _rejected(e)
            c = report.counts
            done(f"ingest qlib: {c['rows_read']:,} rows read, {c['rows_written']:,} written, "
                 f"{c['qlib_suspended_rows']:,} suspended rows added, "
                 f"{c['qlib_amount_filled']:,} amounts filled (WARNED); report {report.path}")
            return
        if fmt not in FORMATS:
            raise typer.BadParameter(f"unknown format {fmt!r}; one of: {', '.join(FORMATS)}",
                                     param_hint="--format")
        chosen: object = mapping
        if mapping is None and config is not None:
            chosen = load_toml(config, "ingest")
        try:
            report = ingest(store, fmt, [str(p) for p in inputs], date=date,
                            mapping=chosen, index_name=index)  # type: ignore[arg-type]
        except IngestError as e:
            _rejected(e)
        c = report.counts
        done(f"ingest {fmt}: {c['rows_read']:,} rows read, {c['rows_written']:,} written, "
             f"{len(report.tables)} partition(s), {c['duplicates_dropped']:,} duplicates "
             f"dropped; report {report.path}")

    @app.command("export")
    def export_cmd(
        out: Path = typer.Option(..., "--out", help="Output directory (qlib layout)."),
        store: Path = STORE_OPTION,
        fmt: str = typer.Option("qlib", "--format", help="qlib (the only export format)."),
        table: str = typer.Option("factors", "--table", help="daily | factors | scores"),
    ) -> None:
        """Write a store table as qlib .day.bin features (docs/real-data.md).

        ``daily`` is written adjusted (the inverse of ``ingest --format qlib``); factor and score
        columns are written as they are, one feature per column.
        """
        from fbgpu.data.ingest.qlib import export_store_qlib

        if fmt != "qlib":
            raise typer.BadParameter(f"unknown export format {fmt!r}; only qlib",
                                     param_hint="--format")
        try:
            files = export_store_qlib(store, table, out)
        except (KeyError, ValueError) as e:
            typer.echo(f"fbgpu export: error: {e}", err=True)
            raise typer.Exit(ExitStatus.REJECTED) from e
        done(f"export qlib: {len(files):,} feature bins of table {table!r} under {out}")
