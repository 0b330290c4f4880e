"""``fbgpu evaluate``: single-factor tests of the store's factors (tables, figures, panel)."""

from __future__ import annotations

from pathlib import Path

import typer

from fbgpu.cli.common import BACKEND_OPTION, CONFIG_OPTION, STORE_OPTION, done, load_toml


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate(
        store: Path = STORE_OPTION,
        backend: str = BACKEND_OPTION,
        config: Path | None = CONFIG_OPTION,
        factors: str | None = typer.Option(
            None, "--factors", help="Comma-separated factor names (default: all stored)."),
        no_figures: bool = typer.Option(False, "--no-figures", help="Skip the PNG figures."),
    ) -> None:
        """Preprocess the factor panel, run RankIC / quantile tests, composites, correlations.

        Reads the ``daily`` and ``factors`` tables, writes reports/evaluate/ (CSV, JSON, PNG)
        and the preprocessed panel as table ``panel``. Settings: section [evaluate] of --config
        (see docs/evaluate.md).
        """
        from fbgpu.data.store import Store
        from fbgpu.engine.backend import BackendError
        from fbgpu.evaluate.run import EvaluateConfig, EvaluateConfigError, run_evaluate

        if not store.is_dir():
            raise typer.BadParameter(f"store {store} does not exist", param_hint="--store")
        try:
            cfg_dict = load_toml(config, "evaluate")
            if factors:
                cfg_dict["factors"] = [f.strip() for f in factors.split(",") if f.strip()]
            if no_figures:
                cfg_dict["figures"] = False
            cfg = EvaluateConfig.from_dict(cfg_dict)
        except EvaluateConfigError as e:
            raise typer.BadParameter(str(e), param_hint="--config") from e
        try:
            res = run_evaluate(Store(store), cfg, backend=backend)
        except BackendError as e:
            raise typer.BadParameter(str(e), param_hint="--backend") from e
        except EvaluateConfigError as e:  # e.g. --factors naming a factor the table lacks
            raise typer.BadParameter(str(e), param_hint="--factors/--config") from e
        except KeyError as e:
            raise typer.BadParameter(str(e), param_hint="--store") from e
        # A StoreError (no factors table, a damaged partition) is rejected input: exit 2.
        done(res.one_line())
