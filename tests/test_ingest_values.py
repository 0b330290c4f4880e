"""Parsers of vendor values: timestamps in every layout, dates, symbols, numbers (properties)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fbgpu.data.ingest import IngestError
from fbgpu.data.ingest.values import (
    Where,
    is_stock,
    normalize_symbol,
    parse_date,
    parse_float,
    parse_int,
    parse_time,
)

W = Where("f.csv", "col", 1)
MS = 1_000_000
times = st.integers(0, 24 * 3600 * 1000 - 1)  # milliseconds since midnight
days = st.dates(dt.date(1990, 1, 1), dt.date(2099, 12, 31))


def _hms(ms: int) -> tuple[int, int, int, int]:
    s, milli = divmod(ms, 1000)
    return s // 3600, s // 60 % 60, s % 60, milli


@settings(max_examples=60, deadline=None)
@given(st.lists(times, min_size=1, max_size=20), days)
def test_time_layouts_agree(ms: list[int], day: dt.date) -> None:
    want = np.array(ms, dtype=np.int64) * MS
    parts = [_hms(x) for x in ms]
    clock = [f"{h:02d}:{m:02d}:{s:02d}.{f:03d}" for h, m, s, f in parts]
    ns, d = parse_time(pa.array(clock), W, "auto")
    assert (ns == want).all() and (d == -1).all()
    dated = [f"{day:%Y.%m.%d}T{c}" for c in clock]
    ns, d = parse_time(pa.array(dated), W, "auto")
    assert (ns == want).all() and (d == (day - dt.date(1970, 1, 1)).days).all()
    ymd = day.year * 10_000 + day.month * 100 + day.day
    packed = [str(ymd * 10**9 + ((h * 100 + m) * 100 + s) * 1000 + f) for h, m, s, f in parts]
    ns, d = parse_time(pa.array(packed), W, "auto")
    assert (ns == want).all() and (d == (day - dt.date(1970, 1, 1)).days).all()
    short = [str(((h * 100 + m) * 100 + s) * 1000 + f) for h, m, s, f in parts]
    ns, _ = parse_time(pa.array(short), W, "HHMMSSmmm")
    assert (ns == want).all()
    cc = [str(((h * 100 + m) * 100 + s) * 100 + f // 10) for h, m, s, f in parts]
    ns, _ = parse_time(pa.array(cc), W, "HHMMSScc")
    assert (ns == (np.array(ms) // 10 * 10) * MS).all()


def test_time_auto_for_bar_files() -> None:
    ns, _ = parse_time(pa.array(["930", "1500"]), W, "auto")
    assert ns.tolist() == [34_200 * 10**9, 54_000 * 10**9]
    ns, _ = parse_time(pa.array(["93100000", "150000000"]), W, "auto")
    assert ns.tolist() == [(9 * 3600 + 31 * 60) * 10**9, 54_000 * 10**9]
    ns, _ = parse_time(pa.array(["9:30:00", "13:00:01,5"]), W, "auto")
    assert ns.tolist() == [34_200 * 10**9, (13 * 3600 + 1) * 10**9 + 5 * 10**8]


@pytest.mark.parametrize("bad", ["24:00:00", "09:60:00", "9h30", "20240230093000000",
                                 "2024.02.30 09:30:00"])
def test_bad_times_name_the_row(bad: str) -> None:
    with pytest.raises(IngestError) as e:
        first = "09:30:00.000" if ":" in bad else "20240229093000000" if len(bad) > 9 else "93000"
        parse_time(pa.array([first, bad]),
                   Where("f.csv", "time", 10), "auto")
    assert e.value.row == 11 and e.value.column == "time"


@settings(max_examples=40, deadline=None)
@given(st.lists(days, min_size=1, max_size=10), st.sampled_from(["%Y-%m-%d", "%Y.%m.%d",
                                                                  "%Y/%m/%d", "%Y%m%d"]))
def test_dates(ds: list[dt.date], fmt: str) -> None:
    got = parse_date(pa.array([d.strftime(fmt) for d in ds]), W, True)
    assert got.tolist() == [(d - dt.date(1970, 1, 1)).days for d in ds]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e12, 1e12, allow_nan=False), min_size=1, max_size=20))
def test_numbers_round_trip_repr(xs: list[float]) -> None:
    assert parse_float(pa.array([repr(x) for x in xs]), W, True).tolist() == xs
    ints = [int(x) for x in xs]
    assert parse_int(pa.array([str(i) for i in ints]), W, True).tolist() == ints
    assert parse_int(pa.array([f"{i}.0" for i in ints]), W, True).tolist() == ints


@pytest.mark.parametrize(("raw", "market", "default", "want"), [
    ("000006.XSHE", None, None, "000006.SZ"), ("600000.XSHG", None, None, "600000.SH"),
    ("sh600000", None, None, "600000.SH"), ("SZ000001", None, None, "000001.SZ"),
    ("155", "SZ", None, "000155.SZ"), ("1", None, "SZ", "000001.SZ"),
    ("688001", None, None, "688001.SH"), ("830799", None, None, "830799.BJ"),
    ("600000.SS", None, None, "600000.SH"), ("801010.SI", None, None, None),
    ("000001", "?", None, None), ("ABC", None, None, None),
])
def test_symbols(raw: str, market: str | None, default: str | None, want: str | None) -> None:
    assert normalize_symbol(raw, market, default) == want


def test_is_stock() -> None:
    assert is_stock("600000.SH") and is_stock("300750.SZ") and is_stock("688001.SH")
    assert not is_stock("000300.SH") and not is_stock("399001.SZ") and not is_stock("510300.SH")
