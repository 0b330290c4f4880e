"""Same seed -> the same bytes; different seed -> different data; chunking changes nothing."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pandas as pd
import pytest

from fbgpu.data.store import Store
from fbgpu.data.synth import PRESETS, SynthConfig, generate_market

MICRO = PRESETS["tiny"].model_copy(update={"n_stocks": 8, "n_days": 4, "orders_per_day": 120,
                                           "chunk_stocks": 3})


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("part-0.*"))}  # either on-disk format


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    generate_market(Store(a), MICRO, seed=7, progress=False)
    generate_market(Store(b), MICRO, seed=7, progress=False)
    da, db = _digests(a), _digests(b)
    assert len(da) == 1 + 7 * MICRO.n_days  # securities + 7 tables per day
    assert da == db
    assert (a / "synth.json").read_bytes() == (b / "synth.json").read_bytes()


def test_scratch_market_without_fsync_has_the_same_bytes(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """``durable=False`` (the demo's scratch market): no partition or manifest is fsync'ed (only
    the store's settings file, once), the same bytes, and the store's own setting restored."""
    import os

    a, b = tmp_path / "a", tmp_path / "b"
    generate_market(Store(a), MICRO, seed=7, progress=False)
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real(fd))
    sb = Store(b)
    generate_market(sb, MICRO, seed=7, progress=False, durable=False)
    assert len(calls) <= 2 and sb.durable is True  # store.json: the file and its directory
    assert _digests(a) == _digests(b)
    assert (a / "synth.json").read_bytes() == (b / "synth.json").read_bytes()
    assert not list(b.rglob("*.tmp"))
    generate_market(sb, MICRO, seed=7, progress=False)  # the default fsyncs every partition
    assert len(calls) >= len(_digests(b))


def test_different_seed_different_data(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    generate_market(Store(a), MICRO, seed=7, progress=False)
    generate_market(Store(b), MICRO, seed=8, progress=False)
    da, db = _digests(a), _digests(b)
    for table in ("trades", "orders", "minute", "daily", "synth_truth"):
        key = str(Store(a).partition_path(table, MICRO.start).relative_to(a))
        assert da[key] != db[key], table


def test_chunking_does_not_change_the_data(tmp_path: Path) -> None:
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    generate_market(a, MICRO, seed=3, progress=False)
    generate_market(b, MICRO.model_copy(update={"chunk_stocks": 100}), seed=3, progress=False)
    for d in a.dates("trades"):
        for table in ("trades", "orders", "cancels", "minute", "daily"):
            ta, tb = (s.read(table, d).to_pandas() for s in (a, b))
            pd.testing.assert_frame_equal(ta.astype({"symbol": str}), tb.astype({"symbol": str}))


def test_rerun_overwrites_in_place(tmp_path: Path) -> None:
    store = Store(tmp_path)
    generate_market(store, MICRO, seed=1, progress=False)
    first = _digests(tmp_path)
    generate_market(store, MICRO, seed=1, progress=False)
    assert _digests(tmp_path) == first
    assert not list(tmp_path.rglob("*.tmp"))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown synthetic-market preset 'huge'"):
        generate_market(Store("/nonexistent"), "huge")
    with pytest.raises(ValueError, match="seed must be >= 0"):
        generate_market(Store("/nonexistent"), MICRO, seed=-1)
    with pytest.raises(ValueError, match="board_shares must sum to 1"):
        SynthConfig(board_shares=(0.5, 0.5, 0.5, 0.0))
    with pytest.raises(ValueError, match="garch"):
        SynthConfig(garch_alpha=0.5, garch_beta=0.6)
    with pytest.raises(ValueError):
        SynthConfig(n_stocks=10, bogus_field=1)  # type: ignore[call-arg]
    assert PRESETS["tiny"].start == dt.date(2022, 1, 3)
