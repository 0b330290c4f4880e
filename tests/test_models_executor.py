"""Fit executors (fbgpu.models.executor): forked CPU workers give the serial run's bits, errors
and dead workers surface in the parent, and the worker count follows the documented rule."""

from __future__ import annotations

import os
from concurrent.futures.process import BrokenProcessPool

import pytest
import torch
from test_models_training import CFG, inputs_from, planted_raw

from fbgpu.models import executor, runner
from fbgpu.models.datasets import DeviceSamples

CPU = torch.device("cpu")
KINDS = ("hf", "lf-daily")

pytestmark = pytest.mark.skipif(not executor.fork_available(), reason="forked workers need Linux")


def _train(fit_workers: int, kinds=KINDS):
    """plan -> fit -> finish for ``kinds`` (as run_train does), 2 seeds, 2 windows each."""
    inp = inputs_from(planted_raw(D=200, S=40, F=4))
    cfg = CFG.model_copy(update={"max_epochs": 2, "seeds": (0, 1), "fit_workers": fit_workers,
                                 "retrain_months": (7, 9), "min_train_dates": 8})
    data = DeviceSamples(inp, cfg, CPU, ("hf", "daily"))
    plans = [runner.plan_rolling(k, inp, cfg, data) for k in kinds]
    fitted, seconds = runner.fit_plans(plans, data, cfg, progress=False)
    results = [runner.finish_rolling(p, fitted, inp, data, seconds) for p in plans]
    return plans, fitted, results


def test_forked_workers_give_the_serial_bits() -> None:
    plans, serial, res1 = _train(1)
    jobs = [j for p in plans for j in p.jobs()]
    assert len(jobs) == 8 and executor.resolve_workers(plans[0].config.model_copy(
        update={"fit_workers": 2}), CPU, len(jobs)) == 2
    _, forked, res2 = _train(2)
    assert serial.keys() == forked.keys() == {j.key for j in jobs}
    for key in serial:
        a, b = serial[key], forked[key]
        assert a.best_epoch == b.best_epoch and a.best_valid_ic == b.best_valid_ic, key
        for sa, sb in zip(a.states, b.states, strict=True):
            assert sa.keys() == sb.keys()
            for name in sa:
                assert torch.equal(sa[name], sb[name]), (key, name)
    for r1, r2 in zip(res1, res2, strict=True):
        assert torch.equal(torch.nan_to_num(r1.scores, nan=9.0),
                           torch.nan_to_num(r2.scores, nan=9.0))
        assert [w.valid_ic for w in r1.windows] == [w.valid_ic for w in r2.windows]


def test_worker_count_rule(monkeypatch) -> None:
    monkeypatch.setattr(executor, "available_cpus", lambda: 8)
    cfg = CFG.model_copy(update={"fit_workers": 0, "cpu_threads": 2})
    assert executor.resolve_workers(cfg, CPU, 12) == 4  # 8 CPUs / 2 threads per fit
    assert executor.resolve_workers(cfg, CPU, 3) == 3  # at most one worker per fit
    assert executor.resolve_workers(cfg, CPU, 1) == 1
    assert executor.resolve_workers(cfg.model_copy(update={"fit_workers": 1}), CPU, 12) == 1
    assert executor.resolve_workers(cfg.model_copy(update={"fit_workers": 6}), CPU, 12) == 6
    # a GPU fits in its own process, whatever the setting
    assert executor.resolve_workers(cfg.model_copy(update={"fit_workers": 6}),
                                    torch.device("cuda"), 12) == 1
    # the setting is not part of a trained model's identity (checkpoints stay valid)
    assert runner.model_config_hash("hf", cfg, ["a"]) == runner.model_config_hash(
        "hf", cfg.model_copy(update={"fit_workers": 3}), ["a"])


def test_a_failing_fit_raises_in_the_parent(monkeypatch) -> None:
    orig = executor.fit_model

    def failing(kind, data, fit_days, valid_days, config, seed, *a, **k):
        if seed == 1:
            raise FloatingPointError(f"seed {seed} diverged")
        return orig(kind, data, fit_days, valid_days, config, seed, *a, **k)

    monkeypatch.setattr(executor, "fit_model", failing)  # the workers inherit the patch
    with pytest.raises(FloatingPointError, match="seed 1 diverged"):
        _train(2, kinds=("lf-daily",))
    assert executor._FORK_STATE == {}


def test_a_dead_worker_is_an_error_not_a_hang(monkeypatch) -> None:
    def dying(*a, **k):
        os._exit(9)  # what the OOM killer leaves behind

    monkeypatch.setattr(executor, "fit_model", dying)
    with pytest.raises(BrokenProcessPool):
        _train(2, kinds=("lf-daily",))
