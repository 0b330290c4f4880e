"""Synthetic market -> vendor layouts (fbgpu.data.ingest.export) -> ingest -> identical tables.

Also: minute bars derived from ingested trades equal the generator's bars, and ingest at date T
uses nothing from later dates (perturbing the future leaves earlier partitions byte-identical).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pytest

from fbgpu.data.ingest import ingest
from fbgpu.data.ingest.export import _plain, export_market
from fbgpu.data.store import Store

N_DATES = 2


#: The synthetic calendar is every weekday (no holidays, e.g. 2022-01-03 is a weekday there).
SYNTH = {"calendar": "weekdays"}


def frame(store: Store, table: str, date: dt.date | None = None,
          symbol_suffix: str | None = None) -> pd.DataFrame:
    t = _plain(store.read(table, date))
    if symbol_suffix:
        t = t.filter(pc.ends_with(t.column("symbol"), symbol_suffix))
    return t.to_pandas().reset_index(drop=True)


@pytest.fixture(scope="module")
def exported(tiny_store: Store, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[list[dt.date], dict[str, list[Path]]]:
    dates = tiny_store.dates("trades")[:N_DATES]
    return dates, export_market(tiny_store, tmp_path_factory.mktemp("vendor"), dates)


def test_full_round_trip_is_identical(tiny_store: Store, exported, tmp_path: Path) -> None:
    dates, files = exported
    dst = Store(tmp_path / "s")
    for fmt in ("securities", "daily-bars", "minute-bars", "index-weights", "sse-trade",
                "szse-order", "sse-order"):
        r = ingest(dst, fmt, files[fmt], mapping=SYNTH)
        assert r.counts["duplicates_dropped"] == r.counts["nonpositive_price_or_volume"] == 0
        if fmt == "sse-trade":  # the generator's bars agree with its trades
            assert r.counts["minute_bars_differing_from_trades"] == 0
            assert r.counts["outside_limit_band"] == 0
    pd.testing.assert_frame_equal(frame(dst, "securities"), frame(tiny_store, "securities"))
    for d in dates:
        for table in ("trades", "orders", "cancels", "minute", "daily", "index_weights"):
            pd.testing.assert_frame_equal(frame(dst, table, d), frame(tiny_store, table, d),
                                          obj=f"{table}/{d}")


def test_derived_bars_equal_generated_bars(tiny_store: Store, exported, tmp_path: Path) -> None:
    dates, files = exported
    dst = Store(tmp_path / "s")
    ingest(dst, "daily-bars", files["daily-bars"], mapping=SYNTH)  # states each day's pre_close
    ingest(dst, "sse-trade", files["sse-trade"], mapping=SYNTH)
    for d in dates:
        pd.testing.assert_frame_equal(frame(dst, "minute", d), frame(tiny_store, "minute", d))


def test_szse_trade_layout_round_trip(tiny_store: Store, exported, tmp_path: Path) -> None:
    """SZSE layout: side re-derived from the later order id; cancels separated by ExecType."""
    dates, files = exported
    dst = Store(tmp_path / "s")
    r = ingest(dst, "szse-trade", files["szse-trade"], mapping=SYNTH)
    assert r.counts["cancellations_separated"] > 0
    for d in dates:
        pd.testing.assert_frame_equal(frame(dst, "trades", d), frame(tiny_store, "trades", d,
                                                                      ".SZ"))
        want = frame(tiny_store, "cancels", d, ".SZ")
        want = want[want.order_id > 0].reset_index(drop=True)  # id 0 has no SZSE encoding
        pd.testing.assert_frame_equal(frame(dst, "cancels", d), want)


def test_sse_tick_layout_round_trip(tiny_store: Store, exported, tmp_path: Path) -> None:
    dates, files = exported
    dst = Store(tmp_path / "s")
    ingest(dst, "sse-tick", files["sse-tick"], mapping=SYNTH)
    for d in dates:
        pd.testing.assert_frame_equal(frame(dst, "trades", d), frame(tiny_store, "trades", d,
                                                                      ".SH"))
        pd.testing.assert_frame_equal(frame(dst, "cancels", d), frame(tiny_store, "cancels", d,
                                                                       ".SH"))
        want = frame(tiny_store, "orders", d, ".SH")
        want = want[want.order_type == 0].reset_index(drop=True)  # SSE shows resting limits
        pd.testing.assert_frame_equal(frame(dst, "orders", d), want)


def _hashes(store: Store, dates: list[dt.date]) -> dict[str, str]:
    out = {}
    for t in ("trades", "minute", "daily"):
        for d in dates:
            p = store.partition_path(t, d)
            out[f"{t}/{d}"] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_no_look_ahead(tiny_store: Store, tmp_path: Path) -> None:
    """Ingesting (or changing) a later day never changes an earlier day's partitions."""
    dates = tiny_store.dates("trades")[:3]
    files = export_market(tiny_store, tmp_path / "v", dates)
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    for f in files["sse-trade"][:2]:
        ingest(a, "sse-trade", [f], mapping=SYNTH)
    before = _hashes(a, dates[:2])
    ingest(a, "sse-trade", [files["sse-trade"][2]], mapping=SYNTH)
    assert _hashes(a, dates[:2]) == before
    # A perturbed future: day 3's prices (and so its amounts, which must stay price x volume)
    # doubled.
    t = pa.csv.read_csv(files["sse-trade"][2])
    for col in ("TradePrice", "TradeMoney"):
        t = t.set_column(t.schema.get_field_index(col), col, pc.multiply(t.column(col), 2.0))
    bad = tmp_path / "future.csv"
    pa.csv.write_csv(t, bad)
    for f in [*files["sse-trade"][:2], bad]:
        ingest(b, "sse-trade", [f], mapping=SYNTH)
    assert _hashes(b, dates[:2]) == before
    # ... while day 3 itself does see day 2 (pre_close = day 2's close).
    d2 = {r["symbol"]: r["close"] for r in a.read("daily", dates[1]).to_pylist()}
    d3 = a.read("daily", dates[2]).to_pylist()
    assert all(r["pre_close"] == d2[r["symbol"]] for r in d3 if r["symbol"] in d2)
