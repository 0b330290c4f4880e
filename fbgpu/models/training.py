"""Fitting one model (all its networks) for one window and seed, and predicting with it.

Protocol (spec/research.md): Adam (lr 0.005), batches of whole dates (at most ``batch_size``
samples: ``batch_size // S`` dates, at least one, so that every per-date IC in the loss is computed
on a complete cross-section), date order shuffled each epoch by a seeded generator, at most 100
epochs, early stopping after ``patience`` epochs without a better validation IC (mean over the
validation dates of the Pearson IC between the model's prediction and the label); the weights of
the best epoch are kept.

Determinism: with ``config.deterministic`` torch's deterministic algorithms are switched on for
the duration of a fit (and restored after). On the CPU a seed then gives bit-identical weights and
predictions. On CUDA the cuDNN GRU is run with ``cudnn.deterministic`` and the losses avoid
atomic scatter-adds, but some CUDA kernels have no deterministic variant (torch warns instead of
failing), so GPU runs are reproducible only up to float rounding.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fbgpu.engine.guard import sanctioned
from fbgpu.models.config import TrainConfig
from fbgpu.models.datasets import DeviceSamples
from fbgpu.models.device import cpu_threads
from fbgpu.models.losses import multitask_loss, per_date_ic
from fbgpu.models.networks import MultiSourceGRU, build_nets
from fbgpu.models.zscore import zscore

log = logging.getLogger(__name__)

#: ``on_epoch(net_index, epoch, train_loss, valid_ic, best_valid_ic)`` progress callback.
EpochCallback = Callable[[int, int, float, float, float], None]


@dataclass
class FitResult:
    """What a fit produced: best weights per network and its learning curve."""

    states: list[dict[str, torch.Tensor]]
    best_epoch: list[int] = field(default_factory=list)
    best_valid_ic: list[float] = field(default_factory=list)
    history: list[list[dict[str, float]]] = field(default_factory=list)


@contextlib.contextmanager
def deterministic_torch(enabled: bool) -> Iterator[None]:
    """Deterministic torch algorithms (and cuDNN) inside the block; previous settings after."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn


@contextlib.contextmanager
def torch_runtime(config: TrainConfig, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms and, on the CPU, ``config.cpu_threads`` threads; restored after."""
    with cpu_threads(config.cpu_threads, device), deterministic_torch(config.deterministic):
        yield


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """torch's global RNG seeded for the block, the caller's RNG state restored after."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _inputs(net: MultiSourceGRU, xs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [xs[s] for s in net.spec.sources]


def validation_ic(net: MultiSourceGRU, data: DeviceSamples, days: Sequence[int]) -> torch.Tensor:
    """Mean over ``days`` of the per-date Pearson IC of the net's prediction (0-d, on device)."""
    net.eval()
    total = torch.zeros((), device=data.device)
    count = torch.zeros((), device=data.device)
    with torch.no_grad():
        for chunk in data.date_batches(days, None):
            b = data.batch(chunk, train=True)
            if b.size < 2:
                continue
            s, n = per_date_ic(
                net.predict(_inputs(net, b.xs)), b.label, b.group, b.n_groups,
                data.config.min_date_samples,
            )
            total, count = total + s, count + n
    return total / count.clamp(min=1.0)


def fit_net(
    net: MultiSourceGRU,
    data: DeviceSamples,
    fit_days: Sequence[int],
    valid_days: Sequence[int],
    config: TrainConfig,
    rng: np.random.Generator,
    on_epoch: Callable[[int, float, float, float], None] | None = None,
) -> tuple[dict[str, torch.Tensor], int, float, list[dict[str, float]]]:
    """Train ``net`` in place; return (best state, best epoch, best validation IC, history)."""
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_ic, best_epoch, stale = -np.inf, -1, 0
    best_state = copy.deepcopy(net.state_dict())
    history: list[dict[str, float]] = []
    for epoch in range(config.max_epochs):
        net.train()
        loss_sum = torch.zeros((), device=data.device)
        n_batches = 0
        for chunk in data.date_batches(fit_days, rng):
            b = data.batch(chunk, train=True)
            if b.size < 2:  # BatchNorm needs two samples; such a batch has no IC either
                continue
            heads = net(_inputs(net, b.xs))
            loss = multitask_loss(
                heads, b.label, b.group, b.n_groups, config.mtl_lambda, config.min_date_samples
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum = loss_sum + loss.detach()
            n_batches += 1
        # One scalar sync per epoch, sanctioned: the early-stopping decision is made on the host.
        metrics = torch.cat([(loss_sum / max(n_batches, 1)).double().reshape(1),
                             validation_ic(net, data, valid_days).double().reshape(1)])
        with sanctioned("epoch metrics"):
            train_loss, vic = (float(x) for x in metrics.tolist())
        history.append({"epoch": epoch, "train_loss": train_loss, "valid_ic": vic})
        if vic > best_ic:
            best_ic, best_epoch, stale = vic, epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            stale += 1
        if on_epoch is not None:
            on_epoch(epoch, train_loss, vic, best_ic)
        if stale >= config.patience:
            break
    net.load_state_dict(best_state)
    return best_state, best_epoch, best_ic, history


def fit_model(
    kind: str,
    data: DeviceSamples,
    fit_days: Sequence[int],
    valid_days: Sequence[int],
    config: TrainConfig,
    seed: int,
    n_factors: int,
    on_epoch: EpochCallback | None = None,
) -> tuple[list[MultiSourceGRU], FitResult]:
    """Initialise (from ``seed``) and train every network of model ``kind``.

    ``lf-separate`` trains its three single-frequency networks one after the other, each with its
    own early stopping; every other kind has one network.
    """
    with torch_runtime(config, data.device), seeded(seed, data.device):
        # The initial weights are drawn on the host (the same seeded draws on every device)
        # and uploaded once per fit: a sanctioned crossing (a pageable upload syncs on CUDA).
        with sanctioned("initial weights"):
            nets = [n.to(data.device)
                    for n in build_nets(kind, n_factors, config.hidden_size, config.dropout)]
        result = FitResult(states=[])
        for j, net in enumerate(nets):
            rng = np.random.default_rng([seed, j])

            def cb(e: int, tl: float, vic: float, best: float, j: int = j) -> None:
                if on_epoch is not None:
                    on_epoch(j, e, tl, vic, best)

            state, be, bic, hist = fit_net(net, data, fit_days, valid_days, config, rng, cb)
            result.states.append(state)
            result.best_epoch.append(be)
            result.best_valid_ic.append(bic)
            result.history.append(hist)
    return nets, result


def predict_model(
    nets: Sequence[MultiSourceGRU], data: DeviceSamples, days: Sequence[int]
) -> torch.Tensor:
    """Scores ``[len(days), S]`` on the device (NaN outside the pool).

    One network: its prediction. Several (``lf-separate``): the mean of their per-date z-scores.
    """
    n, S = len(days), data.n_stocks
    per_net = []
    with torch_runtime(data.config, data.device), torch.no_grad():
        for net in nets:
            net.eval()
            out = torch.full((n, S), float("nan"), device=data.device)
            done = 0
            for chunk in data.date_batches(days, None):
                b = data.batch(chunk, train=False)
                if b.size:
                    out[done + b.group, b.stock] = net.predict(_inputs(net, b.xs))
                done += len(chunk)
            per_net.append(out)
    if len(per_net) == 1:
        return per_net[0]
    return torch.stack([zscore(p, 1) for p in per_net]).mean(0)
