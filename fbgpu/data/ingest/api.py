"""``ingest()``: vendor files -> validated canonical partitions, all-or-nothing.

An ingest runs in three phases so that bad input never damages the store:

1. **read and validate** every input into memory (compact parsed columns), building the
   canonical rows of every table and date it touches; any fatal rule raises :class:`IngestError`;
2. **stage** the partitions to write: new rows merged with the rows of other symbols already in
   the store (or replacing whole partitions with ``replace``), derived minute/daily bars, and
   the cross-table checks (unknown order ids, limit band, security master); an existing partition
   whose schema differs from the canonical one is fatal;
3. **commit**: each partition is written atomically by :meth:`Store.write` (tick tables first,
   then minute, then daily), then the validation report.

Until phase 3 nothing is written, so every error leaves the store byte-for-byte as it was.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fbgpu.data.bars import minute_bars_from_trades
from fbgpu.data.ingest.calendar_cn import not_a_trading_day, trading_days_between
from fbgpu.data.ingest.errors import IngestError, MappingError, ValidationReport
from fbgpu.data.ingest.hints import with_format_hint
from fbgpu.data.ingest.invariants import check_bars, check_int64, check_price_band
from fbgpu.data.ingest.mapping import IngestConfig, load_config, resolve_format
from fbgpu.data.ingest.reader import Rows, collect, expand_inputs
from fbgpu.data.ingest.reference import (
    collect_index_weights,
    duplicate_weight_check,
    index_weight_tables,
    securities_table,
    security_names_table,
)
from fbgpu.data.ingest.ticks import (
    BUILDERS,
    TICK_COLUMNS,
    apply_rules,
    check_unknown_ids,
    count_side_unknown,
)
from fbgpu.data.ingest.values import is_stock
from fbgpu.data.ingest.vendor_bars import (
    Master,
    MinuteBars,
    PrevDay,
    complete_daily,
    daily_arrays,
    daily_table,
    fold_vendor_minutes,
    minute_table,
    suspended_arrays,
)
from fbgpu.data.schemas import MINUTES_PER_DAY, SCHEMAS
from fbgpu.data.store import Store, StoreError, atomic_write_bytes, config_hash
from fbgpu.progress import track

logger = logging.getLogger(__name__)
EPOCH = dt.date(1970, 1, 1)
REPORT_DIR = "ingest_reports"
#: Tables in commit order: inputs before what is derived from them.
COMMIT_ORDER = ("securities", "security_names", "index_weights", "trades", "orders", "cancels",
                "minute", "daily")


def _day(days: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(days))


@dataclass
class Staged:
    """A partition to write: ``rows`` replace the rows of ``drop_symbols`` (all rows when None)."""

    rows: pa.Table
    drop_symbols: set[str] | None
    derived_symbols: set[str] | None = None  # minute/daily: symbols whose rows are derived
    inputs: dict[str, str] = field(default_factory=dict)


class Staging:
    """Partitions to write, and the store as it will look after the write (for cross-checks)."""

    def __init__(self, store: Store, cfg: IngestConfig, report: ValidationReport) -> None:
        self.store, self.cfg, self.report = store, cfg, report
        self.parts: dict[tuple[str, dt.date | None], Staged] = {}

    def stage(self, table: str, date: dt.date | None, rows: pa.Table,
              drop_symbols: set[str] | None, derived_symbols: set[str] | None = None) -> None:
        key = (table, date)
        if key in self.parts:  # a second stage for the same partition merges into the first
            prev = self.parts[key]
            keep = prev.rows.filter(pc.invert(pc.is_in(
                prev.rows.column("symbol").cast(pa.string()),
                pa.array(sorted(_symbols(rows)), pa.string()))))
            rows = pa.concat_tables([_plain(keep), _plain(rows)])
            drop_symbols = (None if prev.drop_symbols is None or drop_symbols is None
                            else prev.drop_symbols | drop_symbols)
            if derived_symbols is not None or prev.derived_symbols is not None:
                derived_symbols = (prev.derived_symbols or set()) | (derived_symbols or set())
        self.parts[key] = Staged(rows, drop_symbols, derived_symbols)

    def existing(self, table: str, date: dt.date | None) -> pa.Table | None:
        if not self.store.has(table, date):
            return None
        _check_schema(self.store, table, date)
        return _plain(self.store.read(table, date))

    def existing_derived(self, table: str, date: dt.date) -> set[str]:
        m = self.store.manifest(table, date)
        return set(m.extra.get("derived_symbols", [])) if m is not None else set()

    def final(self, table: str, date: dt.date | None) -> pa.Table | None:
        """The partition as it will be after the commit (None when it will not exist)."""
        st = self.parts.get((table, date))
        old = self.existing(table, date) if (st is None or st.drop_symbols is not None) else None
        if st is None:
            return old
        if old is None or st.drop_symbols is None:
            return _plain(st.rows)
        keep = old.filter(pc.invert(pc.is_in(old.column("symbol"),
                                             pa.array(sorted(st.drop_symbols), pa.string()))))
        return pa.concat_tables([keep, _plain(st.rows)])

    def final_derived(self, table: str, date: dt.date) -> set[str]:
        st = self.parts.get((table, date))
        old = self.existing_derived(table, date)
        if st is None:
            return old
        kept = old - (st.drop_symbols or set()) if st.drop_symbols is not None else set()
        return kept | (st.derived_symbols or set())

    def daily_dates(self) -> list[dt.date]:
        staged = {d for (t, d) in self.parts if t == "daily" and d is not None}
        return sorted(set(self.store.dates("daily")) | staged)

    def prev_daily(self, date: dt.date) -> tuple[dt.date | None, dict[str, PrevDay]]:
        """The latest daily partition before ``date`` (store or staged): what is known at T."""
        earlier = [d for d in self.daily_dates() if d < date]
        if not earlier:
            return None, {}
        d = earlier[-1]
        t = self.final("daily", d)
        if t is None:
            return d, {}
        syms = t.column("symbol").to_pylist()
        close = t.column("close").to_numpy(zero_copy_only=False)
        adj = t.column("adj_factor").to_numpy(zero_copy_only=False)
        st = t.column("st").to_pylist()
        return d, {s: PrevDay(float(c), float(a), None if x is None else bool(x))
                   for s, c, a, x in zip(syms, close, adj, st, strict=True)}

    def pre_close(self, date: dt.date) -> dict[str, PrevDay]:
        """Per symbol, the close known before ``date`` opens: the day's own ``pre_close`` when a
        daily row for ``date`` states one (vendor daily bars), else the previous daily close."""
        _, prev = self.prev_daily(date)
        out = dict(prev)
        t = self.final("daily", date)
        if t is not None:
            for s_, pc_ in zip(t.column("symbol").to_pylist(),
                               t.column("pre_close").to_numpy(zero_copy_only=False),
                               strict=True):
                if np.isfinite(pc_):
                    base = out.get(s_, PrevDay())
                    out[s_] = PrevDay(float(pc_), base.adj_factor, base.st)
        return out

    def master(self) -> Master:
        t = self.final("securities", None)
        m = Master()
        if t is None:
            return m
        for r in t.to_pylist():
            s = r["symbol"]
            m.name[s] = r["name"] or ""
            if r["industry"]:
                m.industry[s] = r["industry"]
            if r["float_shares"] is not None and np.isfinite(r["float_shares"]):
                m.float_shares[s] = r["float_shares"]
            if r["list_date"]:
                m.list_date[s] = r["list_date"]
            if r["delist_date"]:
                m.delist_date[s] = r["delist_date"]
        names = self.final("security_names", None)
        if names is not None:  # point-in-time names: ST on a date from the name then
            for r in names.to_pylist():
                m.name_history.setdefault(r["symbol"], []).append((r["start_date"], r["name"]))
            for hist in m.name_history.values():
                hist.sort(key=lambda x: (x[0] is not None, x[0] or dt.date.min))
        return m

    def commit(self) -> dict[str, int]:
        """Write every staged partition (merged with the kept rows of the store)."""
        written: dict[str, int] = {}
        chash = config_hash(self.cfg.model_dump(mode="json"))
        shas: dict[str, str] = {}
        for table in COMMIT_ORDER:
            for t, d in sorted(self.parts, key=lambda k: str(k[1])):
                if t != table:
                    continue
                data = self.final(t, d)
                assert data is not None
                extra: dict[str, Any] = {"ingest_format": self.report.format}
                inputs = {}
                if t in ("minute", "daily"):
                    derived = sorted(self.final_derived(t, d))  # type: ignore[arg-type]
                    extra["derived_symbols"] = derived
                    src = "trades" if t == "minute" else "minute"
                    key = self.store.input_key(src, d)
                    if derived and key in shas:
                        inputs[key] = shas[key]
                man = self.store.write(t, d, data, config_hash_=chash, inputs=inputs,
                                       extra=extra)
                key = self.store.input_key(t, d)
                shas[key] = man.sha256
                written[key] = man.rows
        return written


def _plain(t: pa.Table) -> pa.Table:
    """Dictionary columns as plain strings (so tables from different sources concatenate)."""
    cols = []
    for c in t.columns:
        cols.append(c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c)
    names = t.column_names
    return pa.table(dict(zip(names, cols, strict=True)))


def _symbols(t: pa.Table) -> set[str]:
    return set(pc.unique(t.column("symbol").cast(pa.string())).to_pylist())


def _check_schema(store: Store, table: str, date: dt.date | None) -> None:
    """An existing partition must have the canonical schema, or the ingest stops."""
    path = store.partition_path(table, date)
    try:
        have = store.read_schema(table, date)  # either on-disk format
    except StoreError as e:
        raise IngestError(path, None, None, f"existing partition is unreadable: {e}") from e
    want = SCHEMAS[table]
    for f in want:
        if f.name not in have.names:
            raise IngestError(path, None, f.name, "existing partition lacks this canonical "
                              "column (schema mismatch); move it away or re-create the store")
        if have.field(f.name).type != f.type:
            raise IngestError(path, None, f.name,
                              f"existing partition stores {have.field(f.name).type}, canonical "
                              f"is {f.type} (schema mismatch)")
    extra = [n for n in have.names if n not in want.names]
    if extra:
        raise IngestError(path, None, extra[0], "existing partition has a column the canonical "
                          "schema lacks (schema mismatch)")


def _tick_table(table: str, rows: Rows, mask: np.ndarray) -> pa.Table:
    v = rows.values
    codes = v["symbol"][mask]
    uniq, inv = np.unique(codes, return_inverse=True)
    names = [rows.symbols[int(u)] for u in uniq]
    days = v["date"][mask]
    cols: dict[str, Any] = {
        "date": pa.array(days.astype(np.int32)).cast(pa.date32()),
        "symbol": pa.array(np.array(names, dtype=object)[inv] if len(inv) else [], pa.string()),
    }
    schema = SCHEMAS[table]
    for c in TICK_COLUMNS[table]:
        cols[c] = pa.array(v[c][mask]).cast(schema.field(c).type)
    return pa.table(cols)


def _minute_from_table(t: pa.Table, symbols: list[str]) -> MinuteBars:
    """Dense bars of ``symbols`` from a canonical minute table."""
    t = t.filter(pc.is_in(t.column("symbol"), pa.array(symbols, pa.string())))
    t = t.sort_by([("symbol", "ascending"), ("minute", "ascending")])
    syms = t.column("symbol").to_pylist()[::MINUTES_PER_DAY]
    S = len(syms)
    fields: dict[str, np.ndarray | None] = {}
    for f in ("open", "high", "low", "close", "volume", "amount", "num_trades"):
        col = t.column(f)
        if f == "num_trades" and col.null_count:
            fields[f] = None
            continue
        fields[f] = col.to_numpy().reshape(S, MINUTES_PER_DAY)
    return MinuteBars(syms, fields)


def _derive_minutes(trades: pa.Table, symbols: list[str],
                    prev: dict[str, PrevDay]) -> MinuteBars:
    t = trades.filter(pc.is_in(trades.column("symbol"), pa.array(symbols, pa.string())))
    t = t.sort_by([("symbol", "ascending"), ("seq", "ascending")])
    sym = t.column("symbol").to_numpy(zero_copy_only=False)
    names, starts = np.unique(sym, return_index=True)
    offsets = np.r_[np.sort(starts), len(sym)].astype(np.int64)
    names = list(sym[np.sort(starts)]) if len(sym) else []
    pre = np.array([prev.get(s, PrevDay()).close for s in names])
    bars = minute_bars_from_trades(
        offsets, t.column("ts").to_numpy(), t.column("price").to_numpy(),
        t.column("volume").to_numpy(), t.column("amount").to_numpy(), pre)
    return MinuteBars(names, bars)  # type: ignore[arg-type]


def _compare_minutes(derived: MinuteBars, vendor: MinuteBars,
                     report: ValidationReport, date: dt.date | None = None) -> None:
    """Record per symbol how vendor bars differ from bars derived from the ingested trades."""
    common = sorted(set(derived.symbols) & set(vendor.symbols))
    if not common:
        return
    a, b = derived.select(common), vendor.select(common)
    diffs = report.details.setdefault("minute_vs_trades", {})
    total = 0
    for i, s in enumerate(common):
        bad = np.zeros(MINUTES_PER_DAY, dtype=bool)
        for f in ("open", "high", "low", "close"):
            bad |= ~np.isclose(a.fields[f][i], b.fields[f][i], rtol=0, atol=1e-6)  # type: ignore[index]
        bad |= a.fields["volume"][i] != b.fields["volume"][i]  # type: ignore[index]
        bad |= ~np.isclose(a.fields["amount"][i], b.fields["amount"][i],  # type: ignore[index]
                           rtol=1e-6, atol=0.01)
        if b.fields["num_trades"] is not None:
            bad |= a.fields["num_trades"][i] != b.fields["num_trades"][i]  # type: ignore[index]
        n = int(bad.sum())
        total += n
        diffs[f"{date}/{s}" if date else s] = {
            "bars_differing": n,
            "volume_trades": int(a.fields["volume"][i].sum()),  # type: ignore[index]
            "volume_vendor": int(b.fields["volume"][i].sum()),  # type: ignore[index]
            "max_abs_close_diff": float(np.nanmax(np.abs(
                a.fields["close"][i] - b.fields["close"][i]))),  # type: ignore[index]
            "first_minutes": [int(k) for k in np.flatnonzero(bad)[:10]],
        }
    report.add("minute_bars_differing_from_trades", total)


class Ingest:
    """One ingest call (see :func:`ingest`)."""

    def __init__(self, store: Store, fmt: str, cfg: IngestConfig, date: dt.date | None,
                 report: ValidationReport) -> None:
        self.store, self.fmt, self.cfg, self.date, self.report = store, fmt, cfg, date, report
        self.spec = resolve_format(fmt, cfg)
        self.stage = Staging(store, cfg, report)
        self._master: Master | None = None

    @property
    def master(self) -> Master:
        if self._master is None:
            self._master = self.stage.master()
        return self._master

    def drop_for(self, symbols: set[str]) -> set[str] | None:
        return None if self.cfg.replace else symbols

    # ------------------------------------------------------------------ tick formats
    def ticks(self, rows: Rows) -> None:
        self.report.add("rows_read", rows.n)
        tables = BUILDERS[self.fmt](rows, self.cfg, self.report)
        touched: set[dt.date] = set()
        for table, trows in tables.items():
            trows = apply_rules(table, trows, self.cfg, self.report)
            if table == "trades":
                check_price_band(trows, self.prev_close_of(trows))
                count_side_unknown(trows, self.report)
            self.report.add("rows_written", trows.n)
            days = trows.values["date"]
            for d in np.unique(days):
                t = _tick_table(table, trows, days == d)
                date = _day(d)
                touched.add(date)
                self.stage.stage(table, date, t, self.drop_for(_symbols(t)))
        # Dates where the input had rows but every row of a table was dropped still replace
        # nothing; derived bars follow the trades that were staged.
        for date in sorted(touched):
            trades = self.stage.parts.get(("trades", date))
            if trades is not None and self.cfg.derive_bars:
                self.derive_from_trades(date, _symbols(trades.rows))
            self.check_order_ids(date)

    def prev_close_of(self, rows: Rows) -> np.ndarray:
        """Per row, the symbol's close known before the row's date opens (NaN when unknown)."""
        out = np.full(rows.n, np.nan)
        v = rows.values
        for d in np.unique(v["date"]):
            pre = self.stage.pre_close(_day(d))
            if not pre:
                continue
            m = v["date"] == d
            lut = np.array([pre.get(s, PrevDay()).close if s is not None else np.nan
                            for s in rows.symbols], dtype=np.float64)
            out[m] = lut[v["symbol"][m]]
        return out

    def check_order_ids(self, date: dt.date) -> None:
        trades, orders = self.stage.final("trades", date), self.stage.final("orders", date)
        if trades is None or orders is None:
            return
        new_syms = set()
        for t in ("trades", "orders"):
            st = self.stage.parts.get((t, date))
            if st is not None:
                new_syms |= _symbols(st.rows)
        trades = trades.filter(pc.is_in(trades.column("symbol"),
                                        pa.array(sorted(new_syms), pa.string())))
        names = {s: i for i, s in enumerate(sorted(_symbols(trades) | _symbols(orders)))}
        tsym = np.array([names[s] for s in trades.column("symbol").to_pylist()], dtype=np.int64)
        osym = np.array([names[s] for s in orders.column("symbol").to_pylist()], dtype=np.int64)
        neither, one = check_unknown_ids(
            tsym, trades.column("buy_order_id").to_numpy(),
            trades.column("sell_order_id").to_numpy(), osym,
            orders.column("order_id").to_numpy())
        self.report.add("trades_unknown_order_id", neither)
        det = self.report.details.setdefault("trades_one_side_unknown", {})
        det[date.isoformat()] = one
        if one:
            self.report.note("trades with one unknown order id are normal for SSE (orders filled "
                             "on arrival are never published) and for slices of a day")

    def derive_from_trades(self, date: dt.date, symbols: set[str]) -> None:
        """Minute bars for traded symbols without vendor bars; daily rows where no vendor daily."""
        trades = self.stage.final("trades", date)
        assert trades is not None
        _, prev = self.stage.prev_daily(date)
        old_minute = self.stage.existing("minute", date)
        vendor_syms = (_symbols(old_minute) - self.stage.existing_derived("minute", date)
                       if old_minute is not None else set())
        derived = _derive_minutes(trades, sorted(symbols), self.stage.pre_close(date))
        to_write = sorted(symbols - vendor_syms)
        if vendor_syms & symbols and old_minute is not None:
            _compare_minutes(derived, _minute_from_table(old_minute, sorted(vendor_syms & symbols)),
                             self.report, date)
        if self.cfg.replace:  # trades replaced whole: derived rows of other symbols go too
            drop: set[str] | None = self.stage.existing_derived("minute", date) | set(to_write)
        else:
            drop = set(to_write)
        if to_write:
            bars = derived.select(to_write)
            self.stage.stage("minute", date, minute_table(date, bars), drop, set(to_write))
            self.derive_daily(date, bars, prev)

    def derive_daily(self, date: dt.date, bars: MinuteBars, prev: dict[str, PrevDay]) -> None:
        """Daily rows from minute bars (not over vendor daily rows), plus suspended stocks."""
        old = self.stage.existing("daily", date)
        vendor = (_symbols(old) - self.stage.existing_derived("daily", date)
                  if old is not None else set())
        keep = [s for s in bars.symbols if s not in vendor]
        tables = []
        if keep:
            d = daily_arrays(date, bars.select(keep), prev, self.master)
            self.count_daily_gaps(date, keep, d)
            tables.append(daily_table(date, keep, d))
        # Listed stocks of the previous daily partition without any row today: suspended.
        have = set(bars.symbols) | vendor
        final_old = self.stage.final("daily", date)
        if final_old is not None:
            have |= _symbols(final_old)
        missing = sorted(s for s in prev if s not in have and is_stock(s)
                         and (s not in self.master or self.master.listed(s, date)))
        prev_date, _ = self.stage.prev_daily(date)
        if missing and prev_date is not None:
            gap = trading_days_between(prev_date, date, self.cfg.calendar)
            if gap:  # the store lacks trading days in between: no rows are invented over them
                self.report.add("suspension_fill_skipped", len(missing))
                self.report.note(f"{len(missing)} stock(s) of the daily partition {prev_date} "
                                 f"have no data on {date}, but {gap} trading day(s) in between "
                                 "are not in the store: no suspended rows were added (ingest "
                                 "the days in order)")
                missing = []
        if missing:
            self.report.add("suspended_rows_added", len(missing))
            tables.append(daily_table(date, missing, suspended_arrays(date, missing, prev,
                                                                      self.master)))
        if tables:
            t = pa.concat_tables([_plain(x) for x in tables])
            syms = set(keep) | set(missing)
            self.stage.stage("daily", date, t, syms, syms)

    def count_daily_gaps(self, date: dt.date, symbols: list[str],
                         d: dict[str, np.ndarray]) -> None:
        """Count and warn about daily rows whose vwap or float_cap stays unknown (NaN).

        ``daily_vwap_unknown``: traded rows (volume > 0) without a vwap (no vendor vwap and an
        empty/zero amount): the vwap-based returns and fills are NaN there.
        ``float_cap_unknown``: rows without float shares (vendor or master): size
        neutralisation skips them and the portfolio's size constraint cannot use them.
        """
        st_now = np.asarray(d.get("st_from_current_name", np.zeros(len(symbols), bool)))
        if st_now.any():  # rows with no st column, no name history and no earlier row
            self.report.add("st_from_current_name", int(st_now.sum()))
            self.report.note("ST status inferred from the security master's current name (no st "
                             "column, no name history) and carried forward to later days: not "
                             "point-in-time; ingest a master with a name_start column "
                             "(docs/ingest.md, 'ST and name history')")
        traded = np.asarray(d["volume"]) > 0
        no_vwap = traded & ~np.isfinite(np.asarray(d["vwap"], dtype=np.float64))
        no_cap = ~np.isfinite(np.asarray(d["float_cap"], dtype=np.float64))
        for rule, bad, why in (
            ("daily_vwap_unknown", no_vwap, "traded but without amount or vwap: vwap is NaN"),
            ("float_cap_unknown", no_cap, "without float shares (vendor float_cap/float_shares "
             "or the security master's float_shares): float_cap is NaN, so size neutralisation "
             "and the size constraint do not apply to them"),
        ):
            n = int(bad.sum())
            if n:
                self.report.add(rule, n)
                ex = ", ".join(np.array(symbols, dtype=object)[bad][:3])
                text = f"{n} daily row(s) on {date} {why} (e.g. {ex})"
                self.report.note(text)
                logger.warning(text)

    # ------------------------------------------------------------------ bar formats
    def minute_bars(self, rows: Rows) -> None:
        self.report.add("rows_read", rows.n)
        pre: dict[int, dict[str, float]] = {}
        for d in np.unique(rows.values["date"]):
            pre[int(d)] = {s: p.close for s, p in self.stage.pre_close(_day(d)).items()}
        days = fold_vendor_minutes(rows, self.cfg, self.report, pre)
        for d in sorted(days):
            date = _day(d)
            bars = days[d]
            t = minute_table(date, bars)
            self.report.add("rows_written", t.num_rows)
            syms = set(bars.symbols)
            self.stage.stage("minute", date, t, self.drop_for(syms), set())
            trades = self.stage.final("trades", date)
            _, prev = self.stage.prev_daily(date)
            if trades is not None:
                traded = sorted(syms & _symbols(trades))
                if traded:
                    _compare_minutes(_derive_minutes(trades, traded, self.stage.pre_close(date)),
                                     bars, self.report,
                                     date)
            if self.cfg.derive_bars:
                self.derive_daily(date, bars, prev)

    def daily_bars(self, rows: Rows) -> None:
        self.report.add("rows_read", rows.n)
        v = rows.values
        names = np.array(rows.symbols, dtype=object)[v["symbol"]]
        keep = np.array([n is not None and is_stock(n) for n in names], dtype=bool)
        self.report.add("non_stock_rows_skipped", int((~keep).sum()))
        if (~keep).any():
            ex = sorted({str(n) for n in names[~keep]})[:5]
            self.report.note(f"daily rows of non-stocks skipped (e.g. {', '.join(ex)})")
        check_bars(rows, "daily bar", keep, optional=True)
        for d in np.unique(v["date"][keep]):
            date = _day(d)
            m = keep & (v["date"] == d)
            syms = list(names[m])
            no_close = m & ~np.isfinite(v["close"])
            if no_close.any():
                raise rows.error(int(np.flatnonzero(no_close)[0]), "close",
                                 "a stock's daily row needs a close")
            if len(set(syms)) != len(syms):
                seen: set[str] = set()
                for i in np.flatnonzero(m):
                    if names[i] in seen:
                        raise rows.error(int(i), "symbol", f"{names[i]} has two rows on {date}")
                    seen.add(names[i])
            vol = v["volume"] * self.cfg.volume_multiplier
            check_int64(rows, "volume", np.where(m, vol, 0.0))
            vol = vol[m]
            src = {f: v[f][m] for f in ("open", "high", "low", "close", "pre_close", "amount",
                                        "vwap", "adj_factor", "limit_up", "limit_down",
                                        "float_cap", "float_shares") if f in v}
            src["volume"] = np.where(np.isfinite(vol), np.rint(vol), 0).astype(np.int64)
            for f in ("suspended", "st"):
                if f in v and (v[f][m] != -128).all():
                    src[f] = v[f][m].astype(bool)
            if "industry" in v:
                src["industry"] = v["industry"][m]
            _, prev = self.stage.prev_daily(date)
            arrays = complete_daily(date, syms, src, prev, self.master)
            self.count_daily_gaps(date, syms, arrays)
            t = daily_table(date, syms, arrays)
            self.report.add("rows_written", t.num_rows)
            self.stage.stage("daily", date, t, self.drop_for(set(syms)), set())

    # ------------------------------------------------------------------ reference data
    def index_weights(self, sources: list[Any]) -> None:
        days, syms, w, idx = collect_index_weights(sources, self.spec, self.cfg, self.date,
                                                   self.report)
        for d, t in index_weight_tables(days, syms, w, idx, self.cfg, self.report).items():
            date = _day(d)
            duplicate_weight_check(t, self.report.files[0])
            self.report.add("rows_written", t.num_rows)
            # Weights are replaced per (date, index): other indexes' rows are kept.
            idx_names = set(t.column("index").to_pylist())
            old = self.stage.existing("index_weights", date)
            if old is not None and not self.cfg.replace:
                old = old.filter(pc.invert(pc.is_in(old.column("index"),
                                                    pa.array(sorted(idx_names), pa.string()))))
                t = pa.concat_tables([old, _plain(t)])
            self.stage.stage("index_weights", date, t, None)

    def securities(self, rows: Rows) -> None:
        self.report.add("rows_read", rows.n)
        t = securities_table(rows, self.report)
        self.report.add("rows_written", t.num_rows)
        self.stage.stage("securities", None, t, self.drop_for(_symbols(t)))
        names = security_names_table(rows)
        if names is not None:
            self.stage.stage("security_names", None, names, self.drop_for(_symbols(names)))
        else:
            self.report.note("the security master has no name history (a name_start column): ST "
                             "status of days without an st column is inferred from each stock's "
                             "current name and carried forward, not point-in-time")

    # ------------------------------------------------------------------ cross checks
    def cross_checks(self) -> None:
        """Limit band of staged trades; symbols of the ingested tables absent from the master."""
        master = self.master
        unknown: set[str] = set()
        unknown_rows = 0
        produced = set(self.spec.produces)
        for (table, date), st in self.stage.parts.items():
            if table == "trades" and date is not None:
                self.check_limit_band(date, st.rows)
            if not len(master) or table not in produced or table == "securities":
                continue
            syms = st.rows.column("symbol").cast(pa.string())
            miss = pc.invert(pc.is_in(syms, pa.array(sorted(master.name), pa.string())))
            n = pc.sum(miss).as_py() or 0
            if n:
                unknown |= set(pc.unique(syms.filter(miss)).to_pylist())
                unknown_rows += n
        self.report.add("symbols_not_in_master", len(unknown))
        self.report.add("rows_not_in_master", unknown_rows)
        if unknown:
            self.report.details["symbols_not_in_master"] = sorted(unknown)[:50]
        if not len(master) and self.fmt != "securities":
            self.report.note("no security master in the store: symbols not checked (ingest "
                             "--format securities first)")

    def check_limit_band(self, date: dt.date, trades: pa.Table) -> None:
        daily = self.stage.final("daily", date)
        if daily is None:
            return
        lim = {s: (u, d) for s, u, d in zip(daily.column("symbol").to_pylist(),
                                            daily.column("limit_up").to_pylist(),
                                            daily.column("limit_down").to_pylist(), strict=True)}
        sym = trades.column("symbol").to_pylist()
        up = np.array([lim.get(s, (None, None))[0] for s in sym], dtype=np.float64)
        dn = np.array([lim.get(s, (None, None))[1] for s in sym], dtype=np.float64)
        price = trades.column("price").to_numpy()
        known = np.isfinite(up) & np.isfinite(dn)
        outside = known & ((price > up + 1e-6) | (price < dn - 1e-6))
        self.report.add("outside_limit_band", int(outside.sum()))
        if (~known).any():
            self.report.note("limit band unknown for some stock-days (no previous close in the "
                             "store): not checked")


def _input_digest(paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode())
        base = Path(p.split("!", 1)[0])
        if base.exists():
            st = base.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:10]


def _validate(job: Ingest, sources: list[Any]) -> None:
    """Phase 1 of :func:`ingest`: read, parse and check every input, staging the partitions."""
    fmt, cfg, d, report = job.fmt, job.cfg, job.date, job.report

    def progress(it: Any) -> Any:
        return track(list(it), f"ingest {fmt}")

    def read(**kw: Any) -> Rows:
        rows = collect(sources, job.spec, cfg, d, progress=progress, **kw)
        report.add("rows_filtered_out", rows.filtered)
        return rows

    if fmt in BUILDERS:
        job.ticks(read(one_day=True))
    elif fmt == "minute-bars":
        job.minute_bars(read())
    elif fmt == "daily-bars":
        job.daily_bars(read(lenient_symbols=True))
    elif fmt == "index-weights":
        job.index_weights(sources)
    elif fmt == "securities":
        job.securities(read(lenient_symbols=True, dated=False))


def ingest(
    store: Store | str | os.PathLike[str],
    fmt: str,
    paths: Sequence[str | os.PathLike[str]],
    date: dt.date | str | None = None,
    mapping: IngestConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    index_name: str | None = None,
) -> ValidationReport:
    """Ingest vendor files of one format into the store and return the validation report.

    Args:
        store: the store (or its root directory; created when absent).
        fmt: one of ``sse-order``, ``sse-trade``, ``sse-tick``, ``szse-order``, ``szse-trade``,
            ``minute-bars``, ``daily-bars``, ``index-weights``, ``securities``.
        paths: input files (CSV, ``.gz``, ``.zip``, Parquet) or directories of them; all rows of
            one table and date go to one partition.
        date: the trading date, required when the files carry no date (e.g. SZSE files whose
            timestamps have no date part); rows dated otherwise are an error.
        mapping: an :class:`IngestConfig`, a dict, or a TOML file overriding column names, codes
            and options (see docs/ingest.md).
        index_name: the index of ``index-weights`` files without an index column.

    Returns:
        The :class:`ValidationReport` (also written under ``<store>/ingest_reports/``).

    Raises:
        IngestError: naming file, row and column; the store is left exactly as it was.
    """
    st = store if isinstance(store, Store) else Store(store)
    cfg = load_config(mapping)  # type: ignore[arg-type]
    if index_name is not None:
        cfg = cfg.model_copy(update={"index_name": index_name})
    d = None
    if date is not None:
        if isinstance(date, dt.date):
            d = date
        else:
            try:
                d = dt.date.fromisoformat(str(date))
            except ValueError as e:
                raise MappingError("<arguments>", None, "--date",
                                  f"not a date (YYYY-MM-DD): {date!r}") from e
        why = not_a_trading_day(d, cfg.calendar) if fmt != "securities" else None
        if why is not None:
            raise MappingError("<arguments>", None, "--date",
                              f"{why} (not on the exchange calendar; see calendar in the "
                              "mapping)")
    report = ValidationReport(format=fmt)
    job = Ingest(st, fmt, cfg, d, report)
    sources = expand_inputs(list(paths), cfg.member)
    report.files = [s.label for s in sources]
    try:
        _validate(job, sources)
    except IngestError as e:  # name the likely right format when the file looks like another
        raise with_format_hint(e, sources, fmt, cfg) from e
    for (table, date_), _ in job.stage.parts.items():  # schema check before any write
        if st.has(table, date_):
            _check_schema(st, table, date_)
    job.cross_checks()
    report.dates = sorted({k[1].isoformat() for k in job.stage.parts if k[1] is not None})
    if not job.stage.parts:
        raise IngestError(report.files[0] if report.files else "<inputs>", None, None,
                          "no rows left to write after validation")
    report.tables = job.stage.commit()
    name = f"{fmt}-{report.dates[0] if report.dates else 'static'}"
    if len(report.dates) > 1:
        name += f"-{report.dates[-1]}"
    out = st.root / REPORT_DIR / f"{name}-{_input_digest(report.files)}.json"
    report.path = str(out)
    atomic_write_bytes(out, report.to_json().encode())
    report.log()
    return report
