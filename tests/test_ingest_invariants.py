"""Invariants on stored bars and trades (issue 13, item 2): values that cannot be true reject the
file through the real command line, exit status 2, with file, row and column on stderr, and the
store byte for byte as it was (run.json included).

Rules (docs/ingest.md, "Rules"): bars with negative volume/amount, a price that is not finite,
not positive or above 1e6 CNY, high below low, open/close outside [low, high]; trades with a
price that is not finite or above 1e6 CNY, a vendor amount that is not price x volume, a
negative sequence number.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fbgpu.data.ingest import IngestError, ingest

ENV = {**os.environ, "FBGPU_PROGRESS": "0", "COLUMNS": "200", "NO_COLOR": "1",
       "TERM": "dumb"}

MIN_HEAD = "symbol,date,time,open,high,low,close,volume,amount"
MIN_OK = "000001.SZ,20240102,93100000,10.00,10.10,9.90,10.05,1000,10020"
DAY_HEAD = "date,symbol,open,high,low,close,volume,amount"
DAY_OK = "20240102,000001.SZ,10.00,10.20,9.80,10.10,1000,10050"
SSE_HEAD = "MDDate,MDTime,SecurityID,ApplSeqNum,TradeBuyNo,TradeSellNo,TradeBSFlag,TradePrice," \
    "TradeQty,TradeMoney"
SSE_OK = "2024.01.02,09:30:00.000,600000,101,13,12,B,8.01,200,1602"
SSE_OK2 = "2024.01.02,09:30:01.000,600000,102,13,14,S,8.00,100,800"
SZSE_HEAD = "SecurityID,TransactTime,ApplSeqNum,BidApplSeqNum,OfferApplSeqNum,LastPx,LastQty," \
    "ExecType"
SZSE_OK = "000001,20240102093000010,12,11,4,10.01,200,F"


def fbgpu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fbgpu", *args], capture_output=True, text=True,
                          env=ENV, timeout=300, check=False)


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass
class Case:
    name: str
    fmt: str
    lines: tuple[str, ...]
    row: int
    column: str
    reason: str
    cli: bool = True  # through a subprocess; extra variants run in-process (keeps the file fast)
    date: str | None = None  # --date


def minute(*rows: str) -> tuple[str, ...]:
    return (MIN_HEAD, MIN_OK, *rows)


def daily(*rows: str) -> tuple[str, ...]:
    return (DAY_HEAD, DAY_OK.replace("000001", "000002"), *rows)


def sse(*rows: str) -> tuple[str, ...]:
    return (SSE_HEAD, SSE_OK, *rows)


M2 = MIN_OK.replace("93100000", "93200000")
CASES = [
    # minute bars
    Case("minute negative volume", "minute-bars", minute(M2.replace(",1000,", ",-1000,")),
         2, "volume", "volume -1000 is negative"),
    Case("minute negative amount", "minute-bars", minute(M2.replace(",10020", ",-10020")),
         2, "amount", "amount -10020 is negative"),
    Case("minute close above high", "minute-bars", minute(M2.replace(",10.05,", ",10.50,")),
         2, "close", "close 10.5 lies outside [low 9.9, high 10.1]"),
    Case("minute open below low", "minute-bars", minute(M2.replace(",10.00,", ",9.00,")),
         2, "open", "open 9 lies outside"),
    Case("minute high below low", "minute-bars",
         minute("000001.SZ,20240102,93200000,10.00,9.00,11.00,10.00,1000,10000"),
         2, "high", "high 9 is below low 11"),
    Case("minute all prices zero", "minute-bars",
         minute("000001.SZ,20240102,93200000,0,0,0,0,0,0"), 2, "open", "is not positive"),
    Case("minute zero low with volume", "minute-bars",
         minute("000001.SZ,20240102,93200000,10.00,10.10,0,10.05,1000,10020"),
         2, "low", "low 0 is not positive"),
    Case("minute infinite price", "minute-bars", minute(M2.replace(",10.10,", ",1e400,")),
         2, "high", "is not finite", cli=False),
    # daily bars
    Case("daily negative close", "daily-bars", daily(DAY_OK.replace(",10.10,", ",-10.10,")),
         2, "close", "close -10.1 is not positive"),
    Case("daily zero open", "daily-bars", daily(DAY_OK.replace(",10.00,", ",0,")),
         2, "open", "open 0 is not positive"),
    Case("daily high below low", "daily-bars",
         daily("20240102,000001.SZ,10.00,9.00,11.00,10.00,1000,10000"), 2, "high",
         "high 9 is below low 11"),
    Case("daily negative volume", "daily-bars", daily(DAY_OK.replace(",1000,", ",-1000,")),
         2, "volume", "volume -1000 is negative", cli=False),
    # trades
    Case("trade price 1e308", "sse-trade",
         sse(SSE_OK2.replace(",8.00,100,800", ",1e308,100,800")), 2, "TradePrice",
         "is above 1,000,000 CNY"),
    Case("trade price 1e9", "sse-trade",
         sse(SSE_OK2.replace(",8.00,100,800", ",1e9,100,800")), 2, "TradePrice",
         "1e+09 is above 1,000,000 CNY"),
    Case("trade price infinite", "sse-trade",
         sse(SSE_OK2.replace(",8.00,100,800", ",1e400,100,800")), 2, "TradePrice",
         "is not finite", cli=False),
    Case("TradeMoney not price x qty", "sse-trade",
         sse(SSE_OK2.replace(",800", ",8000")), 2, "TradeMoney",
         "amount 8000 is not price x volume (8 x 100 = 800)"),
    Case("negative seq (sse)", "sse-trade", sse(SSE_OK2.replace(",102,", ",-102,")), 2,
         "ApplSeqNum", "sequence number -102 of a trade is negative"),
    Case("negative seq (szse)", "szse-trade",
         (SZSE_HEAD, SZSE_OK, SZSE_OK.replace(",12,", ",-12,").replace("3000010", "3001000")),
         2, "ApplSeqNum", "is negative", cli=False),
    # plausibility band (x5 of the stock-day median, or of the previous close when known)
    Case("trade price 100x the median", "sse-trade",
         sse(SSE_OK2, SSE_OK2.replace(",102,", ",103,").replace(",8.00,100,800",
                                                                 ",800,100,80000")),
         3, "TradePrice", "trade price 800 is more than 5x away from the median"),
    Case("trade price 1/100 of the median", "sse-trade",
         sse(SSE_OK2, SSE_OK2.replace(",102,", ",103,").replace(",8.00,100,800",
                                                                 ",0.08,100,8")),
         3, "TradePrice", "is more than 5x away", cli=False),
    # one file, one date; the exchange calendar
    Case("row of the next day in a tick file", "sse-trade",
         sse(SSE_OK2.replace("2024.01.02", "2024.01.03")), 2, "MDDate",
         "row is dated 2024-01-03, but the file's first row is dated 2024-01-02"),
    Case("minute bar on a Sunday", "minute-bars",
         minute(M2.replace("20240102", "20240107")), 2, "date", "2024-01-07 is a Sunday"),
    Case("daily bar on New Year's Day", "daily-bars",
         daily(DAY_OK.replace("20240102", "20240101")), 2, "date",
         "2024-01-01 is an exchange holiday (New Year's Day)", cli=False),
    Case("trades on the 2024 Spring Festival eve closure", "sse-trade",
         (SSE_HEAD, SSE_OK.replace("2024.01.02", "2024.02.09")), 1, "MDDate",
         "2024-02-09 is an exchange holiday (Spring Festival eve", cli=False),
    Case("minute bar in 2099", "minute-bars", minute(M2.replace("20240102", "20990105")), 2,
         "date", "outside the exchange calendar's years", cli=False),
    Case("szse --date on a Sunday", "szse-trade",
         (SZSE_HEAD, "000001,93000010,12,11,4,10.01,200,F"), 0, "--date",
         "2024-01-07 is a Sunday", date="2024-01-07"),
    Case("szse --date in 2099", "szse-trade",
         (SZSE_HEAD, "000001,93000010,12,11,4,10.01,200,F"), 0, "--date",
         "outside the exchange calendar's years", cli=False, date="2099-01-05"),
]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding valid minute bars, daily bars and SSE trades."""
    root = tmp_path_factory.mktemp("invariants")
    store = root / "store"
    for fmt, lines in (("minute-bars", (MIN_HEAD, MIN_OK)), ("daily-bars", (DAY_HEAD, DAY_OK)),
                       ("sse-trade", (SSE_HEAD, SSE_OK, SSE_OK2))):
        f = root / f"seed-{fmt}.csv"
        f.write_text("\n".join(lines) + "\n")
        ingest(store, fmt, [f])
    return store


def test_cases_distinct() -> None:
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_invariant_rejects_file(case: Case, seeded: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(case.lines) + "\n")
    before = digest(seeded)
    if case.cli:
        extra = ["--date", case.date] if case.date else []
        res = fbgpu("ingest", "--format", case.fmt, "--in", str(bad), "--store", str(seeded),
                    *extra)
        err = res.stderr
        # a bad --date is a bad argument (usage, 1); a bad row is rejected input (2)
        assert res.returncode == (1 if case.row == 0 else 2), res.stdout + err
    else:
        with pytest.raises(IngestError) as ei:
            ingest(seeded, case.fmt, [bad], date=case.date)
        err = f"{ei.value}\nthe store was not changed"
    if case.row == 0:  # an argument, not a row of the file
        assert "<arguments>" in err and f"column {case.column!r}" in err, err
    else:
        assert str(bad) in err, err
        assert f"row {case.row} " in err and f"column {case.column!r}" in err, err
    assert case.reason in err, err
    assert "the store was not changed" in err
    assert digest(seeded) == before


def test_valid_file_still_ingests(tmp_path: Path) -> None:
    """Bars on the edges of the rules (open = low, close = high; volume 0 at positive prices)
    ingest with exit 0 (valid SSE trades with TradeMoney are ingested by the ``seeded``
    fixture)."""
    store = tmp_path / "store"
    edge = MIN_OK.replace("93100000", "93200000").replace(",10.00,10.10,9.90,10.05,",
                                                          ",9.90,10.10,9.90,10.10,")
    quiet = "000001.SZ,20240102,93300000,10.10,10.10,10.10,10.10,0,0"
    f = tmp_path / "minute.csv"
    f.write_text("\n".join((MIN_HEAD, MIN_OK, edge, quiet)) + "\n")
    res = fbgpu("ingest", "--format", "minute-bars", "--in", str(f), "--store", str(store))
    assert res.returncode == 0, res.stdout + res.stderr
    assert any(k.startswith("minute/") for k in digest(store))
