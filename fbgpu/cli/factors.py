"""``fbgpu factors``: compute the 27 daily factors (and user factors) from the store's ticks and
bars; ``fbgpu factors check PATH``: vet a user factor module (docs/user-factors.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from fbgpu.cli.common import BACKEND_OPTION, CONFIG_OPTION, STORE_OPTION, done
from fbgpu.errors import ExitStatus


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


MODULE_OPTION = typer.Option(
    None, "--factors-module", help="A user factor module (.py path or dotted name) to compute "
    "with the built-ins; repeatable. Also [factors] modules in the config.")


def _preload_cpu_engine(backend: str) -> None:
    """Import numba and the CPU kernels (:mod:`fbgpu.engine.cpu_kernels`, ~0.2-0.4 s) on a
    background thread while this one imports the rest, parses the config and reads the store,
    unless ``FBGPU_PRELOAD=0``. Only for ``--backend cpu|auto``, and only when the kernels
    have no ahead-of-time build (:mod:`fbgpu.engine.cpu_aot`: then the run never imports
    numba); a failure is left for the first kernel call to report."""
    import os

    if backend not in ("cpu", "auto") or os.environ.get("FBGPU_PRELOAD", "1") == "0":
        return
    from fbgpu.engine import cpu_aot

    if cpu_aot.built_manifest() is not None:
        return
    import importlib
    import threading

    def run() -> None:
        try:
            importlib.import_module("fbgpu.engine.cpu_kernels")
        except Exception:  # reported again by the first kernel call
            return

    threading.Thread(target=run, name="fbgpu-preload", daemon=True).start()


def _load_user_modules(cfg_modules: tuple[str, ...],
                       cli_modules: list[str] | None) -> tuple[str, ...]:
    """Load the config's and the command line's user modules; a clear usage error if one fails."""
    from fbgpu.factors import UserModuleError, load_modules

    mods = tuple(dict.fromkeys([*cfg_modules, *(str(Path(m).resolve()) if m.endswith(".py")
                                                 else m for m in cli_modules or [])]))
    try:
        load_modules(mods)
    except UserModuleError as e:
        raise typer.BadParameter(str(e), param_hint="--factors-module") from e
    return mods


def register(app: typer.Typer) -> None:
    """Add the ``factors`` command group to ``app``."""
    factors_app = typer.Typer(
        name="factors", invoke_without_command=True, no_args_is_help=False,
        help="Compute the daily factor table; `fbgpu factors check PATH` vets a user module.")
    app.add_typer(factors_app)

    @factors_app.callback()
    def factors(
        ctx: typer.Context,
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
        dates_per_task: int | None = typer.Option(
            None, "--dates-per-task", min=1, help="With --cluster: consecutive dates per task "
            "(one run_factors call, the next day's read and upload overlapping). Default: "
            "dates // (2 x workers), at least 1, so every worker gets two or more tasks."),
        memory_gb: str | None = typer.Option(
            None, "--memory-gb", help="Memory budget per day in GB, or 'auto' (half the free "
            "host/device memory): a day that does not fit is processed in stock chunks. "
            "Default: whole days."),
        factors_module: list[str] | None = MODULE_OPTION,
    ) -> None:
        """Compute the daily factor table (``factors``) for every input date from start to end.

        Dates whose factor partition is current (same code, ``[factors]`` config and inputs)
        are skipped. The optional TOML ``[factors]`` table sets FactorConfig fields (big-order
        rule, k, notional, min_obs ...; every field and its default: docs/factors.md).
        ``--factors-module`` adds user factors (docs/user-factors.md); a changed module
        recomputes only its own columns.
        """
        if ctx.invoked_subcommand is not None:
            return
        if not cluster:
            _preload_cpu_engine(backend)
        from fbgpu.data.store import Store
        from fbgpu.engine.backend import BackendError
        from fbgpu.factors import FactorConfig, resolve_names, run_factors

        if not Path(store).is_dir():
            raise typer.BadParameter(f"store {store} does not exist", param_hint="--store")
        # options of one route only: refused rather than silently ignored
        if not cluster and (dates_per_task is not None or workers is not None):
            raise typer.BadParameter("needs --cluster (a Dask run)",
                                     param_hint="--dates-per-task/--workers")
        if cluster and memory_gb is not None:
            raise typer.BadParameter("is not used by a --cluster run (each worker computes "
                                     "whole days)", param_hint="--memory-gb")
        try:
            cfg = FactorConfig.from_toml(config)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--config") from e
        cfg = cfg.replace(modules=_load_user_modules(cfg.modules, factors_module))
        try:
            names = resolve_names(only) if only else None
        except KeyError as e:
            raise typer.BadParameter(str(e.args[0]), param_hint="--only") from e
        try:
            if cluster:
                from fbgpu.distributed import run_factors_distributed

                summary = run_factors_distributed(Store(store), start, end, names=names,
                                                  backend=backend, config=cfg, cluster=cluster,
                                                  n_workers=workers,
                                                  dates_per_task=dates_per_task)
            else:
                summary = run_factors(Store(store), start, end, names=names, backend=backend,
                                      config=cfg, progress=progress,
                                      memory_budget=_budget(memory_gb))
        except (ValueError, BackendError) as e:
            raise typer.BadParameter(str(e)) from e
        # A StoreError (an input partition missing or damaged) is rejected input: it reaches
        # fbgpu.cli.run, which exits 2 (fbgpu.errors), not 1 with a usage banner.
        done(summary.line())

    @factors_app.command("check")
    def check(
        module: list[str] = typer.Argument(..., help="User factor module(s): .py path or "
                                           "dotted name."),
        backend: str = typer.Option("cpu", "--backend", help="Backend of the reference run."),
        days: int = typer.Option(3, "--days", min=2, help="Days of the synthetic market."),
        json_out: Path | None = typer.Option(None, "--json", help="Also write the report as "
                                             "JSON."),
    ) -> None:
        """Vet user factors on a small synthetic market: CPU vs GPU-simulator parity,
        determinism, NaN rules on empty and constant stocks, a look-ahead probe and throughput
        against the built-ins. Exit 0 when every check passes, 2 when one fails."""
        from fbgpu.factors.check import check_modules

        mods = _load_user_modules((), module)
        report = check_modules(mods, n_days=days, backend=backend)
        typer.echo(report.table())
        if json_out is not None:
            json_out.write_text(report.to_json())
        if not report.passed:
            raise typer.Exit(ExitStatus.REJECTED)
        done(f"factors check: {len(report.rows)} factor(s) passed every check")
