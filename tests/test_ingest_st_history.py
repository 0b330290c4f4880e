"""ST status is point-in-time when the security master carries a name history, and the ingest
report says so when it does not (issue 13: ST used to come from today's name for every date)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from fbgpu.data.ingest import ingest
from fbgpu.data.store import Store

DAYS = ["20240102", "20240103", "20240104", "20240105", "20240108", "20240109"]
#: 000004.SZ is "*ST" from 2024-01-04 to 2024-01-07, and not before or after
ST_DAYS = {"20240104", "20240105"}


def _daily_csv(path: Path) -> Path:
    lines = ["trade_date,ts_code,open,high,low,close,pre_close,vol,amount"]
    for d in DAYS:
        lines.append(f"{d},000004.SZ,10.00,10.20,9.90,10.00,10.00,1000,10000.0")
        lines.append(f"{d},000001.SZ,9.00,9.10,8.90,9.00,9.00,2000,18000.0")
    path.write_text("\n".join(lines) + "\n")
    return path


def _master(path: Path, history: bool) -> Path:
    if history:
        path.write_text("sym,name,ipoDate,name_start\n"
                        "000004.SZ,国华网安,1991-01-14,\n"
                        "000004.SZ,*ST国华,1991-01-14,2024-01-04\n"
                        "000004.SZ,国华网安,1991-01-14,2024-01-08\n"
                        "000001.SZ,平安银行,1991-04-03,\n")
    else:  # today's name only: the stock was ST once, it is not now
        path.write_text("sym,name,ipoDate\n000004.SZ,*ST国华,1991-01-14\n"
                        "000001.SZ,平安银行,1991-04-03\n")
    return path


def _st_by_day(store: Store, symbol: str) -> dict[str, tuple[bool, float]]:
    out = {}
    for d in store.dates("daily"):
        t = store.read("daily", d).to_pylist()
        row = next(r for r in t if str(r["symbol"]) == symbol)
        out[d.strftime("%Y%m%d")] = (bool(row["st"]), float(row["limit_up"]))
    return out


def test_name_history_gives_point_in_time_st(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    r = ingest(store, "securities", [_master(tmp_path / "m.csv", history=True)])
    assert not any("no name history" in n for n in r.notes)
    sec = {x["symbol"]: x["name"] for x in store.read("securities").to_pylist()}
    assert sec == {"000004.SZ": "国华网安", "000001.SZ": "平安银行"}  # the latest name
    hist = store.read("security_names").to_pylist()
    assert {(h["symbol"], h["start_date"], h["name"]) for h in hist} == {
        ("000001.SZ", None, "平安银行"), ("000004.SZ", None, "国华网安"),
        ("000004.SZ", dt.date(2024, 1, 4), "*ST国华"),
        ("000004.SZ", dt.date(2024, 1, 8), "国华网安")}
    r = ingest(store, "daily-bars", [_daily_csv(tmp_path / "d.csv")])
    assert r.counts["st_from_current_name"] == 0
    st = _st_by_day(store, "000004.SZ")
    assert {d for d, (s, _) in st.items() if s} == ST_DAYS
    # the ST days carry the 5% main-board limit, the others 10%
    assert {d: lim for d, (_, lim) in st.items()} == {
        d: (10.5 if d in ST_DAYS else 11.0) for d in DAYS}
    assert not any(s for s, _ in _st_by_day(store, "000001.SZ").values())


def test_without_history_the_report_says_st_is_not_point_in_time(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    r = ingest(store, "securities", [_master(tmp_path / "m.csv", history=False)])
    assert any("no name history" in n for n in r.notes)
    assert not store.has("security_names")
    r = ingest(store, "daily-bars", [_daily_csv(tmp_path / "d.csv")])
    assert r.counts["st_from_current_name"] == 2  # both stocks' first rows, then carried
    assert any("not point-in-time" in n for n in r.notes)
    assert all(s for s, _ in _st_by_day(store, "000004.SZ").values())  # today's name, every day


def test_two_names_starting_the_same_day_are_rejected(tmp_path: Path) -> None:
    from fbgpu.data.ingest import IngestError

    m = tmp_path / "m.csv"
    m.write_text("sym,name,name_start\n000004.SZ,A,2024-01-04\n000004.SZ,*ST A,2024-01-04\n")
    store = Store(tmp_path / "s")
    with pytest.raises(IngestError, match="two names starting on the same day") as e:
        ingest(store, "securities", [m])
    assert e.value.row == 2 and e.value.column == "name_start"
    assert not store.root.exists() or not any(store.root.rglob("part-0.*"))
