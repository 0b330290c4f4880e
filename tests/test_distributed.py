"""Dask scale-out: blocks of consecutive dates, one task each, on a 2-worker LocalCluster write
exactly what the single-process run writes; a failing date is named."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import sys
from pathlib import Path

import pytest

from fbgpu.data.store import Store
from fbgpu.factors import run_factors

pytest.importorskip("dask.distributed")


def _copy_inputs(src: Store, dst: Path) -> Store:
    for table in ("trades", "orders", "minute", "daily"):
        shutil.copytree(Path(src.root) / table, dst / table)
    return Store(dst)


def test_date_blocks_cover_every_date_once_in_order() -> None:
    from fbgpu.distributed import date_blocks

    dates = [dt.date(2024, 1, 1) + dt.timedelta(days=k) for k in range(100)]
    for workers, per_task in ((1, None), (2, None), (4, None), (8, None), (60, None),
                              (2, 7), (3, 1), (2, 100), (2, 250)):
        blocks = date_blocks(dates, workers, per_task)
        assert [d for b in blocks for d in b] == dates  # each date once, in order
        for b in blocks:  # contiguous runs of the sorted dates
            i = dates.index(b[0])
            assert b == dates[i:i + len(b)]
        size = per_task or max(1, len(dates) // (2 * workers))
        assert all(len(b) == size for b in blocks[:-1]) and 1 <= len(blocks[-1]) <= size
        if per_task is None:  # the default: >= 2 tasks per worker while dates allow
            assert len(blocks) >= min(2 * workers, len(dates))
    assert [len(b) for b in date_blocks(dates, 4)] == [12] * 8 + [4]
    assert date_blocks(dates[:3], 4) == [[d] for d in dates[:3]]
    assert date_blocks([], 2) == []
    with pytest.raises(ValueError, match="dates_per_task"):
        date_blocks(dates, 2, 0)


def test_two_worker_cluster_matches_single_process(tiny_store: Store, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from fbgpu.distributed import run_factors_distributed

    dates = tiny_store.dates("trades")[:7]
    single = _copy_inputs(tiny_store, tmp_path / "single")
    dist = _copy_inputs(tiny_store, tmp_path / "dist")
    s1 = run_factors(single, dates[0], dates[-1], backend="cpu", progress=False)
    with caplog.at_level(logging.INFO, logger="fbgpu.distributed"):
        # blocks of 3, 3 and 1 dates: each task one run_factors call over its block
        s2 = run_factors_distributed(dist, dates[0], dates[-1], backend="cpu",
                                     cluster="local", n_workers=2, dates_per_task=3)
    assert "7 dates in 3 tasks of <= 3 dates over 2 workers" in caplog.text
    assert s2.dates_computed == s1.dates_computed == dates
    assert s2.stock_days == s1.stock_days > 0
    for d in dates:
        # byte-identical partitions (same content hash), not merely close values
        assert dist.manifest("factors", d).sha256 == single.manifest("factors", d).sha256
    # a re-run on the cluster (default block size) finds every date current
    again = run_factors_distributed(dist, dates[0], dates[-1], backend="cpu", n_workers=2)
    assert again.dates_computed == [] and again.dates_skipped == dates


def test_a_failing_date_inside_a_block_is_named(tiny_store: Store, tmp_path: Path) -> None:
    """A date whose input is damaged, in the middle of a block: the run fails naming that
    date; the block's other dates and the other blocks are written."""
    from fbgpu.distributed import FactorDateError, run_factors_distributed

    dates = tiny_store.dates("trades")[:6]
    store = _copy_inputs(tiny_store, tmp_path / "dist")
    bad = dates[1]  # block [d0, d1, d2]: the failure comes after d0 was computed
    # the data file only (the manifest intact, so the plan accepts the date and the read
    # fails after d0 was written: the block's partial-run path, then one date at a time)
    victims = sorted(store.partition_dir("trades", bad).rglob("part-*"))
    assert victims
    for f in victims:
        f.write_bytes(b"not a partition")
    with pytest.raises(FactorDateError, match=f"factors for {bad} failed") as err:
        run_factors_distributed(store, dates[0], dates[-1], backend="cpu", cluster="local",
                                n_workers=2, dates_per_task=3)
    assert err.value.date == bad
    assert err.value.exit_status == 3  # other dates were written: the store changed
    assert store.dates("factors") == [d for d in dates if d != bad]


def test_a_block_that_wrote_nothing_keeps_the_causes_exit_status(tiny_store: Store,
                                                                  tmp_path: Path) -> None:
    """A one-date task whose input is rejected (a damaged manifest: StoreError, status 2)
    raises FactorDateError with status 2, as a single-process run exits; the status survives
    the pickling from worker to client."""
    import pickle

    from fbgpu.distributed import FactorDateError, _factors_block
    from fbgpu.errors import exit_status_of

    d = tiny_store.dates("trades")[0]
    store = _copy_inputs(tiny_store, tmp_path / "one")
    (store.partition_dir("trades", d) / "_manifest.json").write_text("{ not json")
    with pytest.raises(FactorDateError, match="damaged") as err:
        _factors_block(str(store.root), [d], ["bigorder_ret"], "cpu", {})
    assert exit_status_of(err.value) == 2
    back = pickle.loads(pickle.dumps(err.value))
    assert exit_status_of(back) == 2 and back.date == d and str(back) == str(err.value)
    assert store.dates("factors") == []


def test_local_cuda_without_dask_cuda_says_which_extra(tiny_store: Store, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from fbgpu.distributed import run_factors_distributed

    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # not installed, whatever this machine has
    store = _copy_inputs(tiny_store, tmp_path / "dist")
    with pytest.raises(RuntimeError, match=r"--cluster local-cuda needs the `gpu` extra "
                                           r"\(dask-cuda\)"):
        run_factors_distributed(store, backend="cpu", cluster="local-cuda")
