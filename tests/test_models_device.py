"""Device residency: DLPack views, no extra panel copies, no device->host transfer in training.

On the CPU backend the guard runs the same pipeline and proves that none of the transfer calls
(``.cpu()``, ``.numpy()``, ``.tolist()``, ``cupy.asnumpy``...) is made between the panel and the
predictions, and that the panel tensor torch trains on is the caller's memory. The GPU variant
runs the same checks on cupy arrays when a CUDA device is present.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

from fbgpu.models.config import TrainConfig
from fbgpu.models.datasets import DeviceSamples, ModelInputs, make_labels
from fbgpu.models.device import TransferGuard, to_torch
from fbgpu.models.runner import train_rolling

CFG = TrainConfig(seeds=(0,), max_epochs=2, patience=2, min_train_dates=10, hidden_size=8,
                  retrain_months=(1, 4, 7, 10), batch_size=300)


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
    # .item() calls are Adam's step counters, CPU tensors even when training on a GPU)
    assert len(g.sanctioned) >= 2 and {e.sanctioned for e in g.sanctioned} == {"epoch metrics"}
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
