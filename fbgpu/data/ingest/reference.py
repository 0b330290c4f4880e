"""Reference data: index weights (long or wide), the security master, vendor daily bars.

Index weights come long (``date, symbol, weight[, index]``) or wide (one row per date, one column
per stock, as JoinQuant exports them, with codes such as ``000006.XSHE``); columns that are not
stock codes (e.g. the index ``return``) are skipped and reported. Weights are kept as given (not
renormalised): the per-date sums are recorded in the report, since vendor rows commonly sum to
0.9-1.1 (weights at the last rebalance drifted by prices, constituents without a price). A file in
percent (rows summing to about 100) is divided by 100 under ``weight_unit = "auto"``.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pyarrow as pa

from fbgpu.data.ingest.errors import IngestError, ValidationReport
from fbgpu.data.ingest.mapping import DATE, FormatSpec, IngestConfig, SourceField
from fbgpu.data.ingest.reader import Rows, Source, collect, read_header
from fbgpu.data.ingest.values import is_stock, normalize_symbol
from fbgpu.data.schemas import SECURITIES, SECURITY_NAMES

EPOCH = dt.date(1970, 1, 1)
_CODE_COLUMN = re.compile(r"^\d{6}\.(XSHE|XSHG|XBSE|SZ|SH|SS|BJ)$", re.IGNORECASE)
STOCK_CATEGORIES = frozenset({"stock", "stocks", "e", "equity", "cs", "a", "a股", "股票"})


def _wide_columns(header: list[str]) -> list[str]:
    return [h for h in header if _CODE_COLUMN.match(h.strip())]


def _date_column(header: list[str]) -> str:
    norm = {h.strip().lower(): h for h in header}
    for cand in DATE.candidates:
        if cand.lower() in norm:
            return norm[cand.lower()]
    return header[0]  # wide exports put the date in the (often unnamed) first column


def collect_index_weights(sources: list[Source], spec: FormatSpec, cfg: IngestConfig,
                          date: dt.date | None,
                          report: ValidationReport) -> tuple[np.ndarray, list[str], np.ndarray,
                                                             list[str]]:
    """Weights as (days, symbols, weight, index names per row); long or wide inputs."""
    days_out, sym_out, w_out, idx_out = [], [], [], []
    for src in sources:
        header = read_header(src, cfg)
        codes = _wide_columns(header)
        if len(codes) >= 2:
            date_col = _date_column(header)
            skipped = [h for h in header if h not in codes and h != date_col]
            if skipped:
                report.note(f"{src.label}: wide index weights; columns skipped (not stock codes): "
                            f"{', '.join(skipped[:8])}")
            symbols = [normalize_symbol(c, None, None) for c in codes]
            if len(set(symbols)) != len(symbols):
                dup = next(c for c, s in zip(codes, symbols, strict=True)
                           if symbols.count(s) > 1)
                raise IngestError(src.label, 0, dup, "the same stock appears in two columns")
            fields = (SourceField("date", "date", (date_col,), required=True),
                      *(SourceField(f"w{i}", "float", (c,), required=False)
                        for i, c in enumerate(codes)))
            wspec = FormatSpec("index-weights-wide", fields, None, ("index_weights",), "")
            rows = collect([src], wspec, cfg, date)
            day = rows.values["date"]
            for i, s in enumerate(symbols):
                w = rows.values[f"w{i}"]
                m = np.isfinite(w) & (w != 0)
                if (w[m] < 0).any():
                    j = int(np.flatnonzero(m & (w < 0))[0])
                    raise rows.error(j, f"w{i}", f"negative weight {w[j]}")
                days_out.append(day[m])
                sym_out.extend([s] * int(m.sum()))
                w_out.append(w[m])
            name = cfg.index_name
            if name is None:
                raise IngestError(src.label, None, None, "wide index weights name no index: "
                                  "pass the index name (--index, mapping index_name)")
            idx_out.extend([name] * (len(sym_out) - len(idx_out)))
            report.add("rows_read", rows.n)
        else:
            rows = collect([src], spec, cfg, date, lenient_symbols=True)
            v = rows.values
            if "weight" not in v or "symbol" not in v:
                raise IngestError(src.label, 0, "weight", "index weights need symbol and weight "
                                  "columns (long form) or stock-code columns (wide form)")
            report.add("rows_read", rows.n)
            names = [rows.symbols[int(c)] for c in v["symbol"]]
            keep = np.array([n is not None and is_stock(n) for n in names], dtype=bool)
            report.add("non_stock_rows_skipped", int((~keep).sum()))
            w = v["weight"]
            bad = keep & ~(np.isfinite(w) & (w >= 0))
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise rows.error(j, "weight", f"weight {w[j]} is not a non-negative number")
            idx_names = v.get("index")
            for j in np.flatnonzero(keep):
                name = (idx_names[j] if idx_names is not None and idx_names[j] else
                        cfg.index_name)
                if name is None:
                    raise rows.error(int(j), "index", "no index name: add an index column or "
                                     "pass --index / mapping index_name")
                idx_out.append(name)
            days_out.append(v["date"][keep])
            sym_out.extend(n for n, k in zip(names, keep, strict=True) if k)
            w_out.append(w[keep])
    days = np.concatenate(days_out) if days_out else np.zeros(0, np.int32)
    weight = np.concatenate(w_out) if w_out else np.zeros(0)
    return days, sym_out, weight, idx_out


def index_weight_tables(days: np.ndarray, symbols: list[str], weight: np.ndarray,
                        index: list[str], cfg: IngestConfig,
                        report: ValidationReport) -> dict[int, pa.Table]:
    """Per-date canonical tables; records the per-date weight sums (not renormalised)."""
    sym = np.array(symbols, dtype=object)
    idx_names, idx = np.unique(np.array(index, dtype=object), return_inverse=True)
    order = np.lexsort((idx, days))
    days, sym, weight, idx = days[order], sym[order], weight[order], idx[order]
    # One (date, index) group per run of the sorted keys.
    key_change = np.r_[True, (days[1:] != days[:-1]) | (idx[1:] != idx[:-1])]
    sums = np.add.reduceat(weight, np.flatnonzero(key_change)) if len(weight) else np.zeros(0)
    unit = cfg.weight_unit
    if unit == "auto":
        unit = "percent" if len(sums) and float(np.median(sums)) > 10 else "fraction"
    scale = 0.01 if unit == "percent" else 1.0
    if unit == "percent":
        report.note("index weights read as percent (rows sum to about 100): divided by 100")
    sums = sums * scale
    if len(sums):
        report.details["index_weight_sums"] = {
            "dates": len(sums), "min": float(sums.min()), "max": float(sums.max()),
            "mean": float(sums.mean()), "renormalised": False}
    out: dict[int, pa.Table] = {}
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    ends = np.r_[starts[1:], len(days)]
    for a, b in zip(starts, ends, strict=True):
        n = int(b - a)
        out[int(days[a])] = pa.table({
            "date": pa.array(np.full(n, days[a], dtype=np.int32)).cast(pa.date32()),
            "index": pa.array(list(idx_names[idx[a:b]]), pa.string()),
            "symbol": pa.array(list(sym[a:b]), pa.string()),
            "weight": pa.array(weight[a:b] * scale),
        })
    return out


def duplicate_weight_check(t: pa.Table, label: str) -> None:
    """Two weights for the same (date, index, stock) are a corrupt file."""
    keys = [f"{a}|{b}" for a, b in zip(t.column("index").to_pylist(),
                                      t.column("symbol").to_pylist(), strict=True)]
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        for k in keys:
            if k in seen:
                raise IngestError(label, None, "symbol", f"two weights for {k} on "
                                  f"{t.column('date')[0]}")
            seen.add(k)


def _latest_name_rows(rows: Rows, names: list[str | None], keep: np.ndarray,
                      start: np.ndarray) -> np.ndarray:
    """Of each kept symbol's rows, keep only the one with the latest ``name_start`` (a missing
    start counts as the earliest); two rows with one symbol and one start are an error."""
    best: dict[str, int] = {}
    seen: set[tuple[str, int]] = set()
    for i in np.flatnonzero(keep):
        s, t = names[i], int(start[i])
        assert s is not None
        if (s, t) in seen:
            raise rows.error(int(i), "name_start", f"{s} has two names starting on the same day")
        seen.add((s, t))
        if s not in best or t > int(start[best[s]]):
            best[s] = int(i)
    out = np.zeros(len(names), dtype=bool)
    out[list(best.values())] = True
    return out


def _name_starts(rows: Rows) -> np.ndarray | None:
    """The ``name_start`` days (-1 = since the beginning), or None when no row has one (the
    column is absent or empty: no name history)."""
    start = rows.values.get("name_start")
    return start if start is not None and (np.asarray(start) >= 0).any() else None


def security_names_table(rows: Rows) -> pa.Table | None:
    """The point-in-time name history of a master with a ``name_start`` column (None without).

    One row per (stock, name): the name holds from ``start_date`` (null = since the beginning)
    until the next row's start. ST status on a date is read from the name then.
    """
    v = rows.values
    start = _name_starts(rows)
    if start is None:
        return None
    syms, starts, nms = [], [], []
    name_col = v.get("name")
    for i, c in enumerate(v["symbol"]):
        s = rows.symbols[int(c)]
        if s is None or not is_stock(s):
            continue
        syms.append(s)
        starts.append(None if start[i] < 0 else EPOCH + dt.timedelta(days=int(start[i])))
        nms.append(None if name_col is None else name_col[i])
    return pa.table({"symbol": pa.array(syms, pa.string()),
                     "start_date": pa.array(starts, pa.date32()),
                     "name": pa.array(nms, pa.string())}, schema=SECURITY_NAMES)


def securities_table(rows: Rows, report: ValidationReport) -> pa.Table:
    """The security master: stocks only (by category column when present, else by code)."""
    v = rows.values
    names = [rows.symbols[int(c)] for c in v["symbol"]]
    cat = v.get("category")
    keep = []
    for i, n in enumerate(names):
        if n is None:
            keep.append(False)
        elif cat is not None and cat[i] is not None:
            keep.append(str(cat[i]).strip().lower() in STOCK_CATEGORIES)
        else:
            keep.append(is_stock(n))
    k = np.array(keep, dtype=bool)
    report.add("non_stock_rows_skipped", int((~k).sum()))
    start = _name_starts(rows)
    if start is not None:  # a name history: one row per (symbol, name); keep each one's latest
        k = _latest_name_rows(rows, names, k, start)
        keep = list(k)
    syms = [n for n, kk in zip(names, keep, strict=True) if kk]
    if len(set(syms)) != len(syms):
        seen: set[str] = set()
        for i in np.flatnonzero(k):
            if names[i] in seen:
                raise rows.error(int(i), "symbol", f"{names[i]} appears twice in the master")
            seen.add(names[i])  # type: ignore[arg-type]

    def dates(field: str) -> pa.Array:
        a = v.get(field)
        if a is None:
            return pa.nulls(len(syms), pa.date32())
        a = a[k]
        return pa.array([None if x < 0 else EPOCH + dt.timedelta(days=int(x)) for x in a],
                        pa.date32())

    def strs(field: str) -> pa.Array:
        a = v.get(field)
        return pa.array(list(a[k]) if a is not None else [None] * len(syms), pa.string())

    fs = v.get("float_shares")
    return pa.table({
        "symbol": pa.array(syms, pa.string()), "name": strs("name"), "board": strs("board"),
        "list_date": dates("list_date"), "delist_date": dates("delist_date"),
        "industry": strs("industry"),
        "float_shares": pa.array(fs[k] if fs is not None else np.full(len(syms), np.nan)),
    }, schema=SECURITIES)
