"""qlib binary daily data <-> the store (``fbgpu ingest --format qlib``).

qlib layout (``QLIB_DIR``)::

    calendars/day.txt                 one trading date (YYYY-MM-DD) a line
    instruments/<name>.txt            ``SH600000<TAB>start<TAB>end`` a line (optional)
    features/<sh600000>/<field>.day.bin

Each ``.day.bin`` is little-endian float32: the first value is the index into ``day.txt`` of the
first date, then one value per calendar date from there on (NaN = no value).

qlib stores *adjusted* series: ``price_q = price_raw * factor`` and ``volume_q = volume_raw /
factor`` (so ``amount = price * volume`` is unchanged). Ingest un-adjusts them, so the store
holds raw prices, raw share volume and ``adj_factor = factor``:

    price_raw = price_q / factor,   volume_raw = round(volume_q * factor)

Symbols map ``SH600000 -> 600000.SH`` (``SZ`` -> ``.SZ``, ``BJ`` -> ``.BJ``). A date inside a
stock's span (first to last date with a close) whose close is NaN becomes an explicit suspended
row (close = previous raw close, volume 0, amount 0, ``suspended = 1``). Missing ``amount`` is
filled with ``volume_raw * vwap_raw`` (or ``* close_raw`` when vwap is missing too) and missing
``vwap`` with ``amount / volume``; every filled value is WARNED and counted in the report
(``qlib_amount_filled``, ``qlib_vwap_filled``, ``qlib_suspended_rows``).

Real qlib directories differ from qlib's own convention in ways the importer handles explicitly:

* **Volume convention** (``volume = "auto" | "adjusted" | "raw"``). qlib's collectors store
  ``volume_raw / factor``, but some public datasets (e.g. fr220574/Qlib-format-A-share-dataset,
  2026-05 snapshot) store raw shares. ``auto`` measures the elasticity of volume to the factor
  jumps: for every jump ``r = factor[t+1] / factor[t] > 1.3`` with 20 trading days either side,
  ``e = log(median volume after / median volume before) / log(r)``. Adjusted volume is continuous
  across a split (``e ~ 0``); raw volume jumps with it (``e ~ 1``). Median ``e > 0.5`` -> raw.
  Fewer than 5 jumps -> qlib's convention (adjusted), noted. The choice is logged and noted.
* **Suspensions written as flat rows.** Besides NaN closes, real files encode a suspension as a
  row with a close (the previous one carried) and volume 0 (or NaN). Such a row is a suspended
  row as well (same rule as above; counted as ``qlib_zero_volume_suspended``), so the pool and
  the returns never see a "traded" day without trading.
* **Indices** (``SH000xxx``, ``SZ399xxx``) share the features directory with stocks; they are
  skipped and counted (``qlib_indices_skipped``).
* **Symbol and date restriction** (``symbols``, ``start``, ``end``): a universe (e.g. every stock
  ever in an index-weights file) and a date range, so a 5,000-symbol, 16-year directory need not
  be read whole. The suspension and un-adjustment rules are applied on the full span first, then
  rows outside ``[start, end]`` are dropped. Requested stocks without a feature directory (e.g.
  delisted ones missing from the dataset) are WARNED and counted (``qlib_symbols_missing``).

The rows are then written through the ``daily-bars`` format, so every daily-bar validation rule
applies and bad input leaves the store untouched.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from fbgpu.data.ingest.api import ingest
from fbgpu.data.ingest.errors import IngestError, ValidationReport
from fbgpu.data.store import Store, atomic_write_bytes

log = logging.getLogger(__name__)

#: qlib feature file name -> meaning; prices are adjusted, volume is adjusted shares.
PRICE_FIELDS = ("open", "high", "low", "close", "vwap")
EXCHANGES = {"SH": "SH", "SZ": "SZ", "BJ": "BJ"}
#: qlib volume conventions accepted by :func:`qlib_daily_table`.
VOLUME_CONVENTIONS = ("auto", "adjusted", "raw")
#: factor jumps larger than this ratio are used by the ``auto`` volume-convention detector
SPLIT_RATIO = 1.3
#: trading days either side of a factor jump in the detector's medians
SPLIT_WINDOW = 20


def is_index_code(code: str) -> bool:
    """True for qlib index codes that share the features directory with stocks.

    ``SH000xxx`` (SSE indices, e.g. ``SH000001`` = SSE Composite, ``SH000905`` = CSI 500) and
    ``SZ399xxx`` (SZSE indices). A-share stocks never use these prefixes.
    """
    c = code.strip().upper()
    return c.startswith("SH000") or c.startswith("SZ399")


def read_symbol_list(path: str | os.PathLike[str]) -> set[str]:
    """fbgpu symbols named by a file: one code per line (``SH600000``, ``600000.SH``,
    ``600000.XSHG``; the first whitespace/comma-separated token), or a *wide* index-weights CSV
    (its header's stock columns, e.g. ``000006.XSHE``). Tokens that are not stock codes are
    ignored; an empty result is an IngestError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise IngestError(p, None, None, "symbol list file not found")
    lines = p.read_text().splitlines()
    tokens: list[str] = []
    head = lines[0].split(",") if lines else []
    if len(head) > 2:  # a wide CSV: stock codes are the columns
        tokens = head
    else:
        tokens = [ln.replace(",", " ").split()[0] for ln in lines if ln.strip()]
    out: set[str] = set()
    for t in tokens:
        sym = _any_code_to_symbol(t)
        if sym is not None:
            out.add(sym)
    if not out:
        raise IngestError(p, None, None, "no stock code found (expected SH600000, 600000.SH "
                          "or 600000.XSHG, one a line, or a wide weights CSV header)")
    return out


def _any_code_to_symbol(token: str) -> str | None:
    t = token.strip().strip('"').upper()
    num, _, ex = t.partition(".")
    ex = {"XSHG": "SH", "XSHE": "SZ", "BJSE": "BJ"}.get(ex, ex)
    if ex in EXCHANGES and num.isdigit() and len(num) == 6:
        return f"{num}.{ex}"
    try:
        return to_fbgpu_symbol(t)
    except ValueError:
        return None


def volume_elasticity(factor: np.ndarray, volume: np.ndarray) -> list[float]:
    """Elasticities ``log(median v after / median v before) / log(r)`` at the factor jumps.

    ``factor`` and ``volume`` are one stock's aligned series (NaN = no value). A jump at t is
    ``r = factor[t+1] / factor[t] > SPLIT_RATIO`` with ``SPLIT_WINDOW`` days on both sides; the
    medians are over days t-20..t and t+1..t+21 (NaN-aware, positive medians only).
    """
    out: list[float] = []
    with np.errstate(invalid="ignore", divide="ignore"):
        r = factor[1:] / factor[:-1]
    w = SPLIT_WINDOW
    for k in np.flatnonzero(np.nan_to_num(r, nan=0.0) > SPLIT_RATIO):
        if k < w or k + w + 1 >= len(volume):
            continue
        a, b = volume[k - w:k + 1], volume[k + 1:k + w + 2]
        if np.isfinite(a).sum() < w // 2 or np.isfinite(b).sum() < w // 2:
            continue
        ma, mb = float(np.nanmedian(a)), float(np.nanmedian(b))
        if ma > 0 and mb > 0:
            out.append(float(np.log(mb / ma) / np.log(r[k])))
    return out


def detect_volume_convention(elasticities: list[float], min_events: int = 5) -> tuple[str, str]:
    """``("raw" | "adjusted", why)`` from the factor-jump elasticities (median > 0.5 -> raw)."""
    if len(elasticities) < min_events:
        return "adjusted", (f"only {len(elasticities)} factor jumps > {SPLIT_RATIO}: volume taken "
                            "as adjusted (qlib's convention)")
    m = float(np.median(elasticities))
    kind = "raw" if m > 0.5 else "adjusted"
    return kind, (f"volume read as {kind}: median elasticity of volume to {len(elasticities)} "
                  f"factor jumps = {m:.2f} (raw ~1, adjusted ~0)")


def to_fbgpu_symbol(code: str) -> str:
    """``SH600000`` (any case) -> ``600000.SH``; raises ValueError for other shapes."""
    c = code.strip().upper()
    if len(c) < 3 or c[:2] not in EXCHANGES or not c[2:].isdigit():
        raise ValueError(f"not a qlib A-share code (SH/SZ/BJ + digits): {code!r}")
    return f"{c[2:]}.{EXCHANGES[c[:2]]}"


def to_qlib_symbol(symbol: str) -> str:
    """``600000.SH`` -> ``SH600000``."""
    num, _, ex = symbol.partition(".")
    if ex.upper() not in EXCHANGES or not num.isdigit():
        raise ValueError(f"not an fbgpu A-share symbol (digits.SH/SZ/BJ): {symbol!r}")
    return f"{ex.upper()}{num}"


def read_calendar(root: Path) -> list[dt.date]:
    """Dates of ``calendars/day.txt``; IngestError names the file and line when malformed."""
    path = root / "calendars" / "day.txt"
    if not path.is_file():
        raise IngestError(path, None, None, "qlib calendar missing (expected calendars/day.txt)")
    out: list[dt.date] = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        try:
            out.append(dt.date.fromisoformat(s[:10]))
        except ValueError as e:
            raise IngestError(path, i, None, f"not a date (YYYY-MM-DD): {s!r}") from e
        if len(out) > 1 and out[-1] <= out[-2]:
            raise IngestError(path, i, None, "calendar dates must increase")
    if not out:
        raise IngestError(path, None, None, "qlib calendar is empty")
    return out


def read_bin(path: Path, n_calendar: int) -> tuple[int, np.ndarray]:
    """``(start index, float64 values)`` of one ``.day.bin``, checked against the calendar."""
    raw = path.read_bytes()
    if len(raw) < 4 or len(raw) % 4:
        raise IngestError(path, None, None, f"not a qlib float32 bin ({len(raw)} bytes is not a "
                          "positive multiple of 4)")
    a = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    start = a[0]
    if not np.isfinite(start) or start != int(start) or start < 0:
        raise IngestError(path, None, None, f"first value must be the calendar start index, "
                          f"got {start!r}")
    s = int(start)
    if s + len(a) - 1 > n_calendar:
        raise IngestError(path, None, None, f"runs past the calendar: start {s} + "
                          f"{len(a) - 1} values > {n_calendar} calendar dates")
    return s, a[1:]


def _stock_codes(root: Path, feats: Path, instruments: str | None,
                 symbols: Iterable[str] | None, report: ValidationReport | None) -> list[str]:
    codes = sorted(p.name for p in feats.iterdir() if p.is_dir())
    if instruments is not None:
        ipath = root / "instruments" / f"{instruments}.txt"
        if not ipath.is_file():
            raise IngestError(ipath, None, None, "instrument list not found")
        wanted = {ln.split()[0].lower() for ln in ipath.read_text().splitlines() if ln.strip()}
        codes = [c for c in codes if c.lower() in wanted]
    n_idx = sum(is_index_code(c) for c in codes)
    codes = [c for c in codes if not is_index_code(c)]
    if report is not None:
        report.add("qlib_indices_skipped", n_idx)
    if symbols is not None:
        want = {_any_code_to_symbol(x) or x for x in symbols}
        codes = [c for c in codes if _any_code_to_symbol(c) in want]
        missing = sorted(want - {_any_code_to_symbol(c) for c in codes})
        if report is not None:
            report.add("qlib_symbols_missing", len(missing))
            if missing:
                report.note(f"WARNED: {len(missing)} requested stocks have no qlib feature "
                            f"directory (e.g. delisted): {', '.join(missing[:10])}")
        if missing:
            log.warning("qlib: %d requested stocks not in %s (e.g. %s)", len(missing), feats,
                        ", ".join(missing[:5]))
    return codes


def qlib_daily_table(root: str | os.PathLike[str], report: ValidationReport | None = None,
                     instruments: str | None = None, *, symbols: Iterable[str] | None = None,
                     start: dt.date | str | None = None, end: dt.date | str | None = None,
                     volume: str = "auto") -> pa.Table:
    """Raw daily bars (daily-bars column names) from a qlib directory; see module docstring.

    Args:
        root: the qlib directory.
        report: counts and WARNED notes are added here.
        instruments: restrict to ``instruments/<name>.txt``.
        symbols: restrict to these stocks (any of ``SH600000``, ``600000.SH``, ``600000.XSHG``).
        start, end: keep rows dated within ``[start, end]`` (inclusive).
        volume: ``auto`` (detect, see module docstring), ``adjusted`` (``volume_raw / factor``,
            qlib's convention) or ``raw`` (shares as traded).
    """
    if volume not in VOLUME_CONVENTIONS:
        raise IngestError(Path(root), None, "volume", f"volume convention must be one of "
                          f"{VOLUME_CONVENTIONS}, got {volume!r}")
    root = Path(root)
    cal = read_calendar(root)
    feats = root / "features"
    if not feats.is_dir():
        raise IngestError(feats, None, None, "qlib features directory missing")
    codes = _stock_codes(root, feats, instruments, symbols, report)
    d0 = dt.date.fromisoformat(str(start)) if start is not None else cal[0]
    d1 = dt.date.fromisoformat(str(end)) if end is not None else cal[-1]
    cal_ok = np.array([d0 <= d <= d1 for d in cal])
    loaded: list[tuple[str, str, Path, dict[str, tuple[int, np.ndarray]]]] = []
    elast: list[float] = []
    for code in codes:
        try:
            sym = to_fbgpu_symbol(code)
        except ValueError as e:
            raise IngestError(feats / code, None, "symbol", str(e)) from e
        d = feats / code
        series: dict[str, tuple[int, np.ndarray]] = {}
        for f in ("open", "high", "low", "close", "volume", "factor", "amount", "vwap"):
            p = d / f"{f}.day.bin"
            if p.is_file():
                series[f] = read_bin(p, len(cal))
        for need in ("close", "volume", "factor"):
            if need not in series:
                raise IngestError(d / f"{need}.day.bin", None, need,
                                  f"qlib field {need!r} missing for {code}")
        if volume == "auto" and series["factor"][0] == series["volume"][0]:
            fv, vv = series["factor"][1], series["volume"][1]
            n = min(len(fv), len(vv))
            elast.extend(volume_elasticity(fv[:n], vv[:n]))
        loaded.append((code, sym, d, series))
    vol_kind, why = (volume, f"volume read as {volume} (given)")
    if volume == "auto":
        vol_kind, why = detect_volume_convention(elast)
    log.info("qlib: %s", why)
    if report is not None:
        report.note(f"qlib {why}")
    cols: dict[str, list[Any]] = {k: [] for k in ("date", "symbol", "open", "high", "low",
                                                  "close", "volume", "amount", "vwap",
                                                  "adjfactor", "suspended")}
    n_susp = n_amt = n_vwap = n_flat = 0
    for code, sym, d, series in loaded:
        s0, close = series["close"]
        ok = np.flatnonzero(np.isfinite(close))
        if not len(ok):
            continue
        lo, hi = s0 + ok[0], s0 + ok[-1]  # the stock's span in calendar indices
        idx = np.arange(lo, hi + 1)

        def on(f: str, idx: np.ndarray = idx,
               series: dict[str, tuple[int, np.ndarray]] = series) -> np.ndarray:
            if f not in series:
                return np.full(len(idx), np.nan)
            s, v = series[f]
            j = idx - s
            inside = (j >= 0) & (j < len(v))
            return np.where(inside, v[np.clip(j, 0, max(len(v) - 1, 0))], np.nan)

        fac = on("factor")
        c = on("close")
        vq = on("volume")
        # a close without volume (0 or NaN) is a suspension written as a flat row (real files)
        flat = np.isfinite(c) & ~(np.nan_to_num(vq, nan=0.0) > 0)
        n_flat += int((flat & cal_ok[idx]).sum())
        c = np.where(flat, np.nan, c)
        live = np.isfinite(c)
        bad = np.isfinite(on("close")) & ~(np.isfinite(fac) & (fac > 0))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise IngestError(d / "factor.day.bin", int(idx[k] - series["factor"][0]) + 1,
                              "factor", f"{code} on {cal[idx[k]]}: factor must be a positive "
                              f"number where close exists, got {fac[k]!r}")
        raw = {f: np.where(live, on(f), np.nan) / fac for f in PRICE_FIELDS}
        vol = np.where(live, np.rint(vq * fac if vol_kind == "adjusted" else vq), 0.0)
        vol = np.where(np.isfinite(vol), vol, 0.0)
        amt = on("amount")
        vw = raw["vwap"]
        fill_vw = live & ~np.isfinite(vw) & np.isfinite(amt) & (vol > 0)
        vw = np.where(fill_vw, amt / np.where(vol > 0, vol, 1), vw)
        fill_amt = live & ~np.isfinite(amt)
        base = np.where(np.isfinite(vw), vw, raw["close"])
        amt = np.where(fill_amt, vol * base, amt)
        # suspended rows inside the span: carry the last raw close, no trading. A span may
        # start with flat (zero-volume) rows: their close is the row's own (no earlier one).
        first = ~live & (np.arange(len(idx)) < (np.argmax(live) if live.any() else len(idx)))
        last = np.maximum.accumulate(np.where(live, np.arange(len(idx)), -1))
        own = on("close") / fac
        close_raw = np.where(last >= 0, raw["close"][np.maximum(last, 0)], own)
        close_raw = np.where(first, own, close_raw)
        fac_c = np.where(live | first, fac, fac[np.maximum(last, 0)])
        susp = ~live
        keep = cal_ok[idx]  # the date range is applied after the span rules
        if not keep.any():
            continue
        n_amt += int((fill_amt & keep).sum())
        n_vwap += int((fill_vw & keep).sum())
        n_susp += int((susp & keep).sum())
        for f in ("open", "high", "low"):
            cols[f].extend(np.where(susp, np.nan, raw[f])[keep].tolist())
        cols["close"].extend(close_raw[keep].tolist())
        cols["volume"].extend(vol[keep].tolist())
        cols["amount"].extend(np.where(susp, 0.0, amt)[keep].tolist())
        cols["vwap"].extend(np.where(susp, np.nan, vw)[keep].tolist())
        cols["adjfactor"].extend(fac_c[keep].tolist())
        cols["suspended"].extend(susp[keep].astype(int).tolist())
        cols["date"].extend(cal[i].isoformat() for i in idx[keep])
        cols["symbol"].extend([sym] * int(keep.sum()))
    if report is not None:
        report.add("qlib_suspended_rows", n_susp)
        report.add("qlib_zero_volume_suspended", n_flat)
        report.add("qlib_amount_filled", n_amt)
        report.add("qlib_vwap_filled", n_vwap)
        if n_amt:
            report.note(f"WARNED: qlib amount missing on {n_amt} stock-days; filled with "
                        "raw volume x raw vwap (x raw close where vwap is missing)")
        if n_vwap:
            report.note(f"WARNED: qlib vwap missing on {n_vwap} stock-days; filled with "
                        "amount / raw volume")
    if n_amt or n_vwap:
        log.warning("qlib: filled amount on %d and vwap on %d stock-days", n_amt, n_vwap)
    if not cols["date"]:
        raise IngestError(feats, None, None, "no stock with a close in the qlib directory "
                          "(after the symbol and date restrictions)")
    return pa.table({k: pa.array(v, from_pandas=True) for k, v in cols.items()})  # NaN -> null


def qlib_options(options: Mapping[str, Any] | str | os.PathLike[str] | None) -> dict[str, Any]:
    """Keyword options of :func:`ingest_qlib` from a dict or a TOML file (its ``[qlib]`` table,
    else the top level): ``symbols_from`` (a file for :func:`read_symbol_list`), ``start``,
    ``end``, ``volume``. Unknown keys are an IngestError naming the file."""
    if options is None:
        return {}
    src: Path | None = None
    if isinstance(options, Mapping):
        data = dict(options)
    else:
        src = Path(options)
        try:
            data = tomllib.loads(src.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise IngestError(src, None, None, f"cannot read qlib options: {e}") from e
    data = dict(data.get("qlib", data))
    allowed = {"symbols_from", "start", "end", "volume"}
    extra = sorted(set(data) - allowed)
    if extra:
        raise IngestError(src or "qlib options", None, extra[0],
                          f"unknown qlib option(s) {extra}; allowed: {sorted(allowed)}")
    out: dict[str, Any] = {k: data[k] for k in ("start", "end", "volume") if k in data}
    for k in ("start", "end"):
        if k in out:
            try:
                out[k] = dt.date.fromisoformat(str(out[k]))
            except ValueError as e:
                raise IngestError(src or "qlib options", None, k,
                                  f"not a date (YYYY-MM-DD): {out[k]!r}") from e
    if "symbols_from" in data:
        out["symbols"] = read_symbol_list(data["symbols_from"])
    return out


def ingest_qlib(store: Store | str | os.PathLike[str], root: str | os.PathLike[str],
                instruments: str | None = None,
                options: Mapping[str, Any] | str | os.PathLike[str] | None = None
                ) -> ValidationReport:
    """Ingest a qlib directory's daily bars into ``store`` (raw prices + ``adj_factor``).

    ``options`` (dict or TOML file, see :func:`qlib_options`) restricts symbols and dates and
    sets the volume convention.
    """
    counts = ValidationReport(format="qlib")
    t = qlib_daily_table(root, counts, instruments, **qlib_options(options))
    with tempfile.TemporaryDirectory(prefix="fbgpu-qlib-") as tmp:
        csv = Path(tmp) / "qlib_daily_bars.csv"
        pacsv.write_csv(t, csv)
        report = ingest(store, "daily-bars", [str(csv)])
    for k in ("qlib_suspended_rows", "qlib_zero_volume_suspended", "qlib_amount_filled",
              "qlib_vwap_filled", "qlib_indices_skipped", "qlib_symbols_missing"):
        report.add(k, counts.counts.get(k, 0))
    for n in getattr(counts, "notes", []):
        report.note(n)
    if report.path:  # the daily-bars report on disk, now with the qlib counts and notes
        atomic_write_bytes(Path(report.path), report.to_json().encode())
    return report


def _write_bin(path: Path, start: int, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.r_[np.float32(start), values.astype(np.float32)].astype("<f4").tofile(path)


def export_qlib(table: pa.Table, out: str | os.PathLike[str], calendar: list[dt.date],
                fields: list[str] | None = None, adjust: bool = True) -> list[Path]:
    """Write a long table (``date``, ``symbol``, value columns) as qlib ``.day.bin`` features.

    With ``adjust`` and an ``adj_factor`` column (a store ``daily`` table), prices are written
    adjusted (``price * adj_factor``), volume as ``volume / adj_factor`` and ``factor`` from
    ``adj_factor`` -- the inverse of :func:`ingest_qlib`. Factor or score tables (``adjust``
    False) are written as-is, one bin per column. ``calendar`` (sorted trading dates) is written
    to ``calendars/day.txt``; suspended rows are written as NaN.
    """
    out = Path(out)
    pos = {d: i for i, d in enumerate(calendar)}
    (out / "calendars").mkdir(parents=True, exist_ok=True)
    (out / "calendars" / "day.txt").write_text("".join(f"{d.isoformat()}\n" for d in calendar))
    dates = table.column("date").to_pylist()
    syms = [str(s) for s in table.column("symbol").to_pylist()]
    names = fields or [c for c in table.column_names if c not in ("date", "symbol")]
    adj = adjust and "adj_factor" in table.column_names
    susp = (np.asarray(table.column("suspended").to_pylist(), dtype=bool)
            if "suspended" in table.column_names else np.zeros(len(syms), bool))
    written: list[Path] = []
    inst: list[str] = []
    for sym in sorted(set(syms)):
        rows = [i for i, s in enumerate(syms) if s == sym]
        ix = np.array([pos[dates[i]] for i in rows])
        o = np.argsort(ix)
        rows, ix = [rows[k] for k in o], ix[o]
        lo, hi = int(ix[0]), int(ix[-1])
        code = to_qlib_symbol(sym)
        inst.append(f"{code}\t{calendar[lo]}\t{calendar[hi]}")
        fac = (np.asarray(table.column("adj_factor").take(rows).to_pylist(), dtype=float)
               if adj else None)
        s = susp[rows]
        cols = list(names) + (["factor"] if adj else [])
        for f in cols:
            if f == "factor":
                v = fac
            else:
                v = np.asarray(table.column(f).take(rows).to_pylist(), dtype=float)
                if adj and f in PRICE_FIELDS:
                    v = v * fac
                elif adj and f == "volume":
                    v = v / fac
            v = v if f == "factor" else np.where(s, np.nan, v)
            full = np.full(hi - lo + 1, np.nan)
            full[ix - lo] = v
            p = out / "features" / code.lower() / f"{f}.day.bin"
            _write_bin(p, lo, full)
            written.append(p)
    (out / "instruments").mkdir(exist_ok=True)
    (out / "instruments" / "all.txt").write_text("".join(f"{x}\n" for x in inst))
    return written


def export_store_qlib(store: Store | str | os.PathLike[str], table: str,
                      out: str | os.PathLike[str]) -> list[Path]:
    """Export every date of a store table (``daily``, ``factors``, ``scores``) to qlib bins.

    The calendar is the store's ``daily`` dates (the table's own dates when there is no daily).
    Only numeric columns are written; ``daily`` is adjusted, other tables are written as-is.
    Raises ValueError when the table has no partitions.
    """
    st = store if isinstance(store, Store) else Store(store)
    dates = st.dates(table)
    if not dates:
        raise ValueError(f"store {st.root} has no {table!r} partitions to export")
    parts = [st.read(table, d) for d in dates]
    t = pa.concat_tables([p.cast(parts[0].schema) for p in parts])
    t = pa.table({n: (c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c)
                  for n, c in zip(t.column_names, t.columns, strict=True)})
    cal = sorted(set(st.dates("daily")) | set(dates))
    num = [n for n, c in zip(t.column_names, t.columns, strict=True)
           if n not in ("date", "symbol") and (pa.types.is_floating(c.type)
                                               or pa.types.is_integer(c.type))]
    if table == "daily":
        num = [n for n in num if n != "adj_factor"]
    return export_qlib(t, out, cal, num, adjust=table == "daily")
