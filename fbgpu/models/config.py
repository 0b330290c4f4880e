"""Configuration of model training (pydantic): every key has a documented default.

The defaults are the report's full settings (spec/research.md, "High-frequency deep-learning
factor" and "Low-frequency multi-task factor"). :data:`DEMO_OVERRIDES` is the small override the
demo and the tests use so that a whole rolling run fits in minutes on two CPU cores.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Model kinds accepted by :func:`fbgpu.models.run_train` (and ``fbgpu train --model``).
MODEL_KINDS: tuple[str, ...] = (
    "hf",
    "lf",
    "lf-daily",
    "lf-separate",
    "lf-unshared",
    "fullband-mtl",
)

#: Score column written to the ``scores`` table for each model kind.
SCORE_COLUMNS: dict[str, str] = {
    "hf": "hf_gru",
    "lf": "lf_mtl",
    "lf-daily": "lf_daily",
    "lf-separate": "lf_separate",
    "lf-unshared": "lf_unshared",
    "fullband-mtl": "fullband_mtl",
}

#: The fused score column (``fusion_hf_weight * z(hf_gru) + fusion_lf_weight * z(lf_mtl)``).
FUSED_COLUMN = "fused"

ModelKind = Literal["hf", "lf", "lf-daily", "lf-separate", "lf-unshared", "fullband-mtl"]


class TrainConfig(BaseModel):
    """Everything that shapes a model run; the defaults reproduce the report's protocol.

    Attributes (default in brackets):

    * ``hidden_size`` [30]: GRU hidden units (and BatchNorm width) of every encoder.
    * ``hf_window`` [40]: trading days of the 27-factor panel per HF sample (tensor ``[40, 27]``).
    * ``hf_factors`` ["all"]: the HF model's input factors: ``"all"`` (every column of the
      ``factors`` table, user factors included) or a list of names.
    * ``lf_daily_len`` [40], ``lf_weekly_len`` [20], ``lf_monthly_len`` [12]: bars per LF
      sequence; weekly/monthly bars are aggregated from daily bars, the current one partial.
    * ``lf_inputs`` ["relative"]: LF input representation before the per-position z-score:
      ``"relative"`` divides each sequence by its last value (the report's construction);
      ``"logdiff"`` uses ``log(price_t / close_{t-1})`` and ``log(volume_t / mean volume)``
      (returns and volume ratios; see docs/models.md). On real CSI 500 bars (issue 17, one
      seed each) it beat ``"relative"`` (+4.4% vs +3.8% weekly RankIC); not enough evidence to
      change the report's construction, so ``"relative"`` stays the default.
    * ``label_horizon`` [10]: label = ``vwap[T+1+h] / vwap[T+1] - 1`` (h = 10: T+1 -> T+11),
      z-scored per date over the pool.
    * ``sample_every`` [5]: a sample date every 5th trading day (the rebalance grid).
    * ``valid_fraction`` [0.2]: the last 20% of a window's training dates (by time) validate (4:1).
    * ``purge`` [True]: drop training dates whose label window reaches into the validation
      period (so early stopping never sees a label overlapping a training label).
    * ``batch_size`` [5000]: samples per batch, upper bound; batches are made of whole dates.
    * ``lr`` [0.005]: Adam learning rate.
    * ``weight_decay`` [0.0]: Adam's L2 penalty on every weight (``torch.optim.Adam``'s
      ``weight_decay``; 0 = none, the report's setting).
    * ``dropout`` [0.0]: probability of the Dropout between each head's BatchNorm and its Linear
      layer, in training only (``fbgpu.models.networks``; 0 = none, the report's setting).
    * ``max_epochs`` [100], ``patience`` [10]: early stopping on the validation IC.
    * ``mtl_lambda`` [0.01]: weight of the pairwise head-correlation penalty in the multi-task loss.
    * ``seeds`` [(0, 1, 2)]: one model per seed and window; predictions are averaged.
    * ``retrain_months`` [(1, 7)]: retrain on the first trading day of these months.
    * ``min_train_dates`` [100]: sample dates of history needed before the first retrain.
    * ``min_date_samples`` [10]: a date with fewer valid samples carries no weight in a loss.
    * ``fusion_hf_weight`` [1.0], ``fusion_lf_weight`` [3.0]: fused = 1 z(HF) + 3 z(LF).
    * ``lf_cache_bytes`` [2 GiB]: LF feature tensors of all sample dates are precomputed when they
      fit in this many bytes, otherwise built per batch.
    * ``deterministic`` [True]: ask torch for deterministic kernels (see docs/models.md).
    * ``cpu_threads`` [1]: torch intra-op threads while training/predicting on the CPU (0 =
      torch's default, one per core). One by default: a GRU step is a small matrix product where
      OpenMP synchronisation costs more than it gains, and on a machine whose cores are busy with
      other processes multithreaded OpenMP GRUs slow down by orders of magnitude (measured on
      the 2-core development machine: 2.7 s vs 3 ms for one forward/backward of a 100-sample
      batch). ``benchmarks/bench_models.py`` measures both.
    * ``fit_workers`` [0]: processes that run a training run's fits (one per model kind, window
      and seed) on the CPU: 1 = one after another in this process; ``W > 1`` = ``W`` forked
      workers; 0 = auto, one worker per ``cpu_threads`` of the usable CPUs
      (:mod:`fbgpu.models.executor`). The fits are independent and seeded, so the scores are the
      same bits for any value; a GPU run always fits in the calling process. Not part of a model's
      hash.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden_size: int = Field(30, ge=1)
    hf_window: int = Field(40, ge=2)
    hf_factors: str | tuple[str, ...] = "all"
    lf_daily_len: int = Field(40, ge=2)
    lf_weekly_len: int = Field(20, ge=2)
    lf_monthly_len: int = Field(12, ge=2)
    lf_inputs: Literal["relative", "logdiff"] = "relative"
    label_horizon: int = Field(10, ge=1)
    sample_every: int = Field(5, ge=1)
    valid_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    purge: bool = True
    batch_size: int = Field(5000, ge=2)
    lr: float = Field(0.005, gt=0.0)
    max_epochs: int = Field(100, ge=1)
    patience: int = Field(10, ge=1)
    mtl_lambda: float = Field(0.01, ge=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    retrain_months: tuple[int, ...] = (1, 7)
    min_train_dates: int = Field(100, ge=2)
    min_date_samples: int = Field(10, ge=2)
    fusion_hf_weight: float = 1.0
    fusion_lf_weight: float = 3.0
    lf_cache_bytes: int = Field(2 << 30, ge=0)
    deterministic: bool = True
    cpu_threads: int = Field(1, ge=0)
    fit_workers: int = Field(0, ge=0)

    @field_validator("hf_factors")
    @classmethod
    def _hf_factors(cls, v: str | tuple[str, ...]) -> str | tuple[str, ...]:
        if isinstance(v, str) and v != "all":
            raise ValueError(f"hf_factors must be \"all\" or a list of factor names, got {v!r}")
        if not isinstance(v, str) and not v:
            raise ValueError("hf_factors: an empty list selects no input")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds_nonempty(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("seeds must hold at least one seed")
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v

    @field_validator("retrain_months")
    @classmethod
    def _months_valid(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(m < 1 or m > 12 for m in v):
            raise ValueError(f"retrain_months must be months 1..12, got {v}")
        return tuple(sorted(set(v)))

    @property
    def label_end_offset(self) -> int:
        """Trading days from T to the last day of the label window (T+11 for h = 10)."""
        return self.label_horizon + 1

    @property
    def history_days(self) -> int:
        """Trading days of history a sample needs (its first sample date is this index)."""
        return max(self.hf_window, self.lf_daily_len) - 1


#: The small override of the demo: one seed, at most 15 epochs, a short warm-up (24 sample dates,
#: about half a year) so that the demo market (500 days from 2022-01-03) has two half-year windows
#: (January and July 2023) and scores from 2023-01 on.
DEMO_OVERRIDES: dict[str, Any] = {
    "seeds": (0,),
    "max_epochs": 15,
    "patience": 4,
    "min_train_dates": 24,
    "retrain_months": (1, 7),
}


def load_train_config(
    overrides: dict[str, Any] | None = None, *, demo: bool = False
) -> TrainConfig:
    """A :class:`TrainConfig` from defaults, the demo override (if ``demo``) and ``overrides``.

    Raises ``ValueError`` naming the offending key for unknown keys or invalid values.
    """
    values: dict[str, Any] = dict(DEMO_OVERRIDES) if demo else {}
    values.update(overrides or {})
    for key in ("seeds", "retrain_months"):
        if key in values and isinstance(values[key], list):
            values[key] = tuple(values[key])
    return TrainConfig(**values)
