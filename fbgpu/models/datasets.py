"""Model samples built on the device from dense ``[days, stocks, ...]`` arrays.

Inputs (:class:`ModelInputs`) are dense arrays over the trading calendar (numpy on the CPU
backend, cupy on the GPU one): the pool mask ``[D, S]``, the z-scored training label ``[D, S]``,
the preprocessed 27-factor panel ``[D, S, F]`` and the adjusted daily bars ``[D, S, 6]``. They are
handed to torch once, through DLPack (:func:`fbgpu.models.device.to_torch`, zero copy), and every
sample is an index into them:

* **HF sample (T, i)**: ``panel[T-39 : T+1, i, :]``, a ``[40, 27]`` window. ``Tensor.unfold``
  makes all windows one strided *view* of the panel; a batch gathers only its own rows.
* **LF sample (T, i)**: three sequences of ``[L, 6]`` bars (open, high, low, close, vwap,
  volume): the last 40 daily bars, the last 20 weekly bars and the last 12 monthly bars. Weekly and
  monthly bars are period-to-date aggregates of the daily bars (open = first open of the period,
  high = max, low = min, close = last close, vwap = volume-weighted mean of daily vwaps,
  volume = sum), so the current week/month is the partial one ending at T and earlier ones are
  complete. Each feature's series is divided by its own last value (the value at T); then every
  (position, feature) is z-scored across the pool stocks of date T; what is still missing
  (before listing, suspended days, a zero last volume) becomes 0.
* **Label at T**: ``vwap[T+11] / vwap[T+1] - 1`` (adjusted vwap), z-scored over the pool of T
  (:func:`make_labels`); it is known only at the close of T+11.

Sample dates are every ``sample_every``-th trading day on a grid anchored at the first day of the
calendar (day 0, 5, 10, ...), from the first day with a full 40-day window on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fbgpu.engine.guard import sanctioned
from fbgpu.errors import ExitStatus
from fbgpu.models.config import TrainConfig
from fbgpu.models.device import cpu_threads, to_torch, upload_index
from fbgpu.models.rolling import sample_grid
from fbgpu.models.zscore import zscore
from fbgpu.panel.market import zscored_return

#: Daily bar features of the LF models, in tensor order.
LF_BAR_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "vwap", "volume")

#: Source names of the LF sequences, in the order they are concatenated.
LF_SOURCES: tuple[str, ...] = ("daily", "weekly", "monthly")


class ModelDataError(ValueError):
    """Model inputs are inconsistent (shapes, calendar); the message names the array."""

    exit_status = ExitStatus.REJECTED  # fbgpu/errors.py: the command line's exit status


@dataclass
class ModelInputs:
    """Dense arrays over ``D`` trading days and ``S`` stocks that the models read.

    ``hf_panel`` (``[D, S, F]``, NaN where missing) is needed by ``hf`` and ``fullband-mtl``;
    ``bars`` (``[D, S, 6]`` in :data:`LF_BAR_FIELDS` order, adjusted prices, NaN on days without
    trading) by the LF models. ``label`` is the z-scored training label (NaN where undefined),
    ``pool`` the scoring pool of each date: the stocks whose inputs are normalised together and
    that are scored at T; it must be known at the close of T (:meth:`Market.scoring_pool`), never
    the T+1-tradable pool, which belongs in the labels. Arrays may be numpy, cupy or torch, all
    on one device.
    ``sample_days`` optionally fixes the sample grid (day indices); by default every
    ``sample_every``-th day from day 0.
    """

    dates: Sequence[dt.date]
    symbols: np.ndarray
    pool: Any
    label: Any
    hf_panel: Any = None
    bars: Any = None
    factor_names: tuple[str, ...] = ()
    sample_days: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        D, S = len(self.dates), len(self.symbols)
        for name in ("pool", "label"):
            shape = tuple(getattr(self, name).shape)
            if shape != (D, S):
                raise ModelDataError(f"ModelInputs.{name} has shape {shape}, expected {(D, S)}")
        if self.hf_panel is not None and tuple(self.hf_panel.shape[:2]) != (D, S):
            raise ModelDataError(
                f"ModelInputs.hf_panel has shape {tuple(self.hf_panel.shape)}, expected "
                f"({D}, {S}, F)"
            )
        if self.bars is not None and tuple(self.bars.shape) != (D, S, len(LF_BAR_FIELDS)):
            raise ModelDataError(
                f"ModelInputs.bars has shape {tuple(self.bars.shape)}, expected "
                f"({D}, {S}, {len(LF_BAR_FIELDS)})"
            )
        if list(self.dates) != sorted(set(self.dates)):
            raise ModelDataError("ModelInputs.dates must be strictly increasing trading days")

    @property
    def n_factors(self) -> int:
        return 0 if self.hf_panel is None else int(self.hf_panel.shape[2])

    def grid(self, config: TrainConfig) -> np.ndarray:
        """Sample day indices (host int64): the sample grid from the first full-history day
        (:func:`fbgpu.models.rolling.sample_grid`)."""
        return sample_grid(len(self.dates), config, self.sample_days)


# --------------------------------------------------------------------------- labels (any xp)
def make_labels(vwap: Any, pool: Any, horizon: int = 10, xp: Any = None) -> Any:
    """Training label ``[D, S]``: ``vwap[T+1+h] / vwap[T+1] - 1`` z-scored over the pool of T.

    :func:`fbgpu.panel.market.zscored_return` (the one label definition, which
    :meth:`~fbgpu.panel.market.Market.labels` applies to adjusted trade prices) of a bare
    ``[D, S]`` vwap panel; runs where ``vwap`` lives (``xp`` is accepted for compatibility and
    not needed).
    """
    return zscored_return(vwap, pool, 1, 1 + horizon)


# --------------------------------------------------------------------------- calendar indices
def _period_ids(dates: Sequence[dt.date], kind: str) -> np.ndarray:
    if kind == "week":  # ISO week: Monday-based; the ordinal makes weeks across years distinct
        return np.array([(d.toordinal() - d.weekday()) // 7 for d in dates], dtype=np.int64)
    if kind == "month":
        return np.array([d.year * 12 + d.month - 1 for d in dates], dtype=np.int64)
    raise ValueError(kind)


def period_tables(dates: Sequence[dt.date], kind: str, length: int) -> tuple[np.ndarray, ...]:
    """Host index tables of one bar frequency over the calendar.

    Returns ``(start, seq)``: ``start[d]`` is the first trading day of d's period (week/month);
    ``seq[d, j]`` (``[D, length]``) is the day whose period-to-date bar is bar ``j`` of the
    sequence ending at d: the last trading day of each of the ``length - 1`` previous periods
    that have trading days, then d itself (the partial current period); -1 before the data.
    """
    pid = _period_ids(dates, kind)
    D = len(pid)
    new = np.r_[True, pid[1:] != pid[:-1]]
    rank = np.cumsum(new) - 1  # period ordinal among periods with trading days
    first = np.flatnonzero(new)
    last = np.r_[first[1:] - 1, D - 1]
    start = first[rank]
    seq = np.full((D, length), -1, dtype=np.int64)
    seq[:, -1] = np.arange(D)
    for j in range(length - 1):
        back = length - 1 - j  # periods before the current one
        r = rank - back
        ok = r >= 0
        seq[ok, j] = last[r[ok]]
    return start, seq


def daily_table(D: int, length: int) -> np.ndarray:
    """``[D, length]`` day indices ``d-length+1 .. d`` (-1 before the data)."""
    seq = np.arange(D)[:, None] - np.arange(length - 1, -1, -1)[None, :]
    return np.where(seq >= 0, seq, -1).astype(np.int64)


# --------------------------------------------------------------------------- torch side
def period_to_date_bars(bars: torch.Tensor, start: torch.Tensor, max_len: int) -> torch.Tensor:
    """Period-to-date bars ``[D, S, 6]`` from daily bars ``[D, S, 6]`` and period starts ``[D]``.

    Row d aggregates days ``start[d] .. d``: open = first finite open, high = max, low = min,
    close = close at d, vwap = sum(vwap * volume) / sum(volume) over days with both, volume = sum.
    NaN days are skipped. Vectorised over days and stocks; the loop runs over the ``max_len``
    offsets within a period (<= 5 for weeks, <= 23 for months).
    """
    o, h, lo, c, vw, vol = (bars[..., k] for k in range(6))
    D = bars.shape[0]
    nan = torch.full((), float("nan"), dtype=bars.dtype, device=bars.device)  # no upload
    first_open = torch.full_like(o, float("nan"))
    high = torch.full_like(h, float("nan"))
    low = torch.full_like(lo, float("nan"))
    pv = torch.zeros_like(vw)
    vsum_p = torch.zeros_like(vw)
    vsum = torch.zeros_like(vol)
    vol_seen = torch.zeros_like(vol, dtype=torch.bool)
    days = torch.arange(D, device=bars.device)
    for k in range(min(max_len, D)):
        src_ok = (days - k >= start)[:, None]  # [D, 1]: day d-k lies in d's period
        so, sh, sl, svw, svol = (_shift_days(x, k) for x in (o, h, lo, vw, vol))
        take_open = src_ok & torch.isfinite(so)
        first_open = torch.where(take_open, so, first_open)  # later k = earlier day: overwrite
        high = torch.where(src_ok, torch.fmax(high, sh), high)
        low = torch.where(src_ok, torch.fmin(low, sl), low)
        both = src_ok & torch.isfinite(svw) & torch.isfinite(svol) & (svol > 0)
        pv = pv + torch.where(both, svw * svol, 0.0)
        vsum_p = vsum_p + torch.where(both, svol, 0.0)
        fin_vol = src_ok & torch.isfinite(svol)
        vsum = vsum + torch.where(fin_vol, svol, 0.0)
        vol_seen = vol_seen | fin_vol
    vwap = torch.where(vsum_p > 0, pv / vsum_p.clamp(min=1e-30), nan)
    volume = torch.where(vol_seen, vsum, nan)
    return torch.stack([first_open, high, low, c, vwap, volume], -1)


def _shift_days(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` moved ``k`` days later along dim 0 (row d holds day d-k), NaN-padded."""
    if k == 0:
        return x
    pad = torch.full((k, *x.shape[1:]), float("nan"), dtype=x.dtype, device=x.device)
    return torch.cat([pad, x[:-k]], 0)


def _gather_days(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``src [D, S, F]`` at day indices ``idx [n, L]`` (-1 = missing) -> ``[n, L, S, F]``."""
    out = src[idx.clamp(min=0)]
    return torch.where((idx >= 0)[..., None, None], out, torch.nan)


def _relative_to_last(x: torch.Tensor) -> torch.Tensor:
    """Divide each ``[n, L, S, F]`` series by its last value; non-finite results -> NaN."""
    r = x / x[:, -1:]
    return torch.where(torch.isfinite(r), r, torch.nan)


def _log_returns(x: torch.Tensor) -> torch.Tensor:
    """Return-style LF inputs of ``[n, L, S, 6]`` bars (LF_BAR_FIELDS order); NaN where undefined.

    Prices (open, high, low, close, vwap) at position t become ``log(p_t / close_{t-1})`` (the
    close-to-close log return for the close, the overnight gap for the open, the range for high
    and low); position 0 has no previous close and is NaN. Volume becomes the volume ratio
    ``log(v_t / mean_L(v))`` over the sequence's positive volumes (0-volume days -> NaN).
    """
    prev_close = torch.cat([torch.full_like(x[:, :1, :, 3:4], torch.nan), x[:, :-1, :, 3:4]], 1)
    prices = torch.log(x[..., :5] / prev_close)
    v = x[..., 5:6]
    pos = torch.isfinite(v) & (v > 0)
    mean = (torch.where(pos, v, 0.0).sum(1, keepdim=True)
            / pos.sum(1, keepdim=True).clamp(min=1))
    vol = torch.log(torch.where(pos, v, torch.nan) / mean)
    out = torch.cat([prices, vol], -1)
    return torch.where(torch.isfinite(out), out, torch.nan)


#: ``TrainConfig.lf_inputs`` -> the per-sequence transform applied before the z-score.
LF_TRANSFORMS = {"relative": _relative_to_last, "logdiff": _log_returns}


@dataclass
class Batch:
    """Samples of a few whole dates: inputs per source, labels, batch-local date index."""

    xs: dict[str, torch.Tensor]
    label: torch.Tensor  # [B]
    group: torch.Tensor  # [B] in 0..n_groups-1
    n_groups: int
    stock: torch.Tensor  # [B] stock index
    size: int


class DeviceSamples:
    """All model inputs on one torch device, with sample gathering by date.

    ``sources`` lists what the models need: ``hf`` and/or the LF sequences. The panel is used in
    place (DLPack view; a float32 copy only if it is float64), and LF features of every sample
    date are precomputed when they fit in ``config.lf_cache_bytes``.
    """

    def __init__(
        self,
        inputs: ModelInputs,
        config: TrainConfig,
        device: torch.device,
        sources: Sequence[str],
    ) -> None:
        self.config = config
        self.device = device
        self.dates = list(inputs.dates)
        self.n_days = len(self.dates)
        self.n_stocks = len(inputs.symbols)
        self.sources = tuple(sources)
        self.pool = to_torch(inputs.pool, device).to(torch.bool)
        self.label = to_torch(inputs.label, device, torch.float32)
        self.label_ok = torch.isfinite(self.label)
        # The samples of every date, for training (pool and a finite label) and scoring (pool),
        # found once: batches then slice them with host offsets instead of a per-batch nonzero
        # (a device sync for its size).
        self._samples = {True: self._sample_table(self.pool & self.label_ok),
                         False: self._sample_table(self.pool)}
        self.grid = inputs.grid(config)
        self.hf_windows: torch.Tensor | None = None
        self.hf_panel: torch.Tensor | None = None
        if "hf" in self.sources:
            if inputs.hf_panel is None:
                raise ModelDataError("the HF sources need ModelInputs.hf_panel")
            self.hf_panel = to_torch(inputs.hf_panel, device, torch.float32)
            L = config.hf_window
            # [D-L+1, S, F, L] strided view: window of day d is row d-L+1; no copy.
            self.hf_windows = self.hf_panel.unfold(0, L, 1)
        self.lf_cache: torch.Tensor | None = None
        self._lf_pos: dict[int, int] = {}
        if any(s in LF_SOURCES for s in self.sources):
            if inputs.bars is None:
                raise ModelDataError("the LF sources need ModelInputs.bars")
            with cpu_threads(config.cpu_threads, device):
                self._init_lf(to_torch(inputs.bars, device, torch.float32))

    @staticmethod
    def _sample_table(mask: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """``(stocks, offsets)``: the stock index of every ``True`` of ``mask`` ``[D, S]``, date
        by date in stock order, and the host offsets ``[D + 1]`` of each date's run."""
        with sanctioned("sample index"):  # once per model fit: one D-vector and the nonzero
            counts = mask.sum(1).cpu().numpy().astype(np.int64)
            stocks = mask.nonzero()[:, 1]
        return stocks, np.concatenate([[0], np.cumsum(counts)])

    # ----------------------------------------------------------------- LF features
    def _init_lf(self, bars: torch.Tensor) -> None:
        cfg, D = self.config, self.n_days
        self.bars = bars
        wk_start, wk_seq = period_tables(self.dates, "week", cfg.lf_weekly_len)
        mo_start, mo_seq = period_tables(self.dates, "month", cfg.lf_monthly_len)
        dev = self.device
        self.week_bars = period_to_date_bars(bars, upload_index(wk_start, dev), 7)
        self.month_bars = period_to_date_bars(bars, upload_index(mo_start, dev), 31)
        self.seq_daily = upload_index(daily_table(D, cfg.lf_daily_len), dev)
        self.seq_week = upload_index(wk_seq, dev)
        self.seq_month = upload_index(mo_seq, dev)
        self.lf_lengths = (cfg.lf_daily_len, cfg.lf_weekly_len, cfg.lf_monthly_len)
        per_date = self.n_stocks * sum(self.lf_lengths) * len(LF_BAR_FIELDS) * 4
        if per_date * len(self.grid) <= cfg.lf_cache_bytes and len(self.grid):
            parts = [
                self.lf_features(self.grid[i : i + 64]) for i in range(0, len(self.grid), 64)
            ]
            self.lf_cache = torch.cat(parts, 0)
            self._lf_pos = {int(d): i for i, d in enumerate(self.grid)}

    def lf_features(self, days: Sequence[int] | np.ndarray) -> torch.Tensor:
        """LF inputs of every stock at ``days``: ``[n, S, 40+20+12, 6]`` (see module doc)."""
        day_t = upload_index(days, self.device)
        blocks = []
        for src, seq in (
            (self.bars, self.seq_daily),
            (self.week_bars, self.seq_week),
            (self.month_bars, self.seq_month),
        ):
            blocks.append(LF_TRANSFORMS[self.config.lf_inputs](_gather_days(src, seq[day_t])))
        x = torch.cat(blocks, 1)  # [n, L, S, 6]
        # Per (date, position, feature) across the pool; missing -> 0, the neutral input.
        z = zscore(x, 2, self.pool[day_t][:, None, :, None], min_var=1e-12, keep_missing=False)
        return z.permute(0, 2, 1, 3).contiguous()

    def lf_equal_weight(self, days: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Equal-weight composite of the LF inputs at ``days``: ``[n, S]``, NaN outside the pool.

        ``c = mean over the 40 + 20 + 12 positions and 6 features of the z-scored inputs`` (the
        same tensors the LF models read), i.e. the linear combination a model would give with
        every weight equal: the no-learning baseline of exhibit 52. Dimensionless (a mean of
        z-scores).
        """
        days = np.asarray(days, dtype=np.int64)
        # 64 dates at a time, as the feature cache is built: [n, S, 72, 6] for every scored date
        # at once would be tens of GB at full-market size.
        parts = [self.lf_features(days[i : i + 64]).mean(dim=(2, 3))
                 for i in range(0, len(days), 64)]
        c = torch.cat(parts, 0) if parts else torch.zeros(0, self.n_stocks, device=self.device)
        day_t = upload_index(days, self.device)
        return torch.where(self.pool[day_t], c, torch.nan)

    def _lf_for(self, days: Sequence[int]) -> torch.Tensor:
        if self.lf_cache is not None and all(int(d) in self._lf_pos for d in days):
            pos = upload_index([self._lf_pos[int(d)] for d in days], self.device)
            return self.lf_cache[pos]
        return self.lf_features(days)

    # ----------------------------------------------------------------- batches
    def batch(self, days: Sequence[int], *, train: bool) -> Batch:
        """Samples of ``days``: pool stocks, and for training only those with a finite label."""
        day_np = np.asarray(days, dtype=np.int64)
        stocks, off = self._samples[train]
        counts = off[day_np + 1] - off[day_np]
        # rows in (local date, stock) order, as a nonzero over pool[days] would give them
        s = torch.cat([stocks[off[d] : off[d + 1]] for d in day_np]) if len(day_np) \
            else stocks[:0]
        g = upload_index(np.repeat(np.arange(len(day_np)), counts), self.device)
        d = upload_index(np.repeat(day_np, counts), self.device)
        n = int(counts.sum())
        xs: dict[str, torch.Tensor] = {}
        if "hf" in self.sources:
            assert self.hf_windows is not None
            w = self.hf_windows[d - (self.config.hf_window - 1), s]  # [B, F, L]
            xs["hf"] = torch.nan_to_num(w.transpose(1, 2), nan=0.0)
        if any(src in LF_SOURCES for src in self.sources):
            feats = self._lf_for(days)[g, s]  # [B, 72, 6]
            o = 0
            for name, n in zip(LF_SOURCES, self.lf_lengths, strict=True):
                if name in self.sources:
                    xs[name] = feats[:, o : o + n]
                o += n
        label = torch.nan_to_num(self.label[d, s], nan=0.0)
        return Batch(xs, label, g, len(days), s, n)

    def date_batches(self, days: Sequence[int], rng: np.random.Generator | None) -> list[list[int]]:
        """Whole dates per batch, ``max(1, batch_size // S)`` of them (so <= batch_size samples).

        ``rng`` shuffles the date order (training); ``None`` keeps time order.
        """
        order = np.asarray(days, dtype=np.int64)
        if rng is not None:
            order = order[rng.permutation(len(order))]
        per = max(1, self.config.batch_size // max(self.n_stocks, 1))
        return [order[i : i + per].tolist() for i in range(0, len(order), per)]
