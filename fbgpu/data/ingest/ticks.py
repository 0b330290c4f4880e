"""Tick-by-tick formats (SZSE/SSE trades and orders, the SSE merged stream) to canonical rows.

Each builder turns the parsed :class:`~fbgpu.data.ingest.reader.Rows` of a format into canonical
``trades`` / ``orders`` / ``cancels`` rows (same :class:`Rows` container, canonical column names),
then :func:`apply_rules` enforces the rules shared by all tick tables:

1. sessions: rows stamped outside the exchange's sessions (plus ``session_grace_s``) are dropped,
   kept or fatal per ``policies.outside_session``;
2. non-positive prices/volumes: fatal or dropped per ``policies.nonpositive``;
3. ordering: rows are sorted by ``(date, symbol, seq)``; rows that came after a higher sequence
   number of the same stock-day are counted as reordered;
4. duplicates: rows repeating a stock-day's sequence number with identical content are dropped and
   counted; the same sequence number with different content is fatal (a corrupt file).

Invariants (:mod:`fbgpu.data.ingest.invariants`) are fatal: a negative ``seq``; a trade price that
is not finite or above 1e6 CNY; a vendor amount that is not price x volume.

A trade's side (aggressor) follows ``side_rule`` (:func:`trade_side`); trades of the continuous
session left with side 0 are counted (:func:`count_side_unknown`).
"""

from __future__ import annotations

import logging

import numba as nb
import numpy as np

from fbgpu.data.bars import T_0930, T_1130, T_1300, T_1457, T_1500, hhmm_to_ns
from fbgpu.data.ingest.errors import ValidationReport
from fbgpu.data.ingest.invariants import check_int64, check_seq, check_trades
from fbgpu.data.ingest.mapping import IngestConfig
from fbgpu.data.ingest.reader import Rows, day_str
from fbgpu.data.ingest.values import CANONICAL_CODES, clock
from fbgpu.data.schemas import ORDER_TYPE_LIMIT

logger = logging.getLogger(__name__)
T_0915 = hhmm_to_ns(9, 15)
T_0925 = hhmm_to_ns(9, 25)
NS = 1_000_000_000

TRADE, CANCEL = CANONICAL_CODES["trade"], CANONICAL_CODES["cancel"]
ADD, DELETE, STATUS = CANONICAL_CODES["add"], CANONICAL_CODES["delete"], CANONICAL_CODES["status"]

#: Canonical value columns of each tick table (besides date and symbol), in schema order.
TICK_COLUMNS: dict[str, tuple[str, ...]] = {
    "trades": ("seq", "ts", "price", "volume", "amount", "buy_order_id", "sell_order_id", "side"),
    "orders": ("seq", "ts", "order_id", "price", "volume", "side", "order_type"),
    "cancels": ("seq", "ts", "order_id", "volume", "side"),
}


def session_windows(table: str, grace_s: float) -> list[tuple[int, int]]:
    """Allowed ``[lo, hi]`` timestamp windows (ns since midnight) of a tick table.

    Trades print at the opening auction (09:25), in continuous trading 09:30-11:30 and 13:00-14:57
    and at the closing auction (15:00); orders and cancellations arrive from 09:15. ``grace_s``
    seconds are allowed after 09:25, 11:30 and 15:00 (the SSE stamps closing prints 15:00:00.xxx).
    """
    g = round(grace_s * NS)
    if table == "trades":
        return [(T_0925, T_0925 + g), (T_0930, T_1130 + g), (T_1300, T_1500 + g)]
    return [(T_0915, T_1130 + g), (T_1300, T_1500 + g)]


def _in_windows(ts: np.ndarray, windows: list[tuple[int, int]]) -> np.ndarray:
    ok = np.zeros(ts.shape, dtype=bool)
    for lo, hi in windows:
        ok |= (ts >= lo) & (ts <= hi)
    return ok


def whole_shares(rows: Rows, field: str, values: np.ndarray, multiplier: float) -> np.ndarray:
    """Volumes as int64 shares; a fractional share count is an error naming the row."""
    v = values * multiplier
    check_int64(rows, field, v)
    r = np.rint(v)
    bad = np.isfinite(v) & (np.abs(v - r) > 1e-6 * np.maximum(1.0, np.abs(v)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise rows.error(i, field, f"volume {values[i]!r} is not a whole number of shares")
    return np.where(np.isfinite(r), r, 0).astype(np.int64)


def _canonical(rows: Rows, idx: np.ndarray, cols: dict[str, np.ndarray],
               source: dict[str, str]) -> Rows:
    """A canonical-columns :class:`Rows` for ``rows[idx]``; ``source`` maps canonical column ->
    source field (for error messages that name the vendor column)."""
    source = {"ts": "time", **source}
    values = {k: v[idx] if len(v) == rows.n else v for k, v in cols.items()}
    values["date"] = rows.values["date"][idx]
    values["symbol"] = rows.values["symbol"][idx]
    values["file"] = rows.values["file"][idx]
    values["row"] = rows.values["row"][idx]
    columns = [{c: m.get(source.get(c, c), source.get(c, c)) for c in (*cols, "seq", "ts")}
               for m in rows.columns]
    return Rows(values, rows.symbols, rows.files, columns)


def _amount(price: np.ndarray, volume: np.ndarray, given: np.ndarray | None) -> np.ndarray:
    computed = price * volume
    if given is None:
        return computed
    return np.where(np.isfinite(given) & (given > 0), given, computed)


def side_from_order_numbers(buy: np.ndarray, sell: np.ndarray) -> np.ndarray:
    """+1 (buyer-initiated) when the buy order number is the higher, -1 when the sell order's
    is, 0 when they are equal: exchange order numbers grow in time, and the later order is the
    one that crossed the spread."""
    return np.sign(buy.astype(np.int64) - sell.astype(np.int64)).astype(np.int8)


def side_from_tick_rule(rows: Rows, price: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """The tick rule per stock-day, trades in ``seq`` order (ties keep the input order):
    +1 when the price is above the previous trade's, -1 below, the previous trade's side when
    equal (zero tick), 0 for the first trade of the stock-day and zero ticks before any move."""
    v = rows.values
    n = rows.n
    order = np.lexsort((seq, v["symbol"], v["date"]))
    d, s, p = v["date"][order], v["symbol"][order], price[order]
    start = np.r_[True, (d[1:] != d[:-1]) | (s[1:] != s[:-1])] if n else np.zeros(0, bool)
    move = np.r_[0.0, np.sign(np.diff(p))] if n else np.zeros(0)
    move[start] = 0.0
    pos = np.maximum.accumulate(np.where((move != 0) | start, np.arange(n), 0)) if n else \
        np.zeros(0, dtype=np.int64)
    out = np.empty(n, dtype=np.int8)
    out[order] = move[pos].astype(np.int8)
    return out


def call_auction(ts: np.ndarray) -> np.ndarray:
    """Trades printed by a call auction: before 09:30 or from 14:57 (side 0 under the order-
    number and tick rules)."""
    return (ts < T_0930) | (ts >= T_1457)


def trade_side(rows: Rows, cfg: IngestConfig, native: str, buy: np.ndarray, sell: np.ndarray,
               flag: np.ndarray | None = None) -> np.ndarray:
    """Trade sides under ``cfg.side_rule`` (``auto`` = the format's ``native`` rule).

    ``flag``: the BS-flag side (SSE), used as given (auction prints carry N/0 there). The
    order-number and tick rules give call-auction prints side 0.
    """
    rule = native if cfg.side_rule == "auto" else cfg.side_rule
    if rule == "flag":
        assert flag is not None
        return flag.astype(np.int8)
    v = rows.values
    if rule == "order_numbers":
        side = side_from_order_numbers(buy, sell)
    else:
        side = side_from_tick_rule(rows, v["price"], v["seq"])
    return np.where(call_auction(v["time"]), 0, side).astype(np.int8)


def continuous(ts: np.ndarray) -> np.ndarray:
    """Continuous-session timestamps: 09:30 <= ts < 11:30 or 13:00 <= ts < 14:57."""
    return ((ts >= T_0930) & (ts < T_1130)) | ((ts >= T_1300) & (ts < T_1457))


def count_side_unknown(trades: Rows, report: ValidationReport) -> None:
    """Count and warn about continuous-session trades with side 0 (``trades_side_unknown``).

    A stock-day whose continuous-session trades all have side 0 has an unknown side: the factors
    that need it (active buying) are NaN there (fbgpu/factors/trade.py). Those stock-days are
    counted as ``stock_days_side_unknown`` and listed (first 20) in ``details``.
    """
    v = trades.values
    cont = continuous(v["ts"])
    zero = cont & (v["side"] == 0)
    report.add("trades_side_unknown", int(zero.sum()))
    if not zero.any():
        return
    key = v["date"].astype(np.int64) << 32 | v["symbol"].astype(np.int64)
    known = np.unique(key[cont & (v["side"] != 0)])
    unknown = np.setdiff1d(np.unique(key[zero]), known)
    report.add("stock_days_side_unknown", len(unknown))
    names = [f"{day_str(int(k >> 32))}/{trades.symbols[int(k & 0xFFFFFFFF)]}"
             for k in unknown[:20]]
    report.details.setdefault("side_unknown_stock_days", []).extend(names)
    text = (f"{int(zero.sum())} continuous-session trade(s) have no side (flag N/0 or empty, or "
            f"equal order numbers); {len(unknown)} stock-day(s) have no side at all, so their "
            "active-buying factors are NaN (set side_rule in the mapping if the file has no "
            "flag)")
    report.note(text)
    logger.warning(text)


def build_szse_trades(rows: Rows, cfg: IngestConfig, report: ValidationReport) -> dict[str, Rows]:
    """SZSE trades: ExecType F trades, ExecType 4 cancellations to ``cancels``.

    Aggressor: the later order (higher ApplSeqNum) is the one that crossed the spread, so side =
    +1 when BidApplSeqNum > OfferApplSeqNum, -1 when lower, 0 when equal; call-auction prints
    (before 09:30 or from 14:57) get side 0 (``side_rule = "tick"`` uses the tick rule instead).
    A cancellation's order is whichever of the two ids is non-zero.
    """
    v = rows.values
    volume = whole_shares(rows, "volume", v["volume"], cfg.volume_multiplier)
    bid, ask, ts = v["bid_id"], v["ask_id"], v["time"]
    is_cancel = v["exec_type"] == CANCEL
    report.add("cancellations_separated", int(is_cancel.sum()))
    side = trade_side(rows, cfg, "order_numbers", bid, ask)
    amount = _amount(v["price"], volume.astype(np.float64), v.get("amount"))
    src = {"buy_order_id": "bid_id", "sell_order_id": "ask_id", "side": "exec_type"}
    t_idx = np.flatnonzero(~is_cancel)
    trades = _canonical(rows, t_idx, {
        "seq": v["seq"], "ts": ts, "price": v["price"], "volume": volume, "amount": amount,
        "buy_order_id": bid, "sell_order_id": ask, "side": side}, src)
    c_idx = np.flatnonzero(is_cancel)
    cancels = _canonical(rows, c_idx, {
        "seq": v["seq"], "ts": ts, "order_id": np.where(bid > 0, bid, ask), "volume": volume,
        "side": np.where(bid > 0, 1, -1).astype(np.int8)}, {"order_id": "bid_id"})
    return {"trades": trades, "cancels": cancels}


def build_szse_orders(rows: Rows, cfg: IngestConfig, report: ValidationReport) -> dict[str, Rows]:
    """SZSE orders: the order id is the ApplSeqNum; market and best-own-side orders: price NaN."""
    v = rows.values
    volume = whole_shares(rows, "volume", v["volume"], cfg.volume_multiplier)
    otype = v["ord_type"].astype(np.int8)
    price = np.where(otype == ORDER_TYPE_LIMIT, v["price"], np.nan)
    idx = np.arange(rows.n)
    orders = _canonical(rows, idx, {
        "seq": v["seq"], "ts": v["time"], "order_id": v["seq"], "price": price, "volume": volume,
        "side": v["side"].astype(np.int8), "order_type": otype}, {"order_type": "ord_type",
                                                                 "order_id": "seq"})
    return {"orders": orders}


def build_sse_trades(rows: Rows, cfg: IngestConfig, report: ValidationReport) -> dict[str, Rows]:
    """SSE trades: TradeBSFlag gives the aggressor (B/1 buyer, S/2 seller, N/0 auction), or
    ``side_rule`` (order numbers, tick rule) for files without a flag."""
    v = rows.values
    side = trade_side(rows, cfg, "flag", v["buy_id"], v["sell_id"], v.get("bs_flag"))
    volume = whole_shares(rows, "volume", v["volume"], cfg.volume_multiplier)
    amount = _amount(v["price"], volume.astype(np.float64), v.get("amount"))
    trades = _canonical(rows, np.arange(rows.n), {
        "seq": v["seq"], "ts": v["time"], "price": v["price"], "volume": volume, "amount": amount,
        "buy_order_id": v["buy_id"], "sell_order_id": v["sell_id"], "side": side},
        {"buy_order_id": "buy_id", "sell_order_id": "sell_id", "side": "bs_flag"})
    return {"trades": trades}


def _check_sides(rows: Rows, side: np.ndarray, mask: np.ndarray, field: str) -> None:
    bad = mask & (side == 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise rows.error(i, field, "an order or cancellation needs a buy/sell side (got N/0)")


def build_sse_orders(rows: Rows, cfg: IngestConfig, report: ValidationReport) -> dict[str, Rows]:
    """SSE orders: adds (A, or 2) are orders, deletions (D, or 10) cancellations, S rows skipped.

    SSE publishes only what rests in the book: the volume is the resting remainder (Balance), and
    a marketable order filled on arrival never appears. Orders are limit orders (market orders
    that rest have been converted to limit orders at their resting price by the exchange).
    """
    v = rows.values
    kind = v["kind"]
    report.add("status_rows_skipped", int((kind == STATUS).sum()))
    report.add("cancellations_separated", int((kind == DELETE).sum()))
    volume = whole_shares(rows, "volume", v["volume"], cfg.volume_multiplier)
    side = v["side"].astype(np.int8)
    _check_sides(rows, side, kind != STATUS, "side")
    a = np.flatnonzero(kind == ADD)
    d = np.flatnonzero(kind == DELETE)
    orders = _canonical(rows, a, {
        "seq": v["seq"], "ts": v["time"], "order_id": v["order_id"], "price": v["price"],
        "volume": volume, "side": side,
        "order_type": np.full(rows.n, ORDER_TYPE_LIMIT, dtype=np.int8)}, {"order_type": "kind"})
    cancels = _canonical(rows, d, {
        "seq": v["seq"], "ts": v["time"], "order_id": v["order_id"], "volume": volume,
        "side": side}, {})
    return {"orders": orders, "cancels": cancels}


def build_sse_tick(rows: Rows, cfg: IngestConfig, report: ValidationReport) -> dict[str, Rows]:
    """SSE merged stream: Type A -> orders, D -> cancels, T -> trades, S (status) skipped.

    For A/D rows the side flag says which of BuyOrderNO/SellOrderNO is the order's number.
    """
    v = rows.values
    typ = v["type"]
    report.add("status_rows_skipped", int((typ == STATUS).sum()))
    report.add("cancellations_separated", int((typ == DELETE).sum()))
    volume = whole_shares(rows, "volume", v["volume"], cfg.volume_multiplier)
    side = v["bs_flag"].astype(np.int8)
    _check_sides(rows, side, (typ == ADD) | (typ == DELETE), "bs_flag")
    order_id = np.where(side > 0, v["buy_id"], v["sell_id"])
    t = np.flatnonzero(typ == TRADE)
    a = np.flatnonzero(typ == ADD)
    d = np.flatnonzero(typ == DELETE)
    amount = _amount(v["price"], volume.astype(np.float64), v.get("amount"))
    ids = {"buy_order_id": "buy_id", "sell_order_id": "sell_id", "side": "bs_flag",
           "order_id": "buy_id"}
    trades = _canonical(rows, t, {
        "seq": v["seq"], "ts": v["time"], "price": v["price"], "volume": volume, "amount": amount,
        "buy_order_id": v["buy_id"], "sell_order_id": v["sell_id"], "side": side}, ids)
    orders = _canonical(rows, a, {
        "seq": v["seq"], "ts": v["time"], "order_id": order_id, "price": v["price"],
        "volume": volume, "side": side,
        "order_type": np.full(rows.n, ORDER_TYPE_LIMIT, dtype=np.int8)}, ids)
    cancels = _canonical(rows, d, {
        "seq": v["seq"], "ts": v["time"], "order_id": order_id, "volume": volume, "side": side},
        ids)
    return {"trades": trades, "orders": orders, "cancels": cancels}


BUILDERS = {
    "szse-trade": build_szse_trades,
    "szse-order": build_szse_orders,
    "sse-trade": build_sse_trades,
    "sse-order": build_sse_orders,
    "sse-tick": build_sse_tick,
}


@nb.njit(cache=True)
def _count_reordered(group: np.ndarray, seq: np.ndarray) -> int:
    """Rows whose seq is below an earlier row's seq of the same group (input order)."""
    n = group.shape[0]
    count = 0
    best = np.int64(-(2**62))
    for i in range(n):
        if i == 0 or group[i] != group[i - 1]:
            best = seq[i]
            continue
        if seq[i] < best:
            count += 1
        else:
            best = seq[i]
    return count


def _drop(rows: Rows, keep: np.ndarray) -> Rows:
    return rows if keep.all() else rows.take(np.flatnonzero(keep))


def apply_rules(table: str, rows: Rows, cfg: IngestConfig, report: ValidationReport) -> Rows:
    """Sessions, non-positive values, ordering and duplicates (see the module docstring)."""
    if rows.n == 0:
        return rows
    check_seq(table, rows)
    v = rows.values
    pol = cfg.policies
    ok = _in_windows(v["ts"], session_windows(table, cfg.session_grace_s))
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        if pol.outside_session == "error":
            raise rows.error(i, "ts", f"{table[:-1]} stamped {clock(v['ts'][i])}, outside the "
                             "trading sessions")
        report.add("outside_session", int((~ok).sum()))
        report.details.setdefault("outside_session_first", f"{rows.files[v['file'][i]]} row "
                                  f"{v['row'][i]}")
        if pol.outside_session == "drop":
            rows = _drop(rows, ok)
            v = rows.values
    if table == "trades":
        bad = ~(v["price"] > 0) | (v["volume"] <= 0)
    elif table == "orders":
        bad = (v["volume"] <= 0) | ((v["order_type"] == ORDER_TYPE_LIMIT) & ~(v["price"] > 0))
    else:
        bad = v["volume"] <= 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if pol.nonpositive == "error":
            field = "volume" if v["volume"][i] <= 0 else "price"
            raise rows.error(i, field, f"{field} {v[field][i]} is not positive in a "
                             f"{table[:-1]} (policies.nonpositive = 'drop' drops such rows)")
        report.add("nonpositive_price_or_volume", int(bad.sum()))
        rows = _drop(rows, ~bad)
        v = rows.values
    if table == "trades":
        check_trades(rows)
    # Stock-days as contiguous groups, input order kept within a group.
    group_order = np.lexsort((v["symbol"], v["date"]))
    g = rows.take(group_order)
    gv = g.values
    gid = np.cumsum(np.r_[True, (gv["date"][1:] != gv["date"][:-1])
                          | (gv["symbol"][1:] != gv["symbol"][:-1])]).astype(np.int64)
    report.add("rows_reordered", _count_reordered(gid, gv["seq"]))
    order = np.lexsort((gv["seq"], gid))  # stable: equal seqs keep their input order
    s = g.take(order)
    sv = s.values
    same = np.r_[False, (sv["date"][1:] == sv["date"][:-1])
                 & (sv["symbol"][1:] == sv["symbol"][:-1]) & (sv["seq"][1:] == sv["seq"][:-1])]
    if same.any():
        dup = np.flatnonzero(same)
        for c in TICK_COLUMNS[table]:
            a = sv[c]
            differs = a[dup] != a[dup - 1]
            if a.dtype.kind == "f":
                differs &= ~(np.isnan(a[dup]) & np.isnan(a[dup - 1]))
            if differs.any():
                j = int(dup[np.flatnonzero(differs)[0]])
                prev = f"{s.files[sv['file'][j - 1]]} row {sv['row'][j - 1]}"
                shown = ((clock(sv[c][j]), clock(sv[c][j - 1])) if c == "ts"
                         else (sv[c][j], sv[c][j - 1]))
                raise s.error(j, c, f"sequence number {sv['seq'][j]} repeats {prev} with a "
                              f"different {c} ({shown[0]} vs {shown[1]}): corrupt input")
        report.add("duplicates_dropped", int(same.sum()))
        s = s.take(np.flatnonzero(~same))
    return s


def check_unknown_ids(trades_sym: np.ndarray, buy: np.ndarray, sell: np.ndarray,
                      order_sym: np.ndarray, order_id: np.ndarray) -> tuple[int, int]:
    """Trades of one day whose (symbol, order id) appear among the day's orders.

    Returns ``(neither, one_side)``: trades referencing no known order at all, and trades with
    exactly one unknown side (normal on SSE, where orders filled on arrival are never published).
    """
    if len(order_id) == 0:
        return len(buy), 0
    big = np.int64(1) << 40
    keys = np.unique(order_sym.astype(np.int64) * big + order_id)
    kb = np.isin(trades_sym.astype(np.int64) * big + buy, keys)
    ks = np.isin(trades_sym.astype(np.int64) * big + sell, keys)
    return int((~kb & ~ks).sum()), int((kb ^ ks).sum())
