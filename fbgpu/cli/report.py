"""``fbgpu report``: render the store into one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path

import typer

from fbgpu.cli.common import STORE_OPTION, done


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(store: Path = STORE_OPTION) -> None:
        """Render what the store holds (tables, figures, run record) into reports/report.html."""
        from fbgpu.report import build_report

        if not store.is_dir():
            raise typer.BadParameter(f"store {store} does not exist", param_hint="--store")
        out = build_report(store)
        done(f"report: {out}")
