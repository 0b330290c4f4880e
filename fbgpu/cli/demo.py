"""``fbgpu demo``: the whole pipeline on the synthetic market, ending with the report."""

from __future__ import annotations

from pathlib import Path

import typer

from fbgpu.cli.common import BACKEND_OPTION, CONFIG_OPTION, STORE_OPTION, done, load_toml


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        store: Path = STORE_OPTION,
        backend: str = BACKEND_OPTION,
        config: Path | None = CONFIG_OPTION,
        preset: str = typer.Option(None, "--preset", help="Synthetic market preset "
                                   "(default from [demo] in the config, else 'demo')."),
        seed: int = typer.Option(None, "--seed", help="Seed (default 0)."),
    ) -> None:
        """Generate the synthetic market and run factors, evaluation, models, backtest, report."""
        from fbgpu.pipeline import DemoConfig, run_demo

        cfg_all = load_toml(config)
        demo_cfg = DemoConfig(**cfg_all.get("demo", {}))
        if preset is not None:
            demo_cfg.preset = preset
        if seed is not None:
            demo_cfg.seed = seed
        out = run_demo(store, backend=backend, config=demo_cfg, stage_config=cfg_all)
        done(f"demo: report at {out}")
