"""The real exchange samples in /work/shared/data/real ingest without error, with asserted counts.

Oracles: pandas reading the same files. Skipped when the shared data directory is absent.
"""

from __future__ import annotations

import datetime as dt
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbgpu.data.ingest import ValidationReport, ingest
from fbgpu.data.store import Store

REAL = Path(os.environ.get("FBGPU_REAL_DATA", "/work/shared/data/real"))
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="real data samples not present")
SSE_DAY = dt.date(2023, 7, 11)
SSE_STOCKS = ["600536.SH", "600761.SH", "600961.SH", "601825.SH", "605580.SH"]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, dict[str, ValidationReport]]:
    """Every real file ingested once, in the order a user would (master first)."""
    store = Store(tmp_path_factory.mktemp("real"))
    reports: dict[str, ValidationReport] = {}
    # 1,087 weight partitions: skip fsync here to keep the test fast (atomicity and durability
    # of Store.write are tested in test_store.py).
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", lambda fd: None)
        for key, fmt, path, kw in [
            ("securities", "securities", "reference_2022-06-17/Syms.csv", {}),
            ("sse-order", "sse-order", "sse_l2_2023-07-11/SHorders.zip", {}),
            ("sse-trade", "sse-trade", "sse_l2_2023-07-11/SHtrans.zip", {}),
            ("szse-order", "szse-order", "szse_l2_000155_slice/Orders.csv",
             {"date": "2022-12-05"}),
            ("szse-trade", "szse-trade", "szse_l2_000155_slice/Trans.csv",
             {"date": "2022-12-05"}),
            ("minute", "minute-bars", "minute_000001sz_2018-01/candle_201801.csv", {}),
            ("daily", "daily-bars", "reference_2022-06-17/Daily.csv", {"date": "2022-06-17"}),
            ("weights", "index-weights", "csi500_weights_2020-2024/index_weight_info.csv",
             {"index_name": "csi500"}),
        ]:
            reports[key] = ingest(store, fmt, [REAL / path], **kw)
    return store, reports


def _sse_frame(name: str) -> pd.DataFrame:
    with zipfile.ZipFile(REAL / "sse_l2_2023-07-11" / name) as z, z.open(z.namelist()[0]) as f:
        return pd.read_csv(f)


def test_security_master(real: tuple[Store, dict]) -> None:
    store, r = real
    c = r["securities"].counts
    assert (c["rows_read"], c["rows_written"], c["non_stock_rows_skipped"]) == (5509, 4734, 775)
    sec = store.read("securities").to_pandas().set_index("symbol")
    assert sec.loc["000001.SZ", "name"] == "平安银行" and sec.loc["000001.SZ", "industry"] == "银行"
    assert sec.loc["000001.SZ", "list_date"] == dt.date(1991, 4, 3)


def test_sse_orders(real: tuple[Store, dict]) -> None:
    store, r = real
    c = r["sse-order"].counts
    assert (c["rows_read"], c["rows_written"], c["cancellations_separated"]) == (
        149_359, 149_359, 39_588)
    assert c["duplicates_dropped"] == c["rows_reordered"] == c["outside_session"] == 0
    raw = _sse_frame("SHorders.zip")
    orders = store.read("orders", SSE_DAY).to_pandas()
    assert len(orders) == 109_771 and (orders.order_type == 0).all()
    new = raw[raw.OrderType == 2]
    got = orders.groupby("symbol", observed=True).volume.sum()
    want = new.groupby("SecurityID").OrderQty.sum()
    assert got.to_dict() == want.to_dict()
    assert store.read("cancels", SSE_DAY).num_rows == 39_588


def test_sse_trades_and_derived_bars(real: tuple[Store, dict]) -> None:
    store, r = real
    c = r["sse-trade"].counts
    assert (c["rows_read"], c["rows_written"]) == (109_616, 109_616)
    # Every trade names at least one order of the order file ...
    assert c["trades_unknown_order_id"] == 0
    # ... but most miss the other side: SSE never publishes orders filled on arrival.
    assert r["sse-trade"].details["trades_one_side_unknown"]["2023-07-11"] == 93_637
    assert c["outside_session"] == 0 and c["symbols_not_in_master"] == 0
    trades = store.read("trades", SSE_DAY).to_pandas()
    assert trades.side.value_counts().to_dict() == {-1: 58_509, 1: 49_517, 0: 1_590}
    raw = _sse_frame("SHtrans.zip")
    want = raw.groupby("SecurityID").agg(v=("TradeQty", "sum"), a=("TradeMoney", "sum"),
                                         hi=("TradePrice", "max"), lo=("TradePrice", "min"))
    m = store.read_minute(SSE_DAY)
    assert list(m.symbols) == SSE_STOCKS
    np.testing.assert_array_equal(m["volume"].sum(axis=1), want.loc[SSE_STOCKS, "v"])
    np.testing.assert_allclose(m["amount"].sum(axis=1), want.loc[SSE_STOCKS, "a"], rtol=1e-12)
    assert m["num_trades"].sum() == 109_616
    daily = store.read("daily", SSE_DAY).to_pandas().set_index("symbol")
    np.testing.assert_array_equal(daily.loc[SSE_STOCKS, "high"], want.loc[SSE_STOCKS, "hi"])
    np.testing.assert_array_equal(daily.loc[SSE_STOCKS, "low"], want.loc[SSE_STOCKS, "lo"])
    last = raw.sort_values("ApplSeqNum").groupby("SecurityID").TradePrice.last()
    np.testing.assert_array_equal(daily.loc[SSE_STOCKS, "close"], last.loc[SSE_STOCKS])
    assert daily.pre_close.isna().all()  # no earlier day in the store: unknown, not invented
    # The closing call auction prints at 15:00:00.xxx on SSE: all in bar 239.
    auction = raw[raw.MDTime >= "15:00:00"].groupby("SecurityID").TradeQty.sum()
    np.testing.assert_array_equal(m["volume"][:, 239], auction.loc[SSE_STOCKS])


def test_szse_slice(real: tuple[Store, dict]) -> None:
    store, r = real
    d = dt.date(2022, 12, 5)
    c = r["szse-trade"].counts
    assert (c["rows_read"], c["cancellations_separated"]) == (5000, 1036)
    assert c["trades_unknown_order_id"] == 806  # a slice: many orders lie outside it
    assert r["szse-order"].counts["rows_written"] == 5000
    trades = store.read("trades", d).to_pandas()
    raw = pd.read_csv(REAL / "szse_l2_000155_slice" / "Trans.csv")
    t = raw[raw.function_code == 70]
    assert len(trades) == len(t) == 3964
    side = np.where(t.bid_order > t.ask_order, 1, -1)
    np.testing.assert_array_equal(trades.sort_values("seq").side, side[np.argsort(
        t.trade_index.to_numpy(), kind="stable")])
    cancels = store.read("cancels", d).to_pandas()
    assert (cancels.volume > 0).all() and len(cancels) == 1036
    orders = store.read("orders", d).to_pandas()
    assert orders.price.isna().sum() == (pd.read_csv(
        REAL / "szse_l2_000155_slice" / "Orders.csv").order_kind == 49).sum()


def test_vendor_minute_bars(real: tuple[Store, dict]) -> None:
    store, r = real
    c = r["minute"].counts
    assert c["rows_read"] == 5040 and c["rows_written"] == 5040
    assert c["bars_vwap_outside_range"] == 1  # the vendor's 2018-01-24 13:01 bar
    assert len(r["minute"].dates) == 21
    raw = pd.read_csv(REAL / "minute_000001sz_2018-01" / "candle_201801.csv")
    day = raw[raw.date == 20180103]
    m = store.read_minute(dt.date(2018, 1, 3))
    np.testing.assert_array_equal(m["close"][0], day.close)
    np.testing.assert_array_equal(m["volume"][0], day.volume)
    d = store.read("daily", dt.date(2018, 1, 3)).to_pylist()[0]
    prev = raw[raw.date == 20180102].close.iloc[-1]
    assert d["pre_close"] == prev and d["limit_up"] == round(prev * 1.1 + 1e-9, 2)


def test_vendor_daily_bars(real: tuple[Store, dict]) -> None:
    store, r = real
    c = r["daily"].counts
    assert (c["rows_read"], c["rows_written"], c["non_stock_rows_skipped"]) == (5408, 4731, 677)
    d = store.read("daily", dt.date(2022, 6, 17)).to_pandas().set_index("symbol")
    assert d.loc["000001.SZ", "close"] == 14.45 and d.loc["000001.SZ", "pre_close"] == 14.44
    assert d.loc["000001.SZ", "adj_factor"] == 111.922
    assert d.suspended.sum() == 22  # status 连续停牌
    np.testing.assert_allclose(d.loc["000001.SZ", "float_cap"], 1.940552e10 * 14.45)


def test_csi500_weights(real: tuple[Store, dict]) -> None:
    store, r = real
    rep = r["weights"]
    assert rep.counts["rows_read"] == 1087 and rep.counts["rows_written"] == 543_490
    s = rep.details["index_weight_sums"]
    assert s["dates"] == 1087 and not s["renormalised"]
    assert s["min"] == pytest.approx(0.99356, abs=1e-5)
    assert s["max"] == pytest.approx(1.01111, abs=1e-5)
    assert rep.counts["symbols_not_in_master"] == 18  # listed after the 2022-06 master
    w = store.read("index_weights", dt.date(2020, 1, 2)).to_pandas()
    assert len(w) == 500 and "000006.SZ" in set(w.symbol)
    assert w.set_index("symbol").loc["000006.SZ", "weight"] == pytest.approx(0.0011669888703456)


def test_factors_compute_on_real_sse_day(real: tuple[Store, dict]) -> None:
    factors = pytest.importorskip("fbgpu.factors")
    store, _ = real
    cube = factors.compute_factors(store, [SSE_DAY], backend="cpu")
    assert list(cube.symbols) == SSE_STOCKS and len(cube.names) == 27
    values = np.asarray(cube.values)[0]
    assert np.isfinite(values).all(), [n for j, n in enumerate(cube.names)
                                       if not np.isfinite(values[:, j]).all()]
