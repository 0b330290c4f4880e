"""``fbgpu report``: render the store into one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path

import typer

from fbgpu.cli.common import CONFIG_OPTION, STORE_OPTION, done, load_toml


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(store: Path = STORE_OPTION, config: Path | None = CONFIG_OPTION) -> None:
        """Render what the store holds (tables, figures, run record) into reports/report.html.

        --config is accepted like every command's (so one file can be passed to every step) and
        checked the same way (unknown sections, bad TOML: exit 1); the report has no section of
        its own, it shows what the steps recorded.
        """
        load_toml(config)  # validated before anything is written
        if not store.is_dir():
            raise typer.BadParameter(f"store {store} does not exist", param_hint="--store")
        from fbgpu.report import build_report

        out = build_report(store)
        done(f"report: {out}")
