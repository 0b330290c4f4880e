"""The torch half of the stand-in guard (fbgpu/models/syncmode.py): on the CPU, the torch ops
that torch's CUDA sync debug mode rejects raise under :class:`StrictSyncMode`, inside
``sanctioned`` blocks they pass, and ``device_sync_guard`` opens the mode on the stand-in device.
This runs on the CPU only: what it proves about a GPU is that the calls torch flags there are
not made (docs/engine.md, "A guard that catches in CI")."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from fbgpu.data.store import Store
from fbgpu.engine.backend import get_backend
from fbgpu.engine.guard import SANCTIONED, device_sync_guard, sanctioned
from fbgpu.engine.standin import standin_backend
from fbgpu.models.syncmode import StrictSyncMode, SyncViolationError, syncing_reason

x = torch.arange(6.0)
m = x > 2.0

#: Each op that synchronises a CUDA device (and what torch calls it at the aten level).
REJECTED: dict[str, Callable[[], object]] = {
    "item": lambda: x.sum().item(),
    "float": lambda: float(x.sum()),
    "int": lambda: int(x[0]),
    "bool": lambda: bool(x[1] > 0),
    "if": lambda: 1 if (x[1] > 0) else 0,
    "nonzero": lambda: x.nonzero(),
    "where1": lambda: torch.where(m),
    "argwhere": lambda: torch.argwhere(m),
    "masked_select": lambda: x.masked_select(m),
    "mask_index": lambda: x[m],
    "mask_index_put": lambda: x.clone().__setitem__(m, 0.0),
    "index_put_bool": lambda: x.clone().index_put_((m,), torch.tensor(0.0)),
    "unique": lambda: torch.unique(x),
    "unique_consecutive": lambda: torch.unique_consecutive(x),
    "unique_dim": lambda: torch.unique(x.reshape(2, 3), dim=0),
    "repeat_interleave": lambda: torch.repeat_interleave(torch.tensor([1, 2])),
    "repeat_interleave_self": lambda: x[:2].repeat_interleave(torch.tensor([1, 2])),
    "bincount": lambda: torch.bincount(torch.tensor([0, 1, 1])),
    "equal": lambda: torch.equal(x, x),
    "allclose": lambda: torch.allclose(x, x),
    "histc": lambda: torch.histc(x, bins=3),
    "numpy": lambda: x.numpy(),
    "tolist": lambda: x.tolist(),
    "cpu": lambda: x.cpu(),
    "to_cpu": lambda: x.to("cpu"),
    "to_device": lambda: x.to(torch.device("cpu")),
    "module_to": lambda: torch.nn.Linear(2, 2).to("cpu"),
    "tensor_upload": lambda: torch.tensor([1.0, 2.0], device="cpu"),
    "as_tensor_upload": lambda: torch.as_tensor(np.ones(3), device=torch.device("cpu")),
}

#: Ops that never synchronise (launches only, or sizes known on the host).
ALLOWED: dict[str, Callable[[], object]] = {
    "matmul": lambda: x.reshape(2, 3) @ x.reshape(3, 2),
    "where3": lambda: torch.where(m, x, 0.0),
    "int_index": lambda: x[torch.tensor([0, 2, 4])],
    "int_index_put": lambda: x.clone().index_put_((torch.tensor([1]),), torch.tensor(9.0)),
    "nonzero_static": lambda: torch.nonzero_static(m, size=3),
    "mask_as_weight": lambda: (x * m).sum(),
    "repeat_interleave_sized": lambda: torch.repeat_interleave(torch.tensor([1, 2]),
                                                               output_size=3),
    "histc_range": lambda: torch.histc(x, bins=3, min=0.0, max=6.0),
    "any": lambda: m.any(),
    "to_dtype": lambda: x.to(torch.float64),
    "pinned_upload": lambda: x.to("cpu", non_blocking=True),
    "tensor_on_host": lambda: torch.tensor([1.0, 2.0]),
    "full": lambda: torch.full((), float("nan"), device="cpu"),
    "from_numpy": lambda: torch.from_numpy(np.ones(3)),
    "adam_step": lambda: _adam_step(),
}


def _adam_step() -> None:
    """torch.optim's step counters are host tensors on CUDA too: not a device sync."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1)
    (p * 2).sum().backward()
    opt.step()


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_a_syncing_op_raises_and_passes_when_sanctioned(name: str) -> None:
    with StrictSyncMode("error") as mode, pytest.raises(SyncViolationError) as err:
        REJECTED[name]()
    msg = str(err.value)
    # the message names the op and the fbgpu-or-test frame that made it
    assert "synchronises the device" in msg and len(mode.violations) == 1
    before = SANCTIONED["test sanctioned op"]
    with StrictSyncMode("error") as mode, sanctioned("test sanctioned op"):
        REJECTED[name]()
    assert mode.violations == [] and SANCTIONED["test sanctioned op"] == before + 1
    REJECTED[name]()  # outside the mode: plain torch, nothing patched any more


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_a_non_syncing_op_passes(name: str) -> None:
    with StrictSyncMode("error") as mode:
        ALLOWED[name]()
    assert mode.violations == []


def test_the_message_names_the_op_and_the_fbgpu_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    from fbgpu.models import datasets

    with StrictSyncMode("error"), pytest.raises(SyncViolationError) as err:
        _ = x[m]
    assert "aten.index (boolean-mask indexing" in str(err.value)
    # the sample index without its sanctioned block: the first crossing is named with its line
    monkeypatch.setattr(datasets, "sanctioned", lambda reason: contextlib.nullcontext())
    with StrictSyncMode("error"), pytest.raises(SyncViolationError) as err:
        datasets.DeviceSamples._sample_table(m.reshape(2, 3))
    assert "torch.Tensor.cpu" in str(err.value)
    assert "fbgpu/models/datasets.py:" in str(err.value) and "in _sample_table" in str(err.value)


def test_warn_mode_logs_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", "fbgpu.models.syncmode"), StrictSyncMode("warn") as mode:
        v = x.sum().item()
    assert v == 15.0 and len(mode.violations) == 1
    assert "aten._local_scalar_dense" in caplog.text
    with pytest.raises(ValueError, match="'error' or 'warn'"):
        StrictSyncMode("strict")


def test_syncing_reason_reads_the_arguments() -> None:
    aten = torch.ops.aten
    assert syncing_reason(aten.index.Tensor, (x, [m]), {}) is not None
    assert syncing_reason(aten.index.Tensor, (x, [torch.tensor([0])]), {}) is None
    assert syncing_reason(aten.repeat_interleave.Tensor, (torch.tensor([1]),),
                          {"output_size": 1}) is None
    assert syncing_reason(aten.add.Tensor, (x, x), {}) is None


def test_the_guard_opens_the_mode_on_the_standin_only() -> None:
    with device_sync_guard(standin_backend(), "error") as report:
        with pytest.raises(SyncViolationError):
            x.sum().item()
        with sanctioned("epoch metrics"):
            assert x.sum().item() == 15.0
    assert report.active and "torch audit" in report.reason
    assert report.sanctioned["epoch metrics"] == 1
    x.sum().item()  # the block is closed: nothing raises
    with device_sync_guard(get_backend("cpu"), "error") as report:
        x.sum().item()  # the CPU backend has no device
    assert not report.active


#: The demo's training settings on the tiny market (tests/test_engine_guard.py's GPU test).
TRAIN = {"seeds": [0], "max_epochs": 2, "patience": 4, "min_train_dates": 2,
         "retrain_months": [3], "hf_window": 5, "label_horizon": 5, "lf_daily_len": 5,
         "lf_weekly_len": 3, "lf_monthly_len": 2, "sample_every": 2, "hidden_size": 8,
         "fit_workers": 1}


@pytest.fixture(scope="module")
def factor_store(tiny_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny market with its factors (computed on the CPU backend: the stand-in's factor
    day is tested in tests/test_engine_standin.py, and takes ~100 s here)."""
    from fbgpu.factors import run_factors

    root = tmp_path_factory.mktemp("syncmode") / "base"
    shutil.copytree(tiny_store.root, root, ignore=shutil.ignore_patterns(
        "factors", "panel", "reports", "run.json", "scores", "models"))
    run_factors(Store(root), backend="cpu", progress=False)
    return root


def _train_on_standin(base: Path, dest: Path) -> object:
    from fbgpu.models import run_train

    shutil.copytree(base, dest)
    b = standin_backend()
    with device_sync_guard(b, "error") as report:
        res = run_train(Store(dest), ["hf", "lf"], TRAIN, backend=b, progress=False,
                        report=False)
    assert report.active
    return res, report


def test_training_on_the_standin_under_the_strict_guard(factor_store: Path,
                                                        tmp_path: Path) -> None:
    """hf and lf models trained through the GPU backend's path on the stand-in with the
    torch audit raising: only sanctioned crossings, the same scores as the CPU backend."""
    from fbgpu.models import run_train

    res, report = _train_on_standin(factor_store, tmp_path / "dev")
    for reason in ("initial weights", "epoch metrics", "sample index", "to_host"):
        assert report.sanctioned[reason] > 0, report.sanctioned
    shutil.copytree(factor_store, tmp_path / "cpu")
    ref = run_train(Store(tmp_path / "cpu"), ["hf", "lf"], TRAIN, backend="cpu",
                    progress=False, report=False)
    b = standin_backend()
    for c in ref.columns:
        np.testing.assert_array_equal(b.to_host(res.scores.columns[c]), ref.scores.columns[c])


def test_an_implicit_sync_injected_into_training_fails_the_run(
        factor_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A per-batch ``loss.item()`` (the classic hidden sync) makes the guarded run raise."""
    from fbgpu.models import training

    real = training.multitask_loss

    def loss_with_a_sync(*args: object, **kwargs: object) -> torch.Tensor:
        loss = real(*args, **kwargs)
        if not loss.item() < 1e9:  # a host-side sanity check: the sync is the point
            raise AssertionError("loss out of range")
        return loss

    monkeypatch.setattr(training, "multitask_loss", loss_with_a_sync)
    where = r"models/training.py:\d+ in fit_net"
    with pytest.raises(SyncViolationError, match=r"_local_scalar_dense.*" + where):
        _train_on_standin(factor_store, tmp_path / "dev")


DEMO_TRAIN = {k: v for k, v in TRAIN.items() if k not in ("seeds", "patience", "lf_weekly_len",
                                                       "lf_monthly_len")}
EVALUATE = {"figures": False, "min_stocks": 5}


def _demo_on_standin(base: Path, root: Path, stages: list[str]) -> dict:
    from fbgpu.data.runlog import read_runlog
    from fbgpu.pipeline import DemoConfig, run_demo

    shutil.copytree(base, root, ignore=shutil.ignore_patterns(
        "panel", "reports", "run.json", "scores", "models",
        *(("factors",) if "factors" in stages else ())))
    cfg = DemoConfig(preset="tiny", seed=0, stages=stages, models="hf", sync_guard="error")
    run_demo(Store(root), backend=standin_backend(), config=cfg,
             stage_config={"evaluate": EVALUATE, "train": DEMO_TRAIN})
    steps = read_runlog(Store(root))["steps"]
    assert all(steps[s]["status"] == "ok" for s in stages), steps
    return steps


def test_demo_evaluate_and_train_on_the_standin_under_the_strict_guard(
        factor_store: Path, tmp_path: Path) -> None:
    """The demo's evaluate and train stages (report exhibits included) through the stand-in
    device with ``sync_guard="error"``: the torch audit and the stand-in arrays both raising,
    and the run passes (the factors come from the store: the next test computes them)."""
    _demo_on_standin(factor_store, tmp_path / "demo", ["evaluate", "train"])


@pytest.mark.slow
def test_demo_device_stages_on_the_standin_under_the_strict_guard(
        factor_store: Path, tmp_path: Path) -> None:
    """factors -> evaluate -> train, the settings of the GPU test in tests/test_engine_guard.py,
    on the stand-in (~3 min on the shared 2-core VM: the emulated factor kernels)."""
    _demo_on_standin(factor_store, tmp_path / "demo", ["factors", "evaluate", "train"])
