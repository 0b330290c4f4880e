"""Rolling retrain windows: what a model retrained on date R may know, and what it predicts.

A model is retrained on the first trading day R of each month in ``config.retrain_months``
(January and July by default). It may use the samples whose label window ends before R::

    T + label_horizon + 1 < R      (T+11 < R for the 10-day label)

because the label of T is known only at the close of T+11: with the strict inequality every
training label is known before R opens, so the model can be fitted before R's data arrive.
These training dates are split by time 4:1 into fitting and validation dates (early stopping);
with ``purge`` the fitting dates whose label window reaches the first validation date are
dropped. The window's models predict the sample dates from R up to (excluding) the next retrain
date; the last window predicts to the end of the data. The first window is the first R with at
least ``min_train_dates`` training dates; sample dates before it get no out-of-sample prediction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fbgpu.errors import ExitStatus
from fbgpu.models.config import TrainConfig
from fbgpu.panel.market import rebalance_indices


@dataclass(frozen=True)
class RetrainWindow:
    """One retraining: its date, the dates it fits/validates on, and the dates it predicts."""

    retrain_day: int
    retrain_date: dt.date
    fit_days: tuple[int, ...]
    valid_days: tuple[int, ...]
    predict_days: tuple[int, ...]
    label_end_offset: int

    @property
    def name(self) -> str:
        """Directory name of the window's checkpoints (the retrain date, ISO)."""
        return self.retrain_date.isoformat()

    @property
    def train_days(self) -> tuple[int, ...]:
        """Every sample day whose label the window uses (fitting and validation)."""
        return tuple(sorted(self.fit_days + self.valid_days))

    @property
    def last_label_day(self) -> int:
        """Day index of the latest label end used in training (< ``retrain_day``)."""
        return max(self.train_days) + self.label_end_offset


def retrain_days(dates: Sequence[dt.date], months: Sequence[int]) -> list[int]:
    """Indices of the first trading day of each month in ``months`` (never day 0)."""
    out = []
    for d in range(1, len(dates)):
        if dates[d].month != dates[d - 1].month and dates[d].month in months:
            out.append(d)
    return out


def make_windows(
    dates: Sequence[dt.date], grid: np.ndarray, config: TrainConfig
) -> list[RetrainWindow]:
    """The rolling windows over ``dates`` for sample days ``grid`` (see module doc)."""
    off = config.label_end_offset
    grid = np.asarray(grid, dtype=np.int64)
    points = retrain_days(dates, config.retrain_months)
    windows: list[RetrainWindow] = []
    for i, R in enumerate(points):
        known = grid[grid + off < R]
        if len(known) < config.min_train_dates:
            continue
        n_valid = max(1, round(len(known) * config.valid_fraction))
        valid = known[-n_valid:]
        fit = known[:-n_valid]
        if config.purge:
            fit = fit[fit + off < valid[0]]
        if len(fit) < 1:
            continue
        end = points[i + 1] if i + 1 < len(points) else len(dates)
        pred = grid[(grid >= R) & (grid < end)]
        if len(pred) == 0:
            continue
        windows.append(
            RetrainWindow(
                retrain_day=int(R),
                retrain_date=dates[R],
                fit_days=tuple(int(x) for x in fit),
                valid_days=tuple(int(x) for x in valid),
                predict_days=tuple(int(x) for x in pred),
                label_end_offset=off,
            )
        )
    return windows


def sample_grid(n_dates: int, config: TrainConfig,
                sample_days: Sequence[int] | None = None) -> np.ndarray:
    """Sample day indices (host int64) of a market of ``n_dates`` trading days: every
    ``config.sample_every``-th day from day 0 (the rebalance dates,
    :func:`fbgpu.panel.market.rebalance_indices`; or ``sample_days``), those with
    ``config.history_days`` of history."""
    days = (np.asarray(sample_days, dtype=np.int64) if sample_days is not None
            else rebalance_indices(n_dates, config.sample_every, 0))
    return days[days >= config.history_days]


def calendar_windows(dates: Sequence[dt.date], config: TrainConfig) -> list[RetrainWindow]:
    """The retrain windows a market trading on ``dates`` gives ``config`` on the default sample
    grid, from its calendar alone: what a training run on that market can have at most (a run
    whose data start later has no more), so an empty list means no run can train."""
    return make_windows(dates, sample_grid(len(dates), config), config)


class NoRetrainWindowError(ValueError):
    """A market too short for the training configuration: no retrain date has
    ``min_train_dates`` training dates before it."""

    # fbgpu/errors.py: found while running (plan_rolling). run_train checks the market's
    # calendar before it reads or writes anything and raises it as REJECTED (the store lacks
    # what the step needs); the demo checks before any stage (a DemoConfigError, USAGE).
    exit_status = ExitStatus.FAILED

    def __init__(self, n_dates: int, config: TrainConfig, hint: str = "") -> None:
        self.n_dates = n_dates
        super().__init__(
            f"no retrain window: {n_dates} trading days with sample every "
            f"{config.sample_every} days give fewer than min_train_dates="
            f"{config.min_train_dates} training dates before any retrain month "
            f"{config.retrain_months}" + (f"; {hint}" if hint else ""))


def require_retrain_window(dates: Sequence[dt.date], config: TrainConfig, hint: str = "") -> None:
    """Raise :class:`NoRetrainWindowError` (with ``hint``) when a market trading on ``dates``
    leaves ``config`` no retrain window (:func:`calendar_windows`): the check a caller makes
    before reading or writing anything."""
    if not calendar_windows(dates, config):
        raise NoRetrainWindowError(len(dates), config, hint)
