"""Device residency: DLPack views, no extra panel copies, no device->host transfer in training.

On the CPU backend the guard runs the same pipeline and proves that none of the transfer calls
(``.cpu()``, ``.numpy()``, ``.tolist()``, ``cupy.asnumpy``...) is made between the panel and the
predictions, and that the panel tensor torch trains on is the caller's memory. The GPU variant
runs the same checks on cupy arrays when a CUDA device is present.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
import pytest
import torch

from fbgpu.models.config import TrainConfig
from fbgpu.models.datasets import DeviceSamples, ModelInputs, make_labels
from fbgpu.models.device import TransferGuard, to_torch
from fbgpu.models.runner import train_rolling

# fit_workers=1: the guard audits the fits' own crossings, so they must run in this process
# (forked CPU workers would make the same crossings where no guard of this process sees them).
CFG = TrainConfig(seeds=(0,), max_epochs=2, patience=2, min_train_dates=10, hidden_size=8,
                  retrain_months=(1, 4, 7, 10), batch_size=300, fit_workers=1)


def _market(xp=np, D: int = 200, S: int = 30, F: int = 4) -> ModelInputs:
    rng = np.random.default_rng(0)
    dates, d = [], dt.date(2021, 1, 4)
    while len(dates) < D:
        if d.weekday() < 5:
            dates.append(d)
        d += dt.timedelta(1)
    vwap = 10 * np.exp(np.cumsum(0.02 * rng.standard_normal((D, S)), 0))
    bars = np.stack([vwap * 0.99, vwap * 1.02, vwap * 0.98, vwap, vwap,
                     rng.integers(1000, 9000, (D, S)).astype(float)], -1)
    pool = rng.random((D, S)) > 0.1
    panel = rng.standard_normal((D, S, F))
    return ModelInputs(dates, np.array([f"S{i}" for i in range(S)]), xp.asarray(pool),
                       xp.asarray(make_labels(vwap, pool), dtype=xp.float32),
                       xp.asarray(panel, dtype=xp.float32), xp.asarray(bars, dtype=xp.float32),
                       tuple(f"f{i}" for i in range(F)))


def test_guard_counts_transfers_and_restores_torch() -> None:
    t = torch.arange(6.0)
    with TransferGuard() as g:
        t.cpu()
        t.numpy()
        t.tolist()
        t[0].item()
        t.to(torch.float64)  # a dtype change is not a transfer
    assert [e.api for e in g.array_transfers] == ["torch.Tensor.cpu", "torch.Tensor.numpy",
                                                   "torch.Tensor.tolist"]
    assert len(g.scalar_syncs) == 1 and g.array_transfers[0].numel == 6
    assert "cpu" not in torch.Tensor.__dict__ and "item" not in torch.Tensor.__dict__
    with pytest.raises(RuntimeError, match="device->host"), TransferGuard(strict=True):
        t.numpy()


def test_cpu_pipeline_makes_no_transfer_and_no_copy_of_the_panel() -> None:
    inp = _market()
    device = torch.device("cpu")
    with TransferGuard() as g:
        data = DeviceSamples(inp, CFG, device, ("daily", "weekly", "monthly", "hf"))
        res = train_rolling("fullband-mtl", inp, CFG, device, data=data, progress=False)
    assert g.array_transfers == [], g.array_transfers
    # early stopping reads its metrics once per epoch, as a sanctioned crossing (the remaining
    # .item() calls are Adam's step counters, CPU tensors even when training on a GPU); the
    # per-date sample counts cross once per DeviceSamples (train and score tables: .cpu() and
    # .numpy() each), never per batch
    reasons = Counter(e.sanctioned for e in g.sanctioned)
    assert set(reasons) == {"epoch metrics", "sample index"}, reasons
    assert reasons["epoch metrics"] >= 2 and reasons["sample index"] == 4, reasons
    assert isinstance(res.scores, torch.Tensor) and res.scores.shape[1] == len(inp.symbols)
    # torch trains on the caller's panel and bars: same memory, windows are views of it.
    assert data.hf_panel is not None and data.hf_windows is not None
    assert np.shares_memory(data.hf_panel.numpy(), inp.hf_panel)
    assert data.hf_windows.untyped_storage().data_ptr() == inp.hf_panel.ctypes.data
    assert np.shares_memory(data.bars.numpy(), inp.bars)
    assert np.shares_memory(data.pool.numpy(), inp.pool)


def test_float64_panel_is_converted_once_and_then_viewed() -> None:
    inp = _market()
    inp.hf_panel = inp.hf_panel.astype(np.float64)
    data = DeviceSamples(inp, CFG, torch.device("cpu"), ("hf",))
    assert data.hf_panel is not None and data.hf_windows is not None
    assert data.hf_panel.dtype == torch.float32
    assert not np.shares_memory(data.hf_panel.numpy(), inp.hf_panel)
    assert data.hf_windows.untyped_storage().data_ptr() == data.hf_panel.data_ptr()


def test_to_torch_is_zero_copy_for_numpy() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = to_torch(a)
    assert t.data_ptr() == a.ctypes.data
    b = np.zeros((2, 2), dtype=bool)
    assert to_torch(b).dtype == torch.bool


def _cuda_ready() -> bool:
    try:
        import cupy

        return bool(torch.cuda.is_available() and cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_ready(), reason="needs cupy and torch with a CUDA device")
def test_gpu_pipeline_stays_on_the_device() -> None:
    import cupy

    inp = _market(cupy)
    device = torch.device("cuda")
    with TransferGuard() as g:
        data = DeviceSamples(inp, CFG, device, ("daily", "weekly", "monthly", "hf"))
        res = train_rolling("fullband-mtl", inp, CFG, device, data=data, progress=False)
    assert g.array_transfers == [], g.array_transfers
    assert res.scores.device.type == "cuda"
    assert data.hf_panel is not None and data.hf_panel.data_ptr() == inp.hf_panel.data.ptr


# --------------------------------------------------------------------------- the GPU backend's
# device path on the CPU stand-in device (fbgpu.engine.standin): implicit host crossings raise,
# explicit ones are counted per stage.
STANDIN_TRAIN = {"seeds": [0], "max_epochs": 2, "patience": 2, "min_train_dates": 6,
                 "sample_every": 2, "label_horizon": 5, "hidden_size": 8,
                 "retrain_months": [1, 4, 7, 10], "batch_size": 400, "min_date_samples": 5,
                 "hf_window": 10, "lf_daily_len": 10, "lf_weekly_len": 4, "lf_monthly_len": 3}

#: Uploads of the model-input stage (load_model_inputs) on a device: present, suspended, st and
#: industry (Market.on); the listing offsets (start row, days before the data, unknown date);
#: the price fields the pool, labels and bars read (volume, vwap, adj_factor, close, open,
#: limit_up, float_cap); the daily high and low (LF bars); the raw factor values (HF panel).
INPUT_UPLOADS = 4 + 3 + 7 + 2 + 1


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    """A planted market with suspensions and an ST stock (pool and label rules all at work)."""
    from planted import write_planted_store

    return write_planted_store(tmp_path_factory.mktemp("standin") / "s", D=120, S=30, F=4,
                               seed=7, rho=0.95, shock=0.31, factor_noise=2.0,
                               suspension_rate=0.03, st_stock=3)


def _delta(before: dict[str, int]) -> dict[str, int]:
    from fbgpu.engine.standin import CROSSINGS

    return {k: CROSSINGS[k] - before.get(k, 0) for k in ("upload", "to_host")}


def test_model_inputs_are_built_on_the_device_with_uploads_only(planted) -> None:
    """Pool, labels, HF panel and LF bars on the stand-in device: the raw daily inputs are
    uploaded once each, nothing comes back (an implicit crossing would raise), and the arrays
    equal the CPU backend's bit for bit."""
    from fbgpu.engine.backend import get_backend
    from fbgpu.engine.standin import CROSSINGS, StandinArray, standin_backend
    from fbgpu.models import load_train_config
    from fbgpu.models.api import load_model_inputs

    cfg = load_train_config(STANDIN_TRAIN)
    b = standin_backend()
    before = dict(CROSSINGS)
    dev = load_model_inputs(planted, cfg, b, ["fullband-mtl"])
    assert _delta(before) == {"upload": INPUT_UPLOADS, "to_host": 0}
    ref = load_model_inputs(planted, cfg, get_backend("cpu"), ["fullband-mtl"])
    for name in ("pool", "label", "hf_panel", "bars"):
        a, r = getattr(dev, name), getattr(ref, name)
        assert isinstance(a, StandinArray), name
        host = b.to_host(a)
        assert host.dtype == r.dtype, name
        np.testing.assert_array_equal(host, r, err_msg=name)
    assert ref.pool.sum() > 1000 and np.isfinite(ref.label).sum() > 1000
    assert not ref.pool[:, 3].any()  # the ST stock is never in the scoring pool


def test_training_on_the_standin_device_gives_the_cpu_scores(planted, tmp_path) -> None:
    """run_train through the GPU backend's path on the stand-in: per stage, the inputs' uploads
    and one persistence copy per score column and per checkpointed state tensor, no other
    crossing; the same scores as the CPU
    backend, in memory and in the store."""
    import shutil

    from fbgpu.data.store import Store
    from fbgpu.engine.standin import CROSSINGS, standin_backend
    from fbgpu.models import read_scores, run_train

    roots = {k: tmp_path / k for k in ("dev", "cpu")}
    for r in roots.values():
        shutil.copytree(planted.root, r)
    b = standin_backend()
    before = dict(CROSSINGS)
    dev = run_train(Store(roots["dev"]), ["hf", "lf"], STANDIN_TRAIN, backend=b,
                    progress=False, report=False)
    assert dev.columns == ["hf_gru", "lf_mtl", "fused"]
    # persistence copies: one per score column and one per state tensor of each checkpoint
    # (written behind through the writer's to_host_async), nothing else
    ckpts = sorted((roots["dev"] / "models").rglob("seed*.pt"))
    n_state = sum(len(s) for p in ckpts
                  for s in torch.load(p, weights_only=True)["states"])
    assert ckpts and n_state > 0
    assert _delta(before) == {"upload": INPUT_UPLOADS, "to_host": len(dev.columns) + n_state}
    ref = run_train(Store(roots["cpu"]), ["hf", "lf"], STANDIN_TRAIN, backend="cpu",
                    progress=False, report=False)
    assert dev.scores is not None and ref.scores is not None
    for c in dev.columns:
        np.testing.assert_array_equal(b.to_host(dev.scores.columns[c]), ref.scores.columns[c])
    d_dev, _, s_dev = read_scores(Store(roots["dev"]))
    d_ref, _, s_ref = read_scores(Store(roots["cpu"]))
    assert d_dev == d_ref and set(s_dev) == set(s_ref) == set(dev.columns)
    for c in s_ref:
        np.testing.assert_array_equal(s_dev[c], s_ref[c])
    assert np.isfinite(s_ref["fused"]).sum() > 500
