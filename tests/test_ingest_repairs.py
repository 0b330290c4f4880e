"""Ingest repairs and gaps that are counted and warned about instead of stored silently (issue 13):
daily rows left without vwap or float_cap, suspension fills over gaps the input does not imply,
multi-day tick files split only on request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from pathlib import Path

import pytest

from fbgpu.data.ingest import IngestError, ingest
from fbgpu.data.ingest.calendar_cn import is_trading_day, not_a_trading_day, trading_days_between
from fbgpu.data.store import Store

CORPUS = Path(__file__).parent / "data" / "ingest"
DAY_HEAD = "date,symbol,open,high,low,close,volume,amount"
SZ_HEAD = "SecurityID,TransactTime,ApplSeqNum,BidApplSeqNum,OfferApplSeqNum,LastPx,LastQty," \
    "ExecType"


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "ingest_reports" not in p.parts}


def test_calendar_rules() -> None:
    assert is_trading_day(dt.date(2023, 7, 11))
    assert not is_trading_day(dt.date(2023, 7, 16))  # Sunday
    assert not is_trading_day(dt.date(2023, 10, 2))  # National Day
    assert not is_trading_day(dt.date(2024, 2, 9))  # exchange-only closure
    assert is_trading_day(dt.date(2024, 2, 9), "weekdays")
    assert "outside the exchange calendar" in str(not_a_trading_day(dt.date(2099, 1, 5)))
    assert not_a_trading_day(dt.date(2023, 7, 16), "none") is None
    # 2023-09-28 (Thu) -> 2023-10-09 (Mon): Mid-Autumn (09-29) and National Day close every
    # weekday in between
    assert trading_days_between(dt.date(2023, 9, 28), dt.date(2023, 10, 9)) == 0
    assert trading_days_between(dt.date(2024, 1, 2), dt.date(2024, 1, 10)) == 5


def test_empty_daily_amount_is_counted_and_warned(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    f = write(tmp_path / "d.csv", DAY_HEAD, "20240102,000001.SZ,10.00,10.20,9.80,10.10,1000,",
              "20240102,000002.SZ,20.00,20.20,19.80,20.10,0,")
    r = ingest(tmp_path / "s", "daily-bars", [f])
    assert r.counts["daily_vwap_unknown"] == 1  # the traded row; a row without volume has none
    assert any("without amount or vwap" in n for n in r.notes)
    assert any("without amount or vwap" in m for m in caplog.messages)
    row = Store(tmp_path / "s").read("daily", dt.date(2024, 1, 2)).to_pylist()[0]
    assert math.isnan(row["vwap"])


def test_missing_float_shares_counted_until_the_master_has_them(tmp_path: Path) -> None:
    f = write(tmp_path / "d.csv", DAY_HEAD, "20240102,000001.SZ,10.00,10.20,9.80,10.10,1000,"
              "10050")
    r = ingest(tmp_path / "s", "daily-bars", [f])
    assert r.counts["float_cap_unknown"] == 1
    assert any("float_cap is NaN" in n for n in r.notes)
    m = write(tmp_path / "m.csv", "sym,name,board,ipoDate,float_shares",
              "000001.SZ,平安银行,主板,1991-04-03,1000000")
    ingest(tmp_path / "s", "securities", [m])
    r = ingest(tmp_path / "s", "daily-bars", [f])
    assert r.counts["float_cap_unknown"] == 0
    row = Store(tmp_path / "s").read("daily", dt.date(2024, 1, 2)).to_pylist()[0]
    assert row["float_cap"] == pytest.approx(1e6 * 10.10)


def _szse_day(path: Path, day: str, symbols: tuple[str, ...]) -> Path:
    lines = [SZ_HEAD]
    for k, s in enumerate(symbols):
        lines.append(f"{s},{day}093000010,{12 + 10 * k},{11 + 10 * k},{4 + 10 * k},10.01,200,F")
    return write(path, *lines)


def test_no_suspended_rows_over_a_gap_the_input_does_not_imply(tmp_path: Path) -> None:
    store = tmp_path / "s"
    ingest(store, "szse-trade", [_szse_day(tmp_path / "a.csv", "20240102", ("000001", "000002"))])
    later = _szse_day(tmp_path / "b.csv", "20240110", ("000002",))
    r = ingest(store, "szse-trade", [later])
    assert r.counts["suspension_fill_skipped"] == 1 and r.counts["suspended_rows_added"] == 0
    d = Store(store).read("daily", dt.date(2024, 1, 10)).column("symbol").to_pylist()
    assert d == ["000002.SZ"]
    before = digest(store)
    ingest(store, "szse-trade", [later])
    assert digest(store) == before  # re-ingesting the same file: byte-identical
    # the next trading day (no gap) does get the suspended row
    r = ingest(store, "szse-trade", [_szse_day(tmp_path / "c.csv", "20240103", ("000002",))])
    assert r.counts["suspended_rows_added"] == 1


def test_multi_day_tick_file_only_with_split_dates(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", SZ_HEAD, "000001,20240102093000010,12,11,4,10.01,200,F",
              "000001,20240103093000010,12,11,4,10.02,200,F")
    with pytest.raises(IngestError) as ei:
        ingest(tmp_path / "s", "szse-trade", [f])
    assert ei.value.row == 2 and "split_dates" in ei.value.reason
    assert not (tmp_path / "s" / "trades").exists()
    r = ingest(tmp_path / "s", "szse-trade", [f], mapping={"split_dates": True})
    assert r.dates == ["2024-01-02", "2024-01-03"]
    assert Store(tmp_path / "s").dates("trades") == [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
