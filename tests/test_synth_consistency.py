"""The synthetic market is internally consistent: every level agrees with the ticks.

Oracles are independent re-implementations in pandas (not fbgpu.data.bars), run on every
stock-day of the ``tiny`` preset.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from fbgpu.data.store import Store
from fbgpu.data.synth import PRESETS, SYNTH_JSON, TRUTH_COLUMNS

TABLES = ("trades", "orders", "cancels", "minute", "daily", "index_weights", "synth_truth")


def _minute_index(ts: np.ndarray) -> np.ndarray:
    """Oracle for the 240-minute grid, written from spec/factors.md independently of bars.py."""
    minutes = ts / 60e9  # minutes since midnight
    out = np.empty(len(ts), dtype=np.int64)
    am = (minutes >= 570) & (minutes < 690)
    pm = (minutes >= 780) & (minutes < 900)
    out[minutes < 570] = 0
    out[am] = np.floor(minutes[am] - 570)
    out[(minutes >= 690) & (minutes < 780)] = 119
    out[pm] = 120 + np.floor(minutes[pm] - 780)
    out[minutes >= 900] = 239
    return out


@pytest.fixture(scope="module")
def days(tiny_store: Store) -> dict[str, list[pd.DataFrame]]:
    dates = tiny_store.dates("daily")
    out: dict[str, list[pd.DataFrame]] = {t: [] for t in TABLES}
    for d in dates:
        for t in TABLES:
            df = tiny_store.read(t, d).to_pandas()
            for c in ("symbol", "index", "industry"):
                if c in df.columns:
                    df[c] = df[c].astype(str)
            out[t].append(df)
    return out


def test_all_tables_written_for_every_weekday(tiny_store: Store) -> None:
    cfg = PRESETS["tiny"]
    dates = tiny_store.dates("daily")
    assert len(dates) == cfg.n_days
    assert all(d.weekday() < 5 for d in dates)
    assert dates[0] == cfg.start
    # consecutive weekdays: gaps of 1 day, or 3 over a weekend
    gaps = {(b - a).days for a, b in itertools.pairwise(dates)}
    assert gaps <= {1, 3}
    for t in TABLES:
        assert tiny_store.dates(t) == dates, t
        m = tiny_store.manifest(t, dates[0])
        assert m is not None and m.rows == tiny_store.read(t, dates[0]).num_rows
    sec = tiny_store.read("securities").to_pandas()
    assert len(sec) == cfg.n_stocks and sec.symbol.is_unique
    meta = json.loads((tiny_store.root / SYNTH_JSON).read_text())
    assert meta["preset"] == "tiny" and meta["seed"] == 0
    assert meta["config"]["n_stocks"] == cfg.n_stocks and meta["generator_version"]
    truth = tiny_store.read("synth_truth", dates[0])
    assert truth.column_names == ["date", "symbol", *TRUTH_COLUMNS]


def test_symbols_and_boards(tiny_store: Store) -> None:
    sec = tiny_store.read("securities").to_pandas()
    for sym, board in zip(sec.symbol, sec.board, strict=True):
        code, exch = sym.split(".")
        assert len(code) == 6 and exch in ("SH", "SZ")
        expected = {"60": ("SSE Main", "SH"), "68": ("STAR", "SH"), "30": ("ChiNext", "SZ"),
                    "00": ("SZSE Main", "SZ")}[code[:2]]
        assert (board, exch) == expected, sym
    assert sec.industry.nunique() > 5


def test_minute_bars_equal_aggregated_trades(days: dict[str, list[pd.DataFrame]]) -> None:
    n_checked = 0
    for trades, minute, daily in zip(days["trades"], days["minute"], days["daily"],
                                     strict=True):
        pre = daily.set_index("symbol").pre_close
        trades = trades.assign(minute=_minute_index(trades.ts.to_numpy()))
        g = trades.groupby(["symbol", "minute"])
        agg = pd.DataFrame({
            "open": g.price.first(), "high": g.price.max(), "low": g.price.min(),
            "close": g.price.last(), "volume": g.volume.sum(), "amount": g.amount.sum(),
            "num_trades": g.size(),
        })
        for sym, bars in minute.groupby("symbol"):
            bars = bars.set_index("minute").sort_index()
            assert list(bars.index) == list(range(240))
            a = agg.loc[sym] if sym in agg.index.get_level_values(0) else agg.iloc[:0]
            a = a.reindex(range(240))
            traded = a.num_trades.notna().to_numpy()
            np.testing.assert_array_equal(bars.num_trades.to_numpy()[traded],
                                          a.num_trades.to_numpy()[traded])
            assert (bars.num_trades.to_numpy()[~traded] == 0).all()
            for c in ("open", "high", "low", "close", "amount"):
                np.testing.assert_allclose(bars[c].to_numpy()[traded], a[c].to_numpy()[traded],
                                           rtol=1e-12, err_msg=f"{sym} {c}")
            np.testing.assert_array_equal(bars.volume.to_numpy()[traded],
                                          a.volume.to_numpy()[traded])
            # minutes without trades carry the previous close (pre_close before the first trade)
            carry = a.close.ffill().fillna(pre[sym]).shift(1).fillna(pre[sym]).to_numpy()
            for c in ("open", "high", "low", "close"):
                np.testing.assert_allclose(bars[c].to_numpy()[~traded], carry[~traded])
            n_checked += 1
    assert n_checked > 1000


def test_daily_equals_aggregated_minutes(days: dict[str, list[pd.DataFrame]]) -> None:
    for minute, daily in zip(days["minute"], days["daily"], strict=True):
        daily = daily.set_index("symbol")
        traded = minute[minute.num_trades > 0]
        g = traded.groupby("symbol")
        agg = pd.DataFrame({"open": g.open.first(), "high": g.high.max(), "low": g.low.min(),
                            "close": g.close.last(), "volume": g.volume.sum(),
                            "amount": g.amount.sum()})
        dd = daily.loc[agg.index]
        for c in ("open", "high", "low", "close", "amount"):
            np.testing.assert_allclose(dd[c], agg[c], rtol=1e-12, err_msg=c)
        np.testing.assert_array_equal(dd.volume, agg.volume)
        np.testing.assert_allclose(dd.vwap, agg.amount / agg.volume, rtol=1e-12)
        assert not dd.suspended.any()
        # every listed stock has a daily row; suspended ones no minute bars and no volume
        susp = daily[daily.suspended]
        assert not set(susp.index) & set(minute.symbol)
        assert (susp.volume == 0).all() and (susp.amount == 0).all()
        for c in ("open", "high", "low", "close", "vwap"):
            np.testing.assert_array_equal(susp[c], susp.pre_close)


def test_daily_prices_limits_and_adjustment(days: dict[str, list[pd.DataFrame]],
                                            tiny_store: Store) -> None:
    sec = tiny_store.read("securities").to_pandas().set_index("symbol")
    prev: pd.DataFrame | None = None
    for daily in days["daily"]:
        d = daily.set_index("symbol")
        assert (d.low <= d.open + 1e-12).all() and (d.open <= d.high + 1e-12).all()
        assert (d.low <= d.close + 1e-12).all() and (d.close <= d.high + 1e-12).all()
        assert (d.high <= d.limit_up + 1e-9).all() and (d.low >= d.limit_down - 1e-9).all()
        frac = np.where(d.st, 0.05, np.where(sec.loc[d.index].board.isin(["ChiNext", "STAR"]),
                                             0.20, 0.10))
        cents = np.round(d.pre_close * 100)
        np.testing.assert_array_equal(np.round(d.limit_up * 100),
                                      np.floor(cents * (1 + frac) + 0.5 + 1e-9))
        np.testing.assert_array_equal(np.round(d.limit_down * 100),
                                      np.floor(cents * (1 - frac) + 0.5 + 1e-9))
        # float shares change only with bonus shares (adj_factor moves too)
        shares = d.float_cap / d.close
        assert (shares >= sec.loc[d.index].float_shares - 1e-6).all()
        assert (d.float_cap > 0).all()
        if prev is not None:
            both = d.index.intersection(prev.index)
            # the adjusted previous close is continuous across ex-dates (backward adjustment)
            np.testing.assert_allclose(d.loc[both].pre_close * d.loc[both].adj_factor,
                                       prev.loc[both].close * prev.loc[both].adj_factor,
                                       rtol=1e-12)
            same = d.loc[both].adj_factor == prev.loc[both].adj_factor
            np.testing.assert_array_equal(d.loc[both][same].pre_close,
                                          prev.loc[both][same].close)
        prev = d


def test_ticks_reference_orders_and_respect_limits(days: dict[str, list[pd.DataFrame]]) -> None:
    for trades, orders, cancels, daily in zip(days["trades"], days["orders"], days["cancels"],
                                              days["daily"], strict=True):
        lim = daily.set_index("symbol")[["limit_up", "limit_down"]]
        o = orders.set_index(["symbol", "order_id"])
        assert o.index.is_unique
        assert (orders.order_id == orders.seq).all()
        for col, side in (("buy_order_id", 1), ("sell_order_id", -1)):
            keys = pd.MultiIndex.from_arrays([trades.symbol, trades[col]])
            assert keys.isin(o.index).all(), f"{col} references a missing order"
            assert (o.loc[keys].side.to_numpy() == side).all()
        tl = lim.loc[trades.symbol]
        assert (trades.price.to_numpy() <= tl.limit_up.to_numpy() + 1e-9).all()
        assert (trades.price.to_numpy() >= tl.limit_down.to_numpy() - 1e-9).all()
        ol = lim.loc[orders.symbol]
        lo = orders.price.to_numpy()
        finite = np.isfinite(lo)
        assert (orders.order_type[~finite] == 1).all()  # only market orders carry NaN
        assert (lo[finite] <= ol.limit_up.to_numpy()[finite] + 1e-9).all()
        assert (lo[finite] >= ol.limit_down.to_numpy()[finite] - 1e-9).all()
        # prices on the 0.01 grid, volumes in lots of 100, amount = price * volume
        for px in (trades.price.to_numpy(), lo[finite]):
            np.testing.assert_allclose(px * 100, np.round(px * 100), atol=1e-6)
        assert (trades.volume > 0).all() and (trades.volume % 100 == 0).all()
        assert (orders.volume > 0).all() and (orders.volume % 100 == 0).all()
        np.testing.assert_allclose(trades.amount, trades.price * trades.volume, rtol=1e-15)
        # no order is filled or cancelled beyond its size
        filled = (trades.groupby(["symbol", "buy_order_id"]).volume.sum()
                  .rename_axis(["symbol", "order_id"]))
        filled = filled.add(trades.groupby(["symbol", "sell_order_id"]).volume.sum()
                            .rename_axis(["symbol", "order_id"]), fill_value=0)
        gone = filled.add(cancels.groupby(["symbol", "order_id"]).volume.sum(), fill_value=0)
        assert (gone <= o.volume.reindex(gone.index)).all()
        ck = pd.MultiIndex.from_arrays([cancels.symbol, cancels.order_id])
        assert ck.isin(o.index).all()
        assert (o.loc[ck].side.to_numpy() == cancels.side.to_numpy()).all()


def test_sequence_sides_and_sessions(days: dict[str, list[pd.DataFrame]]) -> None:
    t0925, t1500 = 9 * 3600e9 + 25 * 60e9, 15 * 3600e9
    for trades, orders, cancels in zip(days["trades"], days["orders"], days["cancels"],
                                       strict=True):
        # one shared sequence counter per stock-day: unique, and time never goes backwards
        allev = pd.concat([trades[["symbol", "seq", "ts"]], orders[["symbol", "seq", "ts"]],
                           cancels[["symbol", "seq", "ts"]]]).sort_values(["symbol", "seq"])
        assert not allev.duplicated(["symbol", "seq"]).any()
        assert (allev.groupby("symbol").ts.diff().dropna() >= 0).all()
        auction = trades.side == 0
        assert set(trades.ts[auction].unique()) <= {t0925, t1500}
        cont = trades[~auction]
        # the aggressor is the later order: side +1 iff the buy order id is the larger one
        np.testing.assert_array_equal(
            np.where(cont.buy_order_id > cont.sell_order_id, 1, -1), cont.side)
        aggressor = np.where(cont.side > 0, cont.buy_order_id, cont.sell_order_id)
        o = orders.set_index(["symbol", "order_id"])
        agg_ts = o.loc[pd.MultiIndex.from_arrays([cont.symbol, aggressor])].ts.to_numpy()
        np.testing.assert_array_equal(agg_ts, cont.ts.to_numpy())
        mins = cont.ts / 60e9
        assert (((mins >= 570) & (mins < 690)) | ((mins >= 780) & (mins < 897))).all()
        omin = orders.ts / 60e9
        assert ((omin >= 555) & (omin < 900)).all()
        assert not ((omin >= 565) & (omin < 570)).any()  # nothing 09:25-09:30
        cmin = cancels.ts / 60e9
        assert not ((cmin >= 560) & (cmin < 570)).any()  # no cancels 09:20-09:30


def test_index_weights(days: dict[str, list[pd.DataFrame]], tiny_store: Store) -> None:
    dates = tiny_store.dates("daily")
    prev_members: dict[str, set[str]] = {}
    for d, iw, daily in zip(dates, days["index_weights"], days["daily"], strict=True):
        assert set(iw["index"]) == {"csi500", "csi1000"}
        sums = iw.groupby("index").weight.sum()
        np.testing.assert_allclose(sums, 1.0, rtol=1e-12)
        assert (iw.weight > 0).all()
        assert not iw.duplicated(["index", "symbol"]).any()
        m = {k: set(g.symbol) for k, g in iw.groupby("index")}
        assert not m["csi500"] & m["csi1000"]
        assert set(iw.symbol) <= set(daily.symbol)
        # weights are float-cap weights within the index
        cap = daily.set_index("symbol").float_cap
        for _k, g in iw.groupby("index"):
            np.testing.assert_allclose(g.weight, cap.loc[g.symbol] / cap.loc[g.symbol].sum())
        rebalance_day = d == dates[0] or (d.month in (6, 12) and d.day <= 3)
        if prev_members and not rebalance_day:
            assert m == prev_members
        prev_members = m
    # the large-cap index holds larger stocks than the small-cap one, ranked by the float cap
    # known at the open of the rebalance day (previous close x float shares)
    iw0, daily0 = days["index_weights"][0], days["daily"][0].set_index("symbol")
    cap_open = daily0.float_cap / daily0.close * daily0.pre_close
    caps = {k: cap_open.loc[list(g.symbol)] for k, g in iw0.groupby("index")}
    assert caps["csi500"].min() >= caps["csi1000"].max()


def test_tiny_has_every_feature(days: dict[str, list[pd.DataFrame]], tiny_store: Store) -> None:
    daily = pd.concat(days["daily"])
    trades = pd.concat(days["trades"])
    orders = pd.concat(days["orders"])
    sec = tiny_store.read("securities").to_pandas()
    first = tiny_store.dates("daily")[0]
    assert daily.suspended.any(), "a suspension"
    assert daily.st.any(), "an ST stock"
    assert (sec.list_date > first).any(), "a mid-sample listing"
    late = sec[sec.list_date > first].symbol
    assert daily[daily.symbol.isin(late)].date.min() > first
    assert (daily.close >= daily.limit_up - 1e-9).any(), "a limit-up close"
    assert (daily.groupby("symbol").adj_factor.nunique() > 1).any(), "a corporate action"
    assert (trades.side == 0).any(), "auction trades"
    assert (orders.order_type == 1).any(), "market orders"
    assert len(pd.concat(days["cancels"])) > 0, "cancellations"
    notional = orders.volume * orders.price
    assert notional.max() > 50 * notional.median(), "big orders"
    assert isinstance(first, dt.date)
