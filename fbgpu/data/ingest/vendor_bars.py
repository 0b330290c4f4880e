"""Minute and daily bars: vendor bar files, bars derived from trades, daily rows and their fills.

Minute bars (vendor files) are mapped to the canonical 240-bar grid of :mod:`fbgpu.data.bars`:
a bar labelled by its end time ``t`` covers ``[t - 1 min, t)`` and goes to bar
``minute_of_ts(t - 1 ns)`` (09:31 -> 0, 11:30 -> 119, 13:01 -> 120, 15:00 -> 239); labelled by its
start it goes to ``minute_of_ts(t)``. Bars landing on the same grid minute (a separate 09:25/09:30
auction bar, a 15:00 closing bar after 14:59) are folded (first open, max high, min low, last
close, summed volume/amount/trades). Grid minutes without a vendor bar are filled as the spec
says: volume 0 and open = high = low = close = the previous close.

Daily rows (derived or vendor) are completed from what the store knows at date ``T`` and nothing
later: ``pre_close`` = the close of the symbol's latest daily row before ``T``; limits from the
pre_close and the board; ``st`` from the previous row or the security master's name; float cap
from the master's float shares; see docs/ingest.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from fbgpu.data.bars import T_1130, T_1300, T_1500, minute_of_ts
from fbgpu.data.ingest.errors import ValidationReport
from fbgpu.data.ingest.invariants import check_bars
from fbgpu.data.ingest.mapping import IngestConfig
from fbgpu.data.ingest.reader import Rows
from fbgpu.data.ingest.ticks import T_0915, _in_windows, whole_shares
from fbgpu.data.ingest.values import clock
from fbgpu.data.schemas import DAILY, MINUTE, MINUTES_PER_DAY

EPOCH = dt.date(1970, 1, 1)
BAR_FIELDS = ("open", "high", "low", "close", "volume", "amount", "num_trades")


def day_of(days: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(days))


@dataclass
class MinuteBars:
    """Dense minute bars of one day: ``fields[name]`` is ``[len(symbols), 240]``.

    ``num_trades`` is ``None`` when the vendor gives no trade counts (stored as nulls).
    """

    symbols: list[str]
    fields: dict[str, np.ndarray | None]

    def select(self, keep: list[str]) -> MinuteBars:
        pos = {s: i for i, s in enumerate(self.symbols)}
        idx = np.array([pos[s] for s in keep], dtype=np.int64)
        return MinuteBars(list(keep), {k: (None if a is None else a[idx])
                                       for k, a in self.fields.items()})


@dataclass
class PrevDay:
    """What the store knows about a symbol from its latest daily row before the date."""

    close: float = np.nan
    adj_factor: float = np.nan
    st: bool | None = None


@dataclass
class Master:
    """Security master facts used to complete daily rows (empty when no master was ingested)."""

    name: dict[str, str] = field(default_factory=dict)
    industry: dict[str, str] = field(default_factory=dict)
    float_shares: dict[str, float] = field(default_factory=dict)
    list_date: dict[str, dt.date] = field(default_factory=dict)
    delist_date: dict[str, dt.date] = field(default_factory=dict)
    #: Point-in-time names (the ``security_names`` table): per symbol, ``(start, name)`` sorted
    #: by start (None = since the beginning). Empty when the input had no name history.
    name_history: dict[str, list[tuple[dt.date | None, str]]] = field(default_factory=dict)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.name

    def __len__(self) -> int:
        return len(self.name)

    def listed(self, symbol: str, date: dt.date) -> bool:
        lo, hi = self.list_date.get(symbol), self.delist_date.get(symbol)
        return (lo is None or lo <= date) and (hi is None or date < hi)

    def st_by_name(self, symbol: str) -> bool:
        """ST by the symbol's *current* name (:func:`is_st_name`); not point-in-time."""
        return is_st_name(self.name.get(symbol) or "")

    def name_on(self, symbol: str, date: dt.date) -> str | None:
        """The name that held on ``date`` by the name history; None without one (or before its
        first dated entry)."""
        name = None
        for start, n in self.name_history.get(symbol, ()):
            if start is not None and start > date:
                break
            name = n
        return name

    def st_on(self, symbol: str, date: dt.date) -> bool | None:
        """ST on ``date`` by the name that held then (point-in-time); None without a history."""
        n = self.name_on(symbol, date)
        return None if n is None else is_st_name(n)


def is_st_name(name: str) -> bool:
    """ST by name: ``ST``/``*ST`` (anywhere, any case) or a ``退`` delisting-arrangement suffix."""
    return "ST" in name.upper() or name.endswith("退")


def limit_pct(symbol: str, st: bool, date: dt.date) -> float:
    """Daily price-limit fraction: STAR 688/689 and ChiNext 300/301 (from 2020-08-24) 20%,
    Beijing 30%, ST main-board 5%, otherwise 10%."""
    code, _, exch = symbol.partition(".")
    if exch == "BJ":
        return 0.30
    if code.startswith(("688", "689")):
        return 0.20
    if code.startswith(("300", "301")) and date >= dt.date(2020, 8, 24):
        return 0.20
    return 0.05 if st else 0.10


def round_price(x: np.ndarray) -> np.ndarray:
    """Round half up to 0.01 CNY as the exchanges do (guarding binary representation)."""
    return np.floor(x * 100.0 + 0.5 + 1e-7) / 100.0


def limit_prices(symbols: list[str], pre_close: np.ndarray, st: np.ndarray,
                 date: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """``(limit_up, limit_down)`` from the pre-close; NaN where the pre-close is unknown."""
    pct = np.array([limit_pct(s, bool(t), date) for s, t in zip(symbols, st, strict=True)])
    return round_price(pre_close * (1 + pct)), round_price(pre_close * (1 - pct))


def fold_vendor_minutes(rows: Rows, cfg: IngestConfig, report: ValidationReport,
                        pre_close_of: dict[int, dict[str, float]] | None = None,
                        ) -> dict[int, MinuteBars]:
    """Vendor minute bars to dense 240-bar days, per date (days since 1970)."""
    v = rows.values
    volume = whole_shares(rows, "volume", v["volume"], cfg.volume_multiplier)
    ts = v["time"]
    ok = _in_windows(ts, [(T_0915, T_1130 + round(cfg.session_grace_s * 1e9)),
                          (T_1300, T_1500 + round(cfg.session_grace_s * 1e9))])
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        if cfg.policies.outside_session == "error":
            raise rows.error(i, "time", f"bar time {clock(ts[i])} outside the trading "
                             "sessions")
        report.add("outside_session", int((~ok).sum()))
        if cfg.policies.outside_session == "drop":
            keep = np.flatnonzero(ok)
            rows = rows.take(keep)
            v, volume, ts = rows.values, volume[keep], ts[keep]
    check_bars(rows, "minute bar")
    k = minute_of_ts(ts - 1 if cfg.bar_label == "end" else ts).astype(np.int64)
    order = np.lexsort((ts, v["symbol"], v["date"]))
    report.add("rows_reordered", int((np.diff(order) < 0).sum()))
    date, sym, ts, k, volume = v["date"][order], v["symbol"][order], ts[order], k[order], \
        volume[order]
    vals = {f: v[f][order] for f in ("open", "high", "low", "close", "amount")}
    nt = v["num_trades"][order] if "num_trades" in v else np.full(len(order), -1)
    same = np.r_[False, (date[1:] == date[:-1]) & (sym[1:] == sym[:-1]) & (ts[1:] == ts[:-1])]
    if same.any():
        dup = np.flatnonzero(same)
        for name, a in (*vals.items(), ("volume", volume)):
            differs = (a[dup] != a[dup - 1]) & ~(np.isnan(a[dup].astype(float))
                                                 & np.isnan(a[dup - 1].astype(float)))
            if differs.any():
                j = int(order[dup[np.flatnonzero(differs)[0]]])
                raise rows.error(j, name, "a second bar for the same symbol and time with a "
                                 "different value: corrupt input")
        report.add("duplicates_dropped", int(same.sum()))
        keep = ~same
        date, sym, ts, k, volume, nt = (a[keep] for a in (date, sym, ts, k, volume, nt))
        vals = {f: a[keep] for f, a in vals.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        vw = vals["amount"] / volume
    odd = (volume > 0) & ((vw < vals["low"] * 0.999) | (vw > vals["high"] * 1.001))
    report.add("bars_vwap_outside_range", int(odd.sum()))
    if odd.any():
        report.note("some bars have amount/volume outside [low, high]: is the volume in lots? "
                    "(set volume_multiplier = 100)")
    out: dict[int, MinuteBars] = {}
    for d in np.unique(date):
        m = date == d
        s_codes = sym[m]
        uniq, g = np.unique(s_codes, return_inverse=True)
        names = [rows.symbols[int(u)] for u in uniq]
        pcs = pre_close_of.get(int(d), {}) if pre_close_of else {}
        out[int(d)] = _dense(names, g, k[m], {f: a[m] for f, a in vals.items()}, volume[m],
                             nt[m], pcs)
    return out


def _dense(names: list[str], g: np.ndarray, k: np.ndarray, vals: dict[str, np.ndarray],
           volume: np.ndarray, nt: np.ndarray, pre_close: dict[str, float]) -> MinuteBars:
    S = len(names)
    flat = g * MINUTES_PER_DAY + k
    size = S * MINUTES_PER_DAY
    # Rows are sorted by time within a symbol: the first row of a cell is its open, the last its
    # close.
    uniq, first = np.unique(flat, return_index=True)
    _, last_rev = np.unique(flat[::-1], return_index=True)
    last = len(flat) - 1 - last_rev
    o = np.full(size, np.nan)
    c = np.full(size, np.nan)
    o[uniq] = vals["open"][first]
    c[uniq] = vals["close"][last]
    h = np.full(size, -np.inf)
    lo = np.full(size, np.inf)
    np.maximum.at(h, flat, vals["high"])
    np.minimum.at(lo, flat, vals["low"])
    vol = np.bincount(flat, weights=volume, minlength=size).round().astype(np.int64)
    amt = np.bincount(flat, weights=vals["amount"], minlength=size)
    have = np.zeros(size, dtype=bool)
    have[uniq] = True
    if (nt >= 0).all():
        num = np.bincount(flat, weights=nt, minlength=size).astype(np.int32)
    else:
        num = None
    shape = (S, MINUTES_PER_DAY)
    o, h, lo, c, have = (a.reshape(shape) for a in (o, h, lo, c, have))
    # Fill absent minutes with the previous close (the pre-close, else the first open, before
    # the first bar).
    first_bar = np.argmax(have, axis=1)
    start = np.array([pre_close.get(n, np.nan) for n in names])
    start = np.where(np.isfinite(start), start, o[np.arange(S), first_bar])
    idx = np.where(have, np.arange(MINUTES_PER_DAY)[None, :], -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    prev_close = np.where(idx >= 0, np.take_along_axis(c, np.maximum(idx, 0), axis=1),
                          start[:, None])
    fill = ~have
    for a in (o, h, lo, c):
        a[fill] = prev_close[fill]
    fields: dict[str, np.ndarray | None] = {
        "open": o, "high": h, "low": lo, "close": c, "volume": vol.reshape(shape),
        "amount": amt.reshape(shape), "num_trades": None if num is None else num.reshape(shape)}
    return MinuteBars(names, fields)


def minute_table(date: dt.date, bars: MinuteBars) -> pa.Table:
    """Canonical ``minute`` rows of one day from dense bars."""
    S = len(bars.symbols)
    n = S * MINUTES_PER_DAY
    cols: dict[str, pa.Array] = {
        "date": pa.array(np.full(n, (date - EPOCH).days, dtype=np.int32)).cast(pa.date32()),
        "symbol": pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(np.arange(S, dtype=np.int32), MINUTES_PER_DAY)),
            pa.array(bars.symbols, pa.string())),
        "minute": pa.array(np.tile(np.arange(MINUTES_PER_DAY, dtype=np.int16), S)),
    }
    for f in BAR_FIELDS:
        a = bars.fields[f]
        typ = MINUTE.field(f).type
        cols[f] = pa.nulls(n, typ) if a is None else pa.array(a.reshape(-1)).cast(typ)
    return pa.table(cols, schema=MINUTE)


def daily_arrays(date: dt.date, bars: MinuteBars, prev: dict[str, PrevDay],
                 master: Master) -> dict[str, np.ndarray]:
    """Daily rows (one per symbol of ``bars``) derived from a day's minute bars.

    OHLC/volume/amount/vwap as in :func:`fbgpu.data.bars.daily_from_minute`, counting a minute
    as traded when it has trades (or volume, when the vendor gives no trade counts).
    """
    from fbgpu.data.bars import daily_from_minute

    f = bars.fields
    traded = f["num_trades"] if f["num_trades"] is not None else (f["volume"] > 0).astype(
        np.int32)
    d = daily_from_minute({**f, "num_trades": traded})  # type: ignore[dict-item]
    return complete_daily(date, bars.symbols, d, prev, master)


def complete_daily(date: dt.date, symbols: list[str], d: dict[str, np.ndarray],
                   prev: dict[str, PrevDay], master: Master) -> dict[str, np.ndarray]:
    """Fill the daily fields a bar source may lack, from what is known at ``date``.

    ``d`` holds at least open/high/low/close/volume/amount; any of pre_close, vwap, adj_factor,
    limit_up, limit_down, suspended, st, float_cap, float_shares, industry it lacks (or holds as
    NaN/None) are filled: pre_close from the previous daily row, vwap = amount / volume,
    adj_factor from the previous row (1.0 for a symbol's first row), limits from pre_close and the
    board, suspended = no volume, st from the name that held on ``date`` (the master's name
    history, point-in-time), else the previous row, else the master's current name (counted:
    the returned ``st_from_current_name`` marks those rows), float_cap = float shares (vendor,
    else master) x close, industry from the master.
    """
    S = len(symbols)
    out = dict(d)
    pv = [prev.get(s, PrevDay()) for s in symbols]

    def col(name: str, default: float = np.nan) -> np.ndarray:
        a = out.get(name)
        return np.full(S, default) if a is None else np.asarray(a, dtype=np.float64)

    prev_close = np.array([p.close for p in pv])
    pre_close = col("pre_close")
    pre_close = np.where(np.isfinite(pre_close), pre_close, prev_close)
    volume = np.asarray(out["volume"]).astype(np.int64)
    amount = col("amount", 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(volume > 0, amount / np.maximum(volume, 1), np.nan)
    given_vwap = col("vwap")
    vwap = np.where(np.isfinite(given_vwap), given_vwap, vwap)
    prev_adj = np.array([p.adj_factor if np.isfinite(p.adj_factor) else 1.0 for p in pv])
    adj = col("adj_factor")
    adj = np.where(np.isfinite(adj), adj, prev_adj)
    st_in = out.get("st")
    st_now = np.zeros(S, dtype=bool)  # rows whose ST came from the current name
    if st_in is None:
        # point-in-time name history, else the previous row, else the current name
        st_list = []
        for i, (s, p) in enumerate(zip(symbols, pv, strict=True)):
            hist = master.st_on(s, date)
            if hist is None and p.st is None:
                st_now[i] = True
            st_list.append(hist if hist is not None else
                           p.st if p.st is not None else master.st_by_name(s))
        st = np.array(st_list, dtype=bool)
    else:
        st = np.asarray(st_in).astype(bool)
    up, down = limit_prices(symbols, pre_close, st, date)
    up = np.where(np.isfinite(col("limit_up")), col("limit_up"), up)
    down = np.where(np.isfinite(col("limit_down")), col("limit_down"), down)
    susp_in = out.get("suspended")
    suspended = (volume <= 0) if susp_in is None else np.asarray(susp_in).astype(bool)
    close = col("close")
    fshares = col("float_shares")
    mshares = np.array([master.float_shares.get(s, np.nan) for s in symbols])
    fshares = np.where(np.isfinite(fshares), fshares, mshares)
    fcap = col("float_cap")
    fcap = np.where(np.isfinite(fcap), fcap, fshares * close)
    ind_in = out.get("industry")
    industry = np.array([(ind_in[i] if ind_in is not None and ind_in[i] else None)
                         or master.industry.get(s) for i, s in enumerate(symbols)], dtype=object)
    return {"open": col("open"), "high": col("high"), "low": col("low"), "close": close,
            "pre_close": pre_close, "vwap": vwap, "volume": volume, "amount": amount,
            "adj_factor": adj, "limit_up": up, "limit_down": down, "suspended": suspended,
            "st": st, "float_cap": fcap, "industry": industry, "st_from_current_name": st_now}


def suspended_arrays(date: dt.date, symbols: list[str], prev: dict[str, PrevDay],
                     master: Master) -> dict[str, np.ndarray]:
    """Rows for listed stocks without data on ``date``: suspended, prices at the pre-close."""
    pc = np.array([prev[s].close for s in symbols])
    z = np.zeros(len(symbols))
    d = {"open": pc, "high": pc, "low": pc, "close": pc, "pre_close": pc,
         "volume": z.astype(np.int64), "amount": z, "suspended": np.ones(len(symbols), bool)}
    return complete_daily(date, symbols, d, prev, master)


def daily_table(date: dt.date, symbols: list[str], d: dict[str, np.ndarray]) -> pa.Table:
    """Canonical ``daily`` rows of one day."""
    n = len(symbols)
    cols: dict[str, pa.Array] = {
        "date": pa.array(np.full(n, (date - EPOCH).days, dtype=np.int32)).cast(pa.date32()),
        "symbol": pa.array(symbols, pa.string()).dictionary_encode(),
    }
    for f in DAILY.names[2:]:
        typ = DAILY.field(f).type
        a = d[f]
        if f == "industry":
            cols[f] = pa.array(list(a), pa.string()).dictionary_encode()
        else:
            cols[f] = pa.array(np.asarray(a)).cast(typ)
    return pa.table(cols).cast(DAILY)
