"""Registers every sub-command module on the ``fbgpu`` app (maintained by hand, one line each)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach all sub-commands to ``app``."""
    # Imported here so that `fbgpu --help` stays fast and a broken step names itself.
    from fbgpu.cli import (
        backtest,
        bench,
        convert,
        demo,
        evaluate,
        factors,
        ingest,
        report,
        synth,
        train,
    )

    for module in (demo, synth, ingest, convert, factors, evaluate, train, backtest, report,
                   bench):
        module.register(app)
    # Help texts name TOML sections ("[factors]", "[evaluate]"): plain text, not rich markup,
    # which would swallow them as tags. Read when the click command is built, after this.
    app.rich_markup_mode = None
