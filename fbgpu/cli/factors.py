"""``fbgpu factors``: compute the 27 daily factors from the store's ticks and bars."""

from __future__ import annotations

from pathlib import Path

import typer

from fbgpu.cli.common import BACKEND_OPTION, CONFIG_OPTION, STORE_OPTION, done


def _budget(memory_gb: str | None) -> float | str | None:
    """``--memory-gb`` as bytes, ``"auto"`` or None; a clear error for anything else."""
    if memory_gb is None or memory_gb == "auto":
        return memory_gb
    try:
        gb = float(memory_gb)
    except ValueError:
        gb = -1.0
    if gb <= 0:
        raise typer.BadParameter(f"{memory_gb!r} is not a positive number of GB or 'auto'",
                                 param_hint="--memory-gb")
    return gb * 2**30


def register(app: typer.Typer) -> None:
    """Add the ``factors`` command to ``app``."""

    @app.command("factors")
    def factors(
        store: Path = STORE_OPTION,
        start: str | None = typer.Option(None, "--start", help="First date (YYYY-MM-DD)."),
        end: str | None = typer.Option(None, "--end", help="Last date (YYYY-MM-DD)."),
        backend: str = BACKEND_OPTION,
        only: str | None = typer.Option(
            None, "--only", help="Comma-separated factor names (default: all 27)."
        ),
        config: Path | None = CONFIG_OPTION,
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
        cluster: str | None = typer.Option(
            None, "--cluster", help="Map dates over a Dask cluster: local | local-cuda | "
            "scheduler ADDRESS (dist extra). Default: this process."),
        workers: int | None = typer.Option(None, "--workers", help="Workers of a local cluster."),
        memory_gb: str | None = typer.Option(
            None, "--memory-gb", help="Memory budget per day in GB, or 'auto' (half the free "
            "host/device memory): a day that does not fit is processed in stock chunks. "
            "Default: whole days."),
    ) -> None:
        """Compute the daily factor table (``factors``) for every input date from start to end.

        Dates whose factor partition is current (same code, ``[factors]`` config and inputs)
        are skipped. The optional TOML ``[factors]`` table sets FactorConfig fields (big-order
        rule, k, notional, min_obs ...; every field and its default: docs/factors.md).
        """
        from fbgpu.data.store import Store, StoreError
        from fbgpu.engine.backend import BackendError
        from fbgpu.factors import FactorConfig, resolve_names, run_factors

        if not Path(store).is_dir():
            raise typer.BadParameter(f"store {store} does not exist", param_hint="--store")
        try:
            cfg = FactorConfig.from_toml(config)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--config") from e
        try:
            names = resolve_names(only) if only else None
        except KeyError as e:
            raise typer.BadParameter(str(e.args[0]), param_hint="--only") from e
        try:
            if cluster:
                from fbgpu.distributed import run_factors_distributed

                summary = run_factors_distributed(Store(store), start, end, names=names,
                                                  backend=backend, config=cfg, cluster=cluster,
                                                  n_workers=workers)
            else:
                summary = run_factors(Store(store), start, end, names=names, backend=backend,
                                      config=cfg, progress=progress,
                                      memory_budget=_budget(memory_gb))
        except (ValueError, StoreError, BackendError) as e:
            raise typer.BadParameter(str(e)) from e
        done(summary.line())
