"""``fbgpu backtest``: weekly OSQP index-enhancement portfolios and their performance tables."""

from __future__ import annotations

from pathlib import Path

import typer

from fbgpu.cli.common import BACKEND_OPTION, CONFIG_OPTION, STORE_OPTION, done, load_toml


def _parse_caps(text: str) -> tuple[float, ...]:
    try:
        caps = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise typer.BadParameter(f"not a comma-separated list of numbers: {text!r}",
                                 param_hint="--turnover") from e
    if not caps:
        raise typer.BadParameter("give at least one cap, e.g. 0.3,0.4,0.5",
                                 param_hint="--turnover")
    return caps


def register(app: typer.Typer) -> None:
    @app.command("backtest")
    def backtest(
        store: Path = STORE_OPTION,
        score: str = typer.Option(
            "fused", "--score",
            help="Score column: looked up in the scores table, then in factors (a raw factor); "
            "a leading - negates it (-name: smaller is better).",
        ),
        index: str = typer.Option("all", "--index", help="csi500 | csi1000 | all"),
        turnover: str = typer.Option(
            "0.3,0.4,0.5", "--turnover", help="Two-sided turnover caps per rebalance."
        ),
        backend: str = BACKEND_OPTION,
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """Weekly index enhancement: OSQP at each rebalance, trade at T+1 vwap, 0.2% per side.

        Writes reports/backtest/ (performance and year-by-year tables, cumulative excess
        curves, the rebalance log) and the weights table. The optimizer runs on the CPU whatever
        --backend says (OSQP is a CPU solver); the option is accepted for uniformity.
        """
        from fbgpu.data.store import Store
        from fbgpu.portfolio.backtest import BacktestConfig, BacktestError, run_backtest

        del backend  # OSQP runs on the CPU
        if not store.is_dir():
            raise typer.BadParameter(f"store {store} does not exist", param_hint="--store")
        caps = _parse_caps(turnover)
        try:
            cfg = BacktestConfig.model_validate(load_toml(config, "backtest"))
        except ValueError as e:
            raise typer.BadParameter(f"[backtest] section: {e}", param_hint="--config") from e
        try:
            results = run_backtest(Store(store), score=score, index=index, turnover=caps,
                                   config=cfg, progress=True)
        except BacktestError as e:
            raise typer.BadParameter(str(e)) from e
        parts = []
        for res in results:
            for row in res.performance_table(cfg.periods_per_year)[:-1]:
                parts.append(f"{res.index} {row['portfolio']}: excess "
                             f"{row['annual_excess']:.2%} IR {row['information_ratio']:.2f}")
        n_reb = len(results[0].decision_dates) if results else 0
        done(f"backtest {score}: {n_reb} rebalances; " + "; ".join(parts)
             + f" -> {Store(store).report_dir / 'backtest'}")
