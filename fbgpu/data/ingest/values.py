"""Vectorised parsing of vendor text columns into canonical values, with row-exact errors.

Every parser takes a pyarrow string array (one streamed block of one column), the data-row number
of its first element and the file/column names for errors, and returns numpy arrays. Work is done
in Arrow compute kernels; only distinct values of low-cardinality columns (codes, dates, symbols)
are handled in Python.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fbgpu.data.ingest.errors import IngestError
from fbgpu.data.ingest.mapping import norm_code

NS_PER_S = 1_000_000_000
_NUM_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_CLOCK_RE = (
    r"^(?:(?P<Y>\d{4})[-./]?(?P<Mo>\d{1,2})[-./]?(?P<D>\d{1,2})[T ]+)?"
    r"(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})(?:[.,](?P<f>\d{1,9}))?$"
)
EPOCH = dt.date(1970, 1, 1)


class Where:
    """File and column of a block being parsed, and the data-row number of its first element
    (or of every element, ``rows``, when row filters removed some rows of the block)."""

    __slots__ = ("column", "file", "row0", "rows")

    def __init__(self, file: str, column: str, row0: int,
                 rows: np.ndarray | None = None) -> None:
        self.file, self.column, self.row0, self.rows = file, column, row0, rows

    def error(self, index: int | None, reason: str) -> IngestError:
        if index is None:
            row = None
        elif self.rows is not None:
            row = int(self.rows[int(index)])
        else:
            row = self.row0 + int(index)
        return IngestError(self.file, row, self.column, reason)


def _clean(arr: pa.Array) -> pa.Array:
    """Trimmed strings with empty values as nulls."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    arr = pc.utf8_trim_whitespace(arr)
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, arr.type), arr)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _bad_number_index(clean: pa.Array) -> int | None:
    ok = pc.match_substring_regex(clean, _NUM_RE).to_numpy(zero_copy_only=False)
    valid = clean.is_valid().to_numpy(zero_copy_only=False)
    bad = valid & ~ok.astype(bool)
    return _first(bad) if bad.any() else None


def parse_float(arr: pa.Array, where: Where, required: bool) -> np.ndarray:
    """float64 values; empty cells are an error when ``required``, NaN otherwise."""
    clean = _clean(arr)
    bad = _bad_number_index(clean)
    if bad is not None:
        raise where.error(bad, f"not a number: {clean[bad].as_py()!r}")
    if required and clean.null_count:
        raise where.error(_first(~clean.is_valid().to_numpy(zero_copy_only=False)),
                          "empty value in a required column")
    return pc.cast(clean, pa.float64()).to_numpy(zero_copy_only=False)


def parse_int(arr: pa.Array, where: Where, required: bool) -> np.ndarray:
    """int64 values (float notation accepted when integral); empty -> error or -1 (optional)."""
    clean = _clean(arr)
    bad = _bad_number_index(clean)
    if bad is not None:
        raise where.error(bad, f"not an integer: {clean[bad].as_py()!r}")
    valid = clean.is_valid().to_numpy(zero_copy_only=False)
    if required and not valid.all():
        raise where.error(_first(~valid), "empty value in a required column")
    try:
        out = pc.cast(clean, pa.int64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        f = pc.cast(clean, pa.float64()).to_numpy(zero_copy_only=False)
        over = valid & (np.abs(f) >= 2.0**63)
        if over.any():
            i = _first(over)
            raise where.error(i, f"overflow: {clean[i].as_py()!r} is out of the int64 range "
                              f"(|value| < 2**63)") from None
        nonint = valid & ((np.abs(f) > 2.0**53) | (np.floor(np.nan_to_num(f)) != f))
        if nonint.any():
            i = _first(nonint)
            raise where.error(i, f"not an integer: {clean[i].as_py()!r}") from None
        out = np.where(valid, np.nan_to_num(f), -1).astype(np.int64)
    if not valid.all():
        out = np.where(valid, out, -1)
    return np.asarray(out, dtype=np.int64)


def _distinct(clean: pa.Array) -> tuple[list[Any], np.ndarray]:
    enc = pc.dictionary_encode(clean, null_encoding="encode")
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    idx = enc.indices.to_numpy(zero_copy_only=False)
    return enc.dictionary.to_pylist(), idx


#: Canonical names of coded values, as stored in the int8 arrays parse_code returns.
CANONICAL_CODES: dict[str, int] = {
    "add": 1, "delete": 2, "status": 3, "trade": 4, "cancel": 5,
    "limit": 0, "market": 1, "best": 2,
}


def _canonical(v: Any) -> int:
    if isinstance(v, bool | np.bool_):
        return int(v)
    if isinstance(v, int | np.integer):
        return int(v)
    return CANONICAL_CODES[str(v)]


def parse_code(arr: pa.Array, where: Where, codes: Mapping[str, Any],
               as_int: bool = True, unknown: Any = None) -> np.ndarray:
    """Canonical values of a coded column, an error naming the first unknown code.

    ``unknown`` (when not None) stands in for codes missing from the table instead of an error.
    With ``as_int`` the result is int8 (sides as +1/-1/0, booleans as 1/0, names through
    :data:`CANONICAL_CODES`); otherwise an object array of the mapped values.
    """
    values, idx = _distinct(_clean(arr))
    mapped: list[Any] = []
    for j, v in enumerate(values):
        key = "" if v is None else norm_code(v)
        if key not in codes and unknown is not None:
            mapped.append(unknown)
            continue
        if key not in codes:
            shown = ", ".join(sorted(k for k in codes if k)[:16])
            raise where.error(_first(idx == j), f"unknown code {v!r} (known: {shown})")
        target = codes[key]
        if as_int:
            try:
                target = _canonical(target)
            except KeyError:
                raise where.error(_first(idx == j),
                                  f"code {v!r} maps to {target!r}, which is not one of "
                                  f"{', '.join(CANONICAL_CODES)}") from None
        mapped.append(target)
    if as_int:
        table = np.array(mapped, dtype=np.int8)
        return table[idx] if len(idx) else np.zeros(0, dtype=np.int8)
    return np.array(mapped, dtype=object)[idx] if len(idx) else np.array([], dtype=object)


def parse_str(arr: pa.Array) -> np.ndarray:
    """Trimmed strings as an object array (None where empty)."""
    values, idx = _distinct(_clean(arr))
    return np.array(values, dtype=object)[idx] if len(idx) else np.array([], dtype=object)


def parse_date_text(text: str) -> dt.date | None:
    """``YYYY-MM-DD``, ``YYYY.MM.DD``, ``YYYY/MM/DD``, ``YYYYMMDD`` (a time part may follow)."""
    t = text.strip()
    m = re.match(r"^(\d{4})[-./](\d{1,2})[-./](\d{1,2})(?:[ T].*)?$", t) or re.match(
        r"^(\d{4})(\d{2})(\d{2})(?:[ T]?\d{0,9}(?:[:.]\d+)*)?$", t
    )
    if not m:
        return None
    try:
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def parse_date(arr: pa.Array, where: Where, required: bool) -> np.ndarray:
    """Dates as int32 days since 1970-01-01 (``-1`` where empty and optional)."""
    values, idx = _distinct(_clean(arr))
    days = np.empty(len(values), dtype=np.int32)
    for j, v in enumerate(values):
        if v is None:
            if required:
                raise where.error(_first(idx == j), "empty date")
            days[j] = -1
            continue
        d = parse_date_text(v)
        if d is None:
            raise where.error(_first(idx == j), f"not a date: {v!r}")
        days[j] = (d - EPOCH).days
    return days[idx] if len(idx) else np.array([], dtype=np.int32)


def clock(ns: int | np.integer) -> str:
    """Nanoseconds since midnight as ``HH:MM:SS.fff`` (for messages; truncated to ms)."""
    ms = int(ns) // 1_000_000
    s, ms = divmod(ms, 1000)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{ms:03d}"


def _hmsf_to_ns(h: np.ndarray, m: np.ndarray, s: np.ndarray, frac_ns: np.ndarray,
                where: Where) -> np.ndarray:
    bad = (h > 23) | (m > 59) | (s > 60) | (h < 0) | (m < 0) | (s < 0)
    if bad.any():
        i = _first(bad)
        raise where.error(i, f"not a valid time of day: {h[i]:02d}:{m[i]:02d}:{s[i]:02d}")
    return ((h * 60 + m) * 60 + s) * NS_PER_S + frac_ns


def _days_from_ymd(y: np.ndarray, mo: np.ndarray, d: np.ndarray, where: Where) -> np.ndarray:
    ok = (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= 31) & (y >= 1970)
    if not ok.all():
        raise where.error(_first(~ok), "not a valid date in the timestamp")
    months = (y - 1970) * 12 + (mo - 1)
    first = months.astype("datetime64[M]").astype("datetime64[D]")
    days = first + (d - 1).astype("timedelta64[D]")
    back = days.astype("datetime64[M]")
    if not (back == first.astype("datetime64[M]")).all():
        raise where.error(_first(back != first.astype("datetime64[M]")),
                          "not a valid date in the timestamp")
    return days.astype(np.int64).astype(np.int32)


def parse_time(arr: pa.Array, where: Where, time_format: str) -> tuple[np.ndarray, np.ndarray]:
    """Nanoseconds since midnight (int64) and the date when the value carries one.

    Returns ``(ns, days)`` where ``days`` is int32 days since 1970-01-01, ``-1`` when the value
    has no date part. Formats: see :class:`fbgpu.data.ingest.mapping.IngestConfig.time_format`.
    """
    clean = _clean(arr)
    n = len(clean)
    valid = clean.is_valid().to_numpy(zero_copy_only=False)
    if not valid.all():
        raise where.error(_first(~valid), "empty timestamp")
    days = np.full(n, -1, dtype=np.int32)
    if n == 0:
        return np.zeros(0, dtype=np.int64), days
    is_clock = time_format == "clock" or (
        time_format == "auto" and pc.any(pc.match_substring(clean, ":")).as_py()
    )
    if is_clock:
        parts = pc.extract_regex(clean, _CLOCK_RE)
        ok = parts.is_valid().to_numpy(zero_copy_only=False)
        if not ok.all():
            i = _first(~ok)
            raise where.error(i, f"not a timestamp: {clean[i].as_py()!r}")

        def num(name: str) -> np.ndarray:
            col = _clean(parts.field(name))
            return pc.cast(pc.fill_null(col, "0"), pa.int64()).to_numpy(zero_copy_only=False)

        frac = pc.utf8_rpad(pc.fill_null(parts.field("f"), ""), 9, "0")
        frac_ns = pc.cast(frac, pa.int64()).to_numpy(zero_copy_only=False)
        ns = _hmsf_to_ns(num("h"), num("m"), num("s"), frac_ns, where)
        has_date = _clean(parts.field("Y")).is_valid().to_numpy(zero_copy_only=False)
        if has_date.any():  # rows without a date part get 1970-01-01, then -1
            y = np.where(has_date, num("Y"), 1970)
            dd = _days_from_ymd(y, np.where(has_date, num("Mo"), 1),
                                np.where(has_date, num("D"), 1), where)
            days = np.where(has_date, dd, -1).astype(np.int32)
        return ns, days
    v = parse_int(clean, where, required=True)
    fmt = time_format
    if fmt == "auto":
        top = int(v.max())
        fmt = ("YYYYMMDDHHMMSSmmm" if top >= 10**16 else
               "HHMMSSmmm" if top >= 10**7 else "HHMMSS" if top >= 10**4 else "HHMM")
    if fmt == "YYYYMMDDHHMMSSmmm":
        ymd, t = np.divmod(v, 10**9)
        y, md = np.divmod(ymd, 10**4)
        mo, d = np.divmod(md, 100)
        days = _days_from_ymd(y, mo, d, where)
        frac_ns = (t % 1000) * 1_000_000
        hms = t // 1000
    elif fmt == "HHMMSSmmm":
        frac_ns = (v % 1000) * 1_000_000
        hms = v // 1000
    elif fmt == "HHMMSScc":
        frac_ns = (v % 100) * 10_000_000
        hms = v // 100
    elif fmt == "HHMM":
        frac_ns = np.zeros(n, dtype=np.int64)
        hms = v * 100
    else:
        frac_ns = np.zeros(n, dtype=np.int64)
        hms = v
    h, ms = np.divmod(hms, 10_000)
    m, s = np.divmod(ms, 100)
    return _hmsf_to_ns(h, m, s, frac_ns, where), days


_SUFFIX = {"SH": "SH", "SS": "SH", "XSHG": "SH", "SZ": "SZ", "XSHE": "SZ", "BJ": "BJ",
           "XBSE": "BJ"}


def infer_exchange(code: str) -> str:
    """Exchange of a bare 6-digit code from its prefix (6/9 -> SH, 4/8/92 -> BJ, else SZ)."""
    if code.startswith("92") or code[0] in "48":
        return "BJ"
    if code[0] in "69":
        return "SH"
    return "SZ"


def normalize_symbol(code: str, market: str | None, default_exchange: str | None) -> str | None:
    """Canonical ``NNNNNN.XX`` of a vendor code, or None when it is not a security code.

    Accepts ``000001.SZ``, ``000006.XSHE`` (JoinQuant), ``600000.SS``, ``SZ000001``, ``sh600000``,
    and bare codes (zero-padded to 6 digits when a numeric column lost its leading zeros) with the
    exchange from the market column, the format's exchange, or the code prefix, in that order.
    """
    c = code.strip().upper()
    m = re.match(r"^(\d{1,6})\.(SH|SS|SZ|BJ|XSHG|XSHE|XBSE)$", c)
    if m:
        return f"{int(m.group(1)):06d}.{_SUFFIX[m.group(2)]}"
    m = re.match(r"^(SH|SZ|BJ)\.?(\d{6})$", c)
    if m:
        return f"{m.group(2)}.{m.group(1)}"
    if re.match(r"^\d{1,6}(\.0)?$", c):
        if market == "?":  # an exchange code that is not an A-share exchange
            return None
        digits = f"{int(float(c)):06d}"
        exch = market or default_exchange or infer_exchange(digits)
        return f"{digits}.{exch}"
    return None


def parse_symbol(arr: pa.Array, where: Where, market: np.ndarray | None,
                 default_exchange: str | None,
                 lenient: bool = False) -> tuple[list[str | None], np.ndarray]:
    """Canonical symbols as (distinct names, int32 index per row).

    A value that is not a security code is an error naming its row, or with ``lenient`` a
    ``None`` name (the caller drops and counts those rows, e.g. ``801010.SI`` industry indices in
    a daily file).
    """
    clean = _clean(arr)
    valid = clean.is_valid().to_numpy(zero_copy_only=False)
    if not valid.all():
        raise where.error(_first(~valid), "empty security code")
    if market is not None:
        mk = pa.array(market.astype(str))
        key = pc.binary_join_element_wise(clean, mk, "|")
    else:
        key = clean
    values, idx = _distinct(key)
    out: list[str | None] = []
    for j, v in enumerate(values):
        code, _, mkt = v.partition("|")
        sym = normalize_symbol(code, (mkt if mkt not in ("", "None") else None),
                               default_exchange)
        if sym is None and not lenient:
            raise where.error(_first(idx == j), f"not a security code: {code!r}")
        out.append(sym)
    return out, idx.astype(np.int32)


def is_stock(symbol: str) -> bool:
    """A-share (and B-share) stock codes by prefix; indices, funds and bonds are not stocks.

    SH: 60x, 68x (STAR), 900 (B); SZ: 00x, 30x (ChiNext), 200 (B); BJ: 4xx, 8xx, 92x.
    """
    code, _, exch = symbol.partition(".")
    if exch == "SH":
        return code.startswith(("60", "68", "900"))
    if exch == "SZ":
        return code.startswith(("00", "30", "200"))
    if exch == "BJ":
        return code.startswith(("4", "8", "92"))
    return False
