"""Write a store's canonical tables back out in vendor layouts (the inverse of ingest).

Used to test ingest end to end on the synthetic market (export -> ingest -> identical tables) and
to hand canonical data to tools that expect exchange layouts. Layouts written per date:

* ``sse_trade_<D>.csv``: every trade in the SSE trade layout (TradeBuyNo/TradeSellNo/TradeBSFlag
  B/S/N, TradeMoney), which carries every canonical trade field;
* ``szse_order_<D>.csv``: every order in the SZSE order layout (Side 1/2, OrdType 2/1/U; the
  order id is the ApplSeqNum, so this needs ``order_id == seq`` as in SZSE data);
* ``sse_cancel_<D>.csv``: every cancellation as SSE order-file deletions (OrdType D);
* ``szse_trans_<D>.csv``: SZSE symbols' trades and cancellations in the SZSE trade layout
  (ExecType F/4, no side column: ingest re-derives the aggressor from the later order);
* ``sse_tick_<D>.csv``: SSE symbols in the merged SSE tick layout (A/D/T), limit orders only,
  as the SSE publishes them;
* ``minute_bars.csv``, ``daily_bars.csv``, ``index_weights.csv`` (long), ``securities.csv``.

Timestamps are written as ``TransactTime`` integers ``YYYYMMDDHHMMSSmmm`` (SZSE style) or
``HH:MM:SS.fff`` text (SSE style), so both time parsers are exercised.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from fbgpu.data.schemas import ORDER_TYPE_BEST, ORDER_TYPE_LIMIT, ORDER_TYPE_MARKET
from fbgpu.data.store import Store

NS_PER_MS = 1_000_000


def _plain(t: pa.Table) -> pa.Table:
    return pa.table({n: (c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c)
                     for n, c in zip(t.column_names, t.columns, strict=True)})


def _hms_ms(ts: np.ndarray) -> np.ndarray:
    if (ts % NS_PER_MS).any():
        raise ValueError("timestamps below millisecond precision cannot be written in vendor "
                         "layouts (exchanges publish milliseconds)")
    ms = ts // NS_PER_MS
    s, milli = np.divmod(ms, 1000)
    h, rem = np.divmod(s, 3600)
    m, sec = np.divmod(rem, 60)
    return ((h * 100 + m) * 100 + sec) * 1000 + milli


def transact_time(date: dt.date, ts: np.ndarray) -> np.ndarray:
    """``YYYYMMDDHHMMSSmmm`` integers of a day's timestamps."""
    ymd = date.year * 10_000 + date.month * 100 + date.day
    return np.int64(ymd) * 1_000_000_000 + _hms_ms(ts)


def clock_text(ts: np.ndarray) -> list[str]:
    """``HH:MM:SS.fff`` strings."""
    v = _hms_ms(ts)
    return [f"{x // 10_000_000:02d}:{x // 100_000 % 100:02d}:{x // 1000 % 100:02d}."
            f"{x % 1000:03d}" for x in v.tolist()]


def _write(t: pa.Table, path: Path) -> Path:
    pacsv.write_csv(t, path)
    return path


def _flag(side: np.ndarray, letters: tuple[str, str, str] = ("B", "S", "N")) -> list[str]:
    return np.where(side > 0, letters[0], np.where(side < 0, letters[1], letters[2])).tolist()


def export_day(store: Store, date: dt.date, out: Path) -> dict[str, Path]:
    """Write one day's tick tables in vendor layouts; returns layout name -> file."""
    files: dict[str, Path] = {}
    ymd = date.strftime("%Y.%m.%d")
    tag = date.isoformat()
    if store.has("trades", date):
        t = _plain(store.read("trades", date))
        ts = t.column("ts").to_numpy()
        n = t.num_rows
        files["sse-trade"] = _write(pa.table({
            "MDDate": [ymd] * n, "MDTime": clock_text(ts),
            "SecurityID": t.column("symbol"), "ApplSeqNum": t.column("seq"),
            "TradeBuyNo": t.column("buy_order_id"), "TradeSellNo": t.column("sell_order_id"),
            "TradeBSFlag": _flag(t.column("side").to_numpy()),
            "TradePrice": t.column("price"), "TradeQty": t.column("volume"),
            "TradeMoney": t.column("amount")}), out / f"sse_trade_{tag}.csv")
    if store.has("orders", date):
        o = _plain(store.read("orders", date))
        if not pc.all(pc.equal(o.column("order_id"), o.column("seq"))).as_py():
            raise ValueError(f"orders/{date}: order ids differ from sequence numbers; the SZSE "
                             "order layout cannot carry them")
        typ = o.column("order_type").to_numpy()
        code = np.where(typ == ORDER_TYPE_LIMIT, "2", np.where(typ == ORDER_TYPE_MARKET, "1",
                                                               "U"))
        if not np.isin(typ, [ORDER_TYPE_LIMIT, ORDER_TYPE_MARKET, ORDER_TYPE_BEST]).all():
            raise ValueError(f"orders/{date}: unknown order type codes")
        price = np.nan_to_num(o.column("price").to_numpy(zero_copy_only=False), nan=0.0)
        files["szse-order"] = _write(pa.table({
            "SecurityID": o.column("symbol"),
            "TransactTime": transact_time(date, o.column("ts").to_numpy()),
            "ApplSeqNum": o.column("seq"), "Price": price, "OrderQty": o.column("volume"),
            "Side": np.where(o.column("side").to_numpy() > 0, "1", "2").tolist(),
            "OrdType": code.tolist()}), out / f"szse_order_{tag}.csv")
    if store.has("cancels", date):
        c = _plain(store.read("cancels", date))
        n = c.num_rows
        files["sse-order"] = _write(pa.table({
            "MDDate": [ymd] * n, "MDTime": clock_text(c.column("ts").to_numpy()),
            "SecurityID": c.column("symbol"), "ApplSeqNum": c.column("seq"),
            "OrderNO": c.column("order_id"), "OrderType": ["D"] * n,
            "OrderPrice": np.zeros(n), "Balance": c.column("volume"),
            "OrderBSFlag": _flag(c.column("side").to_numpy())}), out / f"sse_cancel_{tag}.csv")
    return files


def export_szse_trans(store: Store, date: dt.date, out: Path) -> Path:
    """SZSE symbols' trades and cancellations of a day in the SZSE trade layout.

    A cancellation names its order in BidApplSeqNum (buy) or OfferApplSeqNum (sell), the other
    being 0, as SZSE does (its sequence numbers start at 1). Cancels of order id 0 cannot be
    represented and are left out (the synthetic market numbers orders from 0).
    """
    t = _plain(store.read("trades", date))
    t = t.filter(pc.ends_with(t.column("symbol"), ".SZ"))
    c = _plain(store.read("cancels", date))
    c = c.filter(pc.and_(pc.ends_with(c.column("symbol"), ".SZ"),
                         pc.greater(c.column("order_id"), 0)))
    cs = c.column("side").to_numpy()
    cid = c.column("order_id").to_numpy()
    both = pa.table({
        "SecurityID": pa.concat_arrays([t.column("symbol").combine_chunks(),
                                        c.column("symbol").combine_chunks()]),
        "TransactTime": np.r_[transact_time(date, t.column("ts").to_numpy()),
                              transact_time(date, c.column("ts").to_numpy())],
        "ApplSeqNum": np.r_[t.column("seq").to_numpy(), c.column("seq").to_numpy()],
        "BidApplSeqNum": np.r_[t.column("buy_order_id").to_numpy(), np.where(cs > 0, cid, 0)],
        "OfferApplSeqNum": np.r_[t.column("sell_order_id").to_numpy(),
                                 np.where(cs < 0, cid, 0)],
        "LastPx": np.r_[t.column("price").to_numpy(), np.zeros(c.num_rows)],
        "LastQty": np.r_[t.column("volume").to_numpy(), c.column("volume").to_numpy()],
        "ExecType": ["F"] * t.num_rows + ["4"] * c.num_rows,
    })
    both = both.sort_by([("SecurityID", "ascending"), ("ApplSeqNum", "ascending")])
    return _write(both, out / f"szse_trans_{date.isoformat()}.csv")


def export_sse_tick(store: Store, date: dt.date, out: Path) -> Path:
    """SSE symbols' limit orders, cancellations and trades of a day as one merged A/D/T stream."""
    parts = []
    o = _plain(store.read("orders", date))
    o = o.filter(pc.and_(pc.ends_with(o.column("symbol"), ".SH"),
                         pc.equal(o.column("order_type"), ORDER_TYPE_LIMIT)))
    os_ = o.column("side").to_numpy()
    oid = o.column("order_id").to_numpy()
    parts.append(pa.table({
        "SecurityID": o.column("symbol"), "BizIndex": o.column("seq"),
        "TickTime": clock_text(o.column("ts").to_numpy()), "Type": ["A"] * o.num_rows,
        "BuyOrderNO": np.where(os_ > 0, oid, 0), "SellOrderNO": np.where(os_ < 0, oid, 0),
        "Price": o.column("price"), "Qty": o.column("volume"),
        "TradeMoney": np.zeros(o.num_rows), "TickBSFlag": _flag(os_)}))
    c = _plain(store.read("cancels", date))
    c = c.filter(pc.ends_with(c.column("symbol"), ".SH"))
    cs = c.column("side").to_numpy()
    cid = c.column("order_id").to_numpy()
    parts.append(pa.table({
        "SecurityID": c.column("symbol"), "BizIndex": c.column("seq"),
        "TickTime": clock_text(c.column("ts").to_numpy()), "Type": ["D"] * c.num_rows,
        "BuyOrderNO": np.where(cs > 0, cid, 0), "SellOrderNO": np.where(cs < 0, cid, 0),
        "Price": np.zeros(c.num_rows), "Qty": c.column("volume"),
        "TradeMoney": np.zeros(c.num_rows), "TickBSFlag": _flag(cs)}))
    t = _plain(store.read("trades", date))
    t = t.filter(pc.ends_with(t.column("symbol"), ".SH"))
    parts.append(pa.table({
        "SecurityID": t.column("symbol"), "BizIndex": t.column("seq"),
        "TickTime": clock_text(t.column("ts").to_numpy()), "Type": ["T"] * t.num_rows,
        "BuyOrderNO": t.column("buy_order_id"), "SellOrderNO": t.column("sell_order_id"),
        "Price": t.column("price"), "Qty": t.column("volume"),
        "TradeMoney": t.column("amount"), "TickBSFlag": _flag(t.column("side").to_numpy())}))
    merged = pa.concat_tables(parts).sort_by([("SecurityID", "ascending"),
                                              ("BizIndex", "ascending")])
    merged = merged.add_column(0, "MDDate", pa.array([date.strftime("%Y%m%d")] * len(merged)))
    return _write(merged, out / f"sse_tick_{date.isoformat()}.csv")


def export_bars_and_reference(store: Store, dates: Sequence[dt.date], out: Path
                              ) -> dict[str, Path]:
    """Minute bars (end-labelled HHMMSSmmm times), daily bars, index weights, securities."""
    files: dict[str, Path] = {}
    minute_parts, daily_parts, weight_parts = [], [], []
    end_label = np.r_[np.arange(120) + 9 * 60 + 31, np.arange(120) + 13 * 60 + 1]
    hhmm = (end_label // 60) * 100 + end_label % 60
    for d in dates:
        if store.has("minute", d):
            m = _plain(store.read("minute", d))
            k = m.column("minute").to_numpy().astype(np.int64)
            minute_parts.append(pa.table({
                "symbol": m.column("symbol"),
                "date": [d.strftime("%Y%m%d")] * m.num_rows,
                "time": hhmm[k] * 100_000, "open": m.column("open"), "high": m.column("high"),
                "low": m.column("low"), "close": m.column("close"),
                "volume": m.column("volume"), "turnover": m.column("amount"),
                "num_trades": m.column("num_trades")}))
        if store.has("daily", d):
            daily_parts.append(_plain(store.read("daily", d)).rename_columns(
                {"pre_close": "preclose", "adj_factor": "adjfactor"}))
        if store.has("index_weights", d):
            weight_parts.append(_plain(store.read("index_weights", d)))
    if minute_parts:
        files["minute-bars"] = _write(pa.concat_tables(minute_parts), out / "minute_bars.csv")
    if daily_parts:
        files["daily-bars"] = _write(pa.concat_tables(daily_parts), out / "daily_bars.csv")
    if weight_parts:
        files["index-weights"] = _write(pa.concat_tables(weight_parts), out / "index_weights.csv")
    if store.has("securities"):
        files["securities"] = _write(store.read("securities"), out / "securities.csv")
    return files


def export_market(store: Store | str, out: str | Path,
                  dates: Sequence[dt.date] | None = None) -> dict[str, list[Path]]:
    """Export ``dates`` (default: every date with trades) of a store in vendor layouts.

    Returns format name -> files, ready for :func:`fbgpu.data.ingest.ingest`.
    """
    st = store if isinstance(store, Store) else Store(store)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dates = list(dates) if dates is not None else st.dates("trades")
    files: dict[str, list[Path]] = {}
    for d in dates:
        for fmt, p in export_day(st, d, out).items():
            files.setdefault(fmt, []).append(p)
        if st.has("trades", d) and st.has("cancels", d):
            files.setdefault("szse-trade", []).append(export_szse_trans(st, d, out))
        if st.has("trades", d) and st.has("orders", d) and st.has("cancels", d):
            files.setdefault("sse-tick", []).append(export_sse_tick(st, d, out))
    for fmt, p in export_bars_and_reference(st, dates, out).items():
        files.setdefault(fmt, []).append(p)
    return files
