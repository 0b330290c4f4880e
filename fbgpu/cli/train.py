"""``fbgpu train``: rolling training of the HF / LF / full-band models into the ``scores`` table."""

from __future__ import annotations

from pathlib import Path

import typer

from fbgpu.cli.common import BACKEND_OPTION, CONFIG_OPTION, STORE_OPTION, done, load_toml

MODEL_OPTION = typer.Option(
    "all", "--model",
    help="hf | lf | lf-daily | lf-separate | lf-unshared | fullband-mtl | all",
)
DEMO_OPTION = typer.Option(
    False, "--demo", help="Apply the small demo override (1 seed, 15 epochs; docs/models.md).",
)
REPORT_OPTION = typer.Option(
    True, "--report/--no-report",
    help="Evaluate the scores into reports/models (exhibits 45, 52, 57 and correlations).",
)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        store: Path = STORE_OPTION,
        model: str = MODEL_OPTION,
        backend: str = BACKEND_OPTION,
        config: Path | None = CONFIG_OPTION,
        demo: bool = DEMO_OPTION,
        report: bool = REPORT_OPTION,
    ) -> None:
        """Train the GRU models on rolling half-year windows; write checkpoints and scores.

        Resumable: a window whose checkpoint matches the configuration and input data is loaded,
        not retrained. The "train" table of the --config file sets any TrainConfig key
        (docs/models.md).
        """
        from pydantic import ValidationError
        from rich.markup import escape

        from fbgpu.models import MODEL_KINDS, load_train_config, run_train

        if not store.is_dir():
            raise typer.BadParameter(f"store {store} does not exist", param_hint="--store")
        if model != "all" and model not in MODEL_KINDS:
            raise typer.BadParameter(
                f"unknown model {model!r}: choose all or one of {', '.join(MODEL_KINDS)}",
                param_hint="--model")
        try:
            cfg = load_train_config(load_toml(config, "train"), demo=demo)
        except ValidationError as e:
            first = e.errors()[0]
            key = ".".join(str(x) for x in first["loc"])
            raise typer.BadParameter(f"[train] {key}: {first['msg']}", param_hint="--config") \
                from e
        from fbgpu.evaluate import EvaluateConfig, EvaluateConfigError

        try:  # models use the evaluation's panel and pool settings: one panel for both
            ecfg = EvaluateConfig.from_dict(load_toml(config, "evaluate"))
        except EvaluateConfigError as e:
            raise typer.BadParameter(str(e), param_hint="--config") from e
        summary = run_train(store, model, cfg, backend=backend, progress=True, report=report,
                            panel_config=ecfg.panel, pool_config=ecfg.pool)
        done(escape(summary.line()))
