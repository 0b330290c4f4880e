"""``fbgpu synth``: generate the built-in synthetic A-share market into a store."""

from __future__ import annotations

from pathlib import Path

import typer

from fbgpu.cli.common import CONFIG_OPTION, STORE_OPTION, done, load_toml


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command to ``app``."""

    @app.command("synth")
    def synth(
        preset: str = typer.Option("demo", "--preset", help="tiny | small | demo | full-day."),
        seed: int = typer.Option(0, "--seed", min=0, help="Random seed (same seed, same bytes)."),
        store: Path = STORE_OPTION,
        config: Path | None = CONFIG_OPTION,
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    ) -> None:
        """Generate a synthetic market: ticks, orders, bars, indices and the ground truth.

        The optional TOML ``[synth]`` table overrides fields of the preset's SynthConfig
        (every field and its default: docs/synth.md).
        """
        from pydantic import ValidationError

        from fbgpu.data.store import Store
        from fbgpu.data.synth import PRESETS, generate_market
        from fbgpu.data.synth.config import SynthConfig

        if preset not in PRESETS:
            raise typer.BadParameter(
                f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}",
                param_hint="--preset")
        cfg: str | SynthConfig = preset
        overrides = load_toml(config, "synth")
        if overrides:
            try:
                cfg = PRESETS[preset].model_validate(
                    {**PRESETS[preset].model_dump(), **overrides})
            except ValidationError as e:
                raise typer.BadParameter(f"config file {config} [synth]: {e}",
                                         param_hint="--config") from e
        summary = generate_market(Store(store), cfg, seed=seed, progress=progress)
        if overrides:
            summary.preset = f"{preset} + {config}"
        done(summary.line())
