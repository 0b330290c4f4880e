"""Models layer: the HF GRU factor, the LF multi-task GRU and its ablations, full-band fusion.

* :mod:`fbgpu.models.config` - :class:`TrainConfig` (report defaults) and the demo override;
* :mod:`fbgpu.models.networks` - one multi-source GRU module covering every architecture;
* :mod:`fbgpu.models.losses` - per-date IC loss and the multi-task loss;
* :mod:`fbgpu.models.datasets` - device-resident samples (HF windows, LF bars, labels);
* :mod:`fbgpu.models.rolling` - retrain windows without look-ahead;
* :mod:`fbgpu.models.training` / :mod:`fbgpu.models.runner` - fitting, ensembles, resume;
* :mod:`fbgpu.models.api` - :func:`run_train` on a store, the ``scores`` table;
* :mod:`fbgpu.models.scores` - :class:`ScorePanel` (scores on the device, the hand-off to the
  backtest) and full-band fusion;
* :mod:`fbgpu.models.exhibits` - the report's model tables through the evaluation API;
* :mod:`fbgpu.models.device` - DLPack hand-off and the device->host transfer guard.
"""

from fbgpu.models.api import (
    TrainSummary,
    load_model_inputs,
    read_scores,
    run_train,
    update_fused,
    write_scores,
)
from fbgpu.models.config import (
    DEMO_OVERRIDES,
    FUSED_COLUMN,
    MODEL_KINDS,
    SCORE_COLUMNS,
    TrainConfig,
    load_train_config,
)
from fbgpu.models.datasets import DeviceSamples, ModelInputs, make_labels
from fbgpu.models.device import TransferGuard, to_torch
from fbgpu.models.exhibits import ModelEvaluation, evaluate_models
from fbgpu.models.losses import ic_loss, multitask_loss
from fbgpu.models.networks import MultiSourceGRU, build_nets
from fbgpu.models.rolling import (
    NoRetrainWindowError,
    RetrainWindow,
    calendar_windows,
    make_windows,
    require_retrain_window,
    sample_grid,
)
from fbgpu.models.runner import RollingResult, train_rolling
from fbgpu.models.scores import ScorePanel, fuse_scores

__all__ = [
    "DEMO_OVERRIDES",
    "FUSED_COLUMN",
    "MODEL_KINDS",
    "SCORE_COLUMNS",
    "DeviceSamples",
    "ModelEvaluation",
    "ModelInputs",
    "MultiSourceGRU",
    "NoRetrainWindowError",
    "RetrainWindow",
    "RollingResult",
    "ScorePanel",
    "TrainConfig",
    "TrainSummary",
    "TransferGuard",
    "build_nets",
    "calendar_windows",
    "evaluate_models",
    "fuse_scores",
    "ic_loss",
    "load_model_inputs",
    "load_train_config",
    "make_labels",
    "make_windows",
    "multitask_loss",
    "read_scores",
    "require_retrain_window",
    "run_train",
    "sample_grid",
    "to_torch",
    "train_rolling",
    "update_fused",
    "write_scores",
]
