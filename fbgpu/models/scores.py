"""Out-of-sample scores as an in-memory panel on the backend's device, and full-band fusion.

:func:`fbgpu.models.run_train` returns its scores as a :class:`ScorePanel` (``summary.scores``)
besides writing them to the store's ``scores`` table. The panel's columns are arrays of the
backend's namespace (cupy on a GPU, numpy on the CPU): torch's score tensors are *viewed* through
DLPack, not copied, so the next stage (the backtest's OSQP step,
:func:`fbgpu.portfolio.run_backtest` with ``scores=``) reads them without the store and without a
host round trip before it. Its only crossing is :meth:`ScorePanel.row_on`, one date's vector
through :meth:`Backend.to_host` -- the "scores handed to OSQP" that the device path allows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fbgpu.engine.backend import Backend, array_module
from fbgpu.panel.preprocess import zscore


def fuse_scores(hf: Any, lf: Any, hf_weight: float = 1.0, lf_weight: float = 3.0) -> Any:
    """Full-band score ``hf_weight * z(hf) + lf_weight * z(lf)`` per date (row).

    ``z`` is the cross-sectional z-score (:func:`fbgpu.panel.preprocess.zscore`, ddof 0) over
    the stocks where *both* scores are finite; NaN elsewhere. Works on numpy and cupy arrays
    alike (``[D, S]`` float64); the result lives where the inputs do.
    """
    xp = array_module(hf)
    both = xp.isfinite(hf) & xp.isfinite(lf)
    zh = zscore(xp.where(both, hf, xp.nan))
    zl = zscore(xp.where(both, lf, xp.nan))
    return hf_weight * zh + lf_weight * zl


@dataclass
class ScorePanel:
    """Scores ``columns[name][date, stock]`` (float64, NaN = no score) on ``backend``'s device.

    ``dates`` are the predicted (decision) dates, ``symbols`` the stock axis (host numpy
    strings). Columns are named as in the ``scores`` table (``hf_gru``, ``lf_mtl``, ``fused``,
    ...); each is a score known at the close of its date.
    """

    dates: list[dt.date]
    symbols: np.ndarray
    columns: dict[str, Any]
    backend: Backend
    _positions: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._date_index = {d: i for i, d in enumerate(self.dates)}
        for name, v in self.columns.items():
            if tuple(v.shape) != (len(self.dates), len(self.symbols)):
                raise ValueError(f"score column {name!r} has shape {tuple(v.shape)}, expected "
                                 f"{(len(self.dates), len(self.symbols))}")

    @classmethod
    def from_torch(cls, dates: Sequence[dt.date], symbols: np.ndarray,
                   tensors: Mapping[str, Any], backend: Backend) -> ScorePanel:
        """Wrap torch score tensors ``[D, S]`` as backend arrays by DLPack (no copy, no sync)."""
        cols = {name: backend.xp.from_dlpack(t.detach().double().contiguous())
                for name, t in tensors.items()}
        return cls(list(dates), np.asarray(symbols), cols, backend)

    def has(self, name: str) -> bool:
        return name in self.columns

    def with_column(self, name: str, values: Any) -> ScorePanel:
        """A panel with one more column (same dates, symbols and device)."""
        return ScorePanel(self.dates, self.symbols, {**self.columns, name: values}, self.backend)

    def to_host(self) -> dict[str, np.ndarray]:
        """Every column as host numpy ``[D, S]`` (the persistence copy, one per column)."""
        return {name: self.backend.to_host(v) for name, v in self.columns.items()}

    def row_on(self, name: str, date: dt.date, symbols: Sequence[str] | np.ndarray,
               index: Mapping[str, int] | None = None) -> np.ndarray:
        """Column ``name`` on ``date`` aligned on ``symbols`` (NaN where absent), on the host.

        The one sanctioned device->host crossing of the hand-off to OSQP: one vector per
        decision date. A date without scores gives all-NaN without touching the device.
        """
        out = np.full(len(symbols), np.nan)
        i = self._date_index.get(date)
        if i is None:
            return out
        # Keyed by the symbols' content (an id could be reused by a later, different list):
        # hashing a few thousand strings per decision date is cheap next to the solve.
        key = tuple(str(s) for s in symbols)
        pos = self._positions.get(key)
        if pos is None:
            where = index if index is not None else {s: k for k, s in enumerate(symbols)}
            pos = np.array([where.get(str(s), -1) for s in self.symbols], dtype=np.int64)
            self._positions[key] = pos
        vals = self.backend.to_host(self.columns[name][i])
        keep = pos >= 0
        out[pos[keep]] = vals[keep]
        return out
