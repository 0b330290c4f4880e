"""Malformed-input corpus, part 3 (issue 13): the mapping features' failure modes, format
mix-ups, overflow and readable times, plus inputs that are repaired and counted.

Every rejected case names file, row and column and leaves a seeded store byte for byte as it
was (every file hashed, ``run.json`` included when present); a few run through the command
line as subprocesses (exit status 2). Every repaired case states the report count it must
raise. Together with tests/test_ingest_malformed.py and tests/test_ingest_invariants.py the
corpus holds more than 60 kinds (:func:`test_corpus_size`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fbgpu.data.ingest import IngestError, MappingError, ingest

ENV = {**os.environ, "FBGPU_PROGRESS": "0", "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}

SSE_HEAD = "MDDate,MDTime,SecurityID,ApplSeqNum,TradeBuyNo,TradeSellNo,TradeBSFlag,TradePrice," \
    "TradeQty,TradeMoney"
SSE1 = "2024.01.02,09:30:00.000,600000,101,13,12,B,8.01,200,1602"
SSE2 = "2024.01.02,09:30:01.000,600000,102,13,14,S,8.00,100,800"
SZSE_HEAD = "SecurityID,TransactTime,ApplSeqNum,BidApplSeqNum,OfferApplSeqNum,LastPx,LastQty," \
    "ExecType"
SZSE1 = "000001,20240102093000010,12,11,4,10.01,200,F"
MIXED_HEAD = "Market," + SSE_HEAD
SSE_ORDER_HEAD = "MDDate,MDTime,SecurityID,ApplSeqNum,OrderNO,OrdType,OrderPrice,OrderQty," \
    "OrderBSFlag"
SSE_ORDER1 = "2024.01.02,09:30:00.000,600000,5,3,A,8.0,100,B"
MIN_HEAD = "symbol,date,time,open,high,low,close,volume,amount"
MIN1 = "000001.SZ,20240102,93100000,10.00,10.10,9.90,10.05,1000,10020"
DAY_HEAD = "date,symbol,open,high,low,close,volume,amount"
DAY1 = "20240102,000001.SZ,10.00,10.20,9.80,10.10,1000,10050"


@dataclass
class Case:
    name: str
    fmt: str
    content: bytes | dict[str, str]  # a CSV, or zip members
    row: int | None
    column: str | None
    reason: str
    mapping: dict[str, Any] | None = None
    cli: bool = False  # also through the command line (exit status 2)
    error: type[IngestError] = IngestError


def csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


REJECTED = [
    Case("zip member not in the archive", "sse-trade",
         {"trades.csv": "\n".join((SSE_HEAD, SSE1)), "orders.csv": "x"}, None, None,
         "no member matches member = 'quotes.csv' (members: orders.csv, trades.csv)",
         {"member": "quotes.csv"}, cli=True),
    Case("zip member ambiguous", "sse-trade",
         {"a/trades.csv": "\n".join((SSE_HEAD, SSE1)),
          "b/trades.csv": "\n".join((SSE_HEAD, SSE2))}, None, None,
         "is ambiguous: it matches a/trades.csv, b/trades.csv", {"member": "trades.csv"}),
    Case("zip member option without a zip", "sse-trade", csv(SSE_HEAD, SSE1), None, "member",
         "no input is a zip", {"member": "trades.csv"}, error=MappingError),
    Case("filter column not in the header", "sse-trade", csv(SSE_HEAD, SSE1), 0, "Market",
         "filter column 'Market' is not in the header", {"filter": {"column": "Market",
                                                                    "in": ["SH"]}}),
    Case("filter removes every row", "sse-trade", csv(MIXED_HEAD, "SZ," + SSE1), None, None,
         "all 1 data rows were removed by the row filter",
         {"filter": {"column": "Market", "in": ["SH"]}}, cli=True),
    Case("bad value after filtered rows", "sse-trade",
         csv(MIXED_HEAD, "SZ," + SSE1, "SH," + SSE2.replace("8.00", "8.0x")), 2, "TradePrice",
         "not a number", {"filter": {"column": "Market", "in": ["SH"]}}),
    Case("filter with in and not_in", "sse-trade", csv(SSE_HEAD, SSE1), None, "filter.0",
         "exactly one of 'in' or 'not_in'",
         {"filter": {"column": "TradeBSFlag", "in": ["B"], "not_in": ["S"]}},
         error=MappingError),
    Case("constant market unknown", "minute-bars", csv(MIN_HEAD, MIN1.replace(".SZ", "")), 1,
         "[constants] market", "unknown code 'XX'", {"constants": {"market": "XX"}}),
    Case("constant date not a date", "minute-bars", csv(MIN_HEAD, MIN1).replace(
        b"date,", b"day,"), 1, "[constants] date", "not a date: 'tomorrow'",
         {"constants": {"date": "tomorrow"}}),
    Case("constant for a field the format lacks", "sse-trade", csv(SSE_HEAD, SSE1), None,
         "exec_type", "has no field 'exec_type' in [constants]",
         {"constants": {"exec_type": "F"}}, error=MappingError),
    Case("side_rule on a format without trades", "sse-order", csv(SSE_ORDER_HEAD, SSE_ORDER1),
         None, "side_rule", "side_rule applies to sse-trade and szse-trade",
         {"side_rule": "tick"}, error=MappingError),
    Case("flag rule for SZSE trades", "szse-trade", csv(SZSE_HEAD, SZSE1), None, "side_rule",
         "no BS-flag field", {"side_rule": "flag"}, error=MappingError),
    Case("row-order seq for daily bars", "daily-bars", csv(DAY_HEAD, DAY1), None, "seq_from",
         "has no sequence number", {"seq_from": "row_order"}, error=MappingError),
    Case("flag column missing without a side rule", "sse-trade",
         csv(SSE_HEAD.replace("TradeBSFlag,", ""), SSE1.replace(",B,", ",")), 0, "TradeBSFlag",
         "missing column for 'bs_flag'"),
    Case("three columns missing at once", "sse-trade",
         csv(SSE_HEAD.replace("TradePrice", "P").replace("TradeQty", "Q").replace(
             "TradeBuyNo", "BN"), SSE1), 0, "TradePrice",
         "missing columns for 'price' (looked for any of: TradePrice, LastPx, price, Price, "
         "成交价格, 成交价); 'volume' (looked for any of: TradeQty"),
    Case("SZSE trades given as sse-trade", "sse-trade",
         csv(SZSE_HEAD + ",BSFlag", SZSE1 + ",", "000001,20240102093001000,15,0,7,0.00,500,4,"),
         2, "LastPx", "looks like an SZSE trade file: use --format szse-trade", cli=True),
    Case("SSE orders given as szse-order", "szse-order", csv(SSE_ORDER_HEAD, SSE_ORDER1), 1,
         "OrdType", "looks like an SSE order file: use --format sse-order"),
    Case("trade volume overflows int64", "sse-trade",
         csv(SSE_HEAD, SSE1.replace(",200,1602", ",1e19,1602")), 1, "TradeQty",
         "overflow: volume 1e+19 is out of the int64 range"),
    Case("sequence number overflows int64", "sse-trade",
         csv(SSE_HEAD, SSE1.replace(",101,", ",9223372036854775808,")), 1, "ApplSeqNum",
         "overflow: '9223372036854775808' is out of the int64 range"),
    Case("daily volume overflows int64", "daily-bars",
         csv(DAY_HEAD, DAY1.replace(",1000,", ",1e20,")), 1, "volume", "overflow"),
    Case("minute volume in lots overflows", "minute-bars",
         csv(MIN_HEAD, MIN1.replace(",1000,", ",1e17,")), 1, "volume", "overflow",
         {"volume_multiplier": 100}),
    Case("same seq, different time", "sse-trade",
         csv(SSE_HEAD, SSE1, SSE1.replace("09:30:00.000", "09:30:00.250")), 2, "MDTime",
         "different ts (09:30:00.250 vs 09:30:00.000)"),
    Case("trade outside the sessions (policy error)", "sse-trade",
         csv(SSE_HEAD, SSE1.replace("09:30:00.000", "12:01:02.345")), 1, "MDTime",
         "trade stamped 12:01:02.345, outside the trading sessions",
         {"policies": {"outside_session": "error"}}),
    Case("minute bar outside the sessions (policy error)", "minute-bars",
         csv(MIN_HEAD, MIN1.replace("93100000", "80000000")), 1, "time",
         "bar time 08:00:00.000 outside the trading sessions",
         {"policies": {"outside_session": "error"}}),
]


@dataclass
class Repaired:
    name: str
    fmt: str
    content: bytes
    counts: dict[str, int]
    mapping: dict[str, Any] = field(default_factory=dict)


REPAIRED = [
    Repaired("continuous trades without a flag", "sse-trade",
             csv(SSE_HEAD, SSE1.replace(",B,", ",,"), SSE2.replace(",S,", ",N,")),
             {"trades_side_unknown": 2, "stock_days_side_unknown": 1}),
    Repaired("equal order numbers under the order-number rule", "sse-trade",
             csv(SSE_HEAD.replace("TradeBSFlag,", ""), SSE1.replace(",B,", ","),
                 SSE2.replace(",13,14,S,", ",14,14,")),
             {"trades_side_unknown": 1, "stock_days_side_unknown": 0},
             {"side_rule": "order_numbers"}),
    Repaired("rows of another market filtered out", "sse-trade",
             csv(MIXED_HEAD, "SH," + SSE1, "SZ," + SSE2.replace("600000", "000001")),
             {"rows_filtered_out": 1, "rows_written": 1},
             {"filter": {"column": "Market", "not_in": ["SZ"]}}),
    Repaired("auction prints only side 0", "sse-trade",
             csv(SSE_HEAD, SSE1.replace("09:30:00.000", "09:25:00.000").replace(",B,", ",N,"),
                 SSE2),
             {"trades_side_unknown": 0}),
]


def _write(tmp: Path, content: bytes | dict[str, str]) -> Path:
    if isinstance(content, dict):
        path = tmp / "in.zip"
        with zipfile.ZipFile(path, "w") as z:
            for name, text in content.items():
                z.writestr(name, text + "\n")
        return path
    path = tmp / "in.csv"
    path.write_bytes(content)
    return path


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with trades, minute and daily bars, and a run record next to them."""
    root = tmp_path_factory.mktemp("corpus3")
    store = root / "store"
    for i, (fmt, lines) in enumerate((("sse-trade", (SSE_HEAD, SSE1, SSE2)),
                                      ("daily-bars", (DAY_HEAD, DAY1)))):
        f = root / f"seed{i}.csv"
        f.write_text("\n".join(lines) + "\n")
        ingest(store, fmt, [f])
    (store / "run.json").write_text('{"steps": {}}\n')
    return store


def test_corpus_size() -> None:
    from test_ingest_invariants import CASES as INVARIANTS
    from test_ingest_malformed import CASES as MALFORMED

    names = [c.name for c in (*MALFORMED, *INVARIANTS, *REJECTED, *REPAIRED)]
    assert len(set(names)) == len(names) >= 60 + 10


@pytest.mark.parametrize("case", REJECTED, ids=[c.name for c in REJECTED])
def test_rejected(case: Case, seeded: Path, tmp_path: Path) -> None:
    path = _write(tmp_path, case.content)
    before = digest(seeded)
    with pytest.raises(case.error) as ei:
        ingest(seeded, case.fmt, [path], mapping=case.mapping)
    e = ei.value
    assert case.reason in str(e), str(e)
    assert e.row == case.row and e.column == case.column, str(e)
    if case.error is not MappingError:
        assert str(path) in e.file, str(e)
    assert digest(seeded) == before


@pytest.mark.parametrize("case", [c for c in REJECTED if c.cli],
                         ids=[c.name for c in REJECTED if c.cli])
def test_rejected_by_the_command_line(case: Case, seeded: Path, tmp_path: Path) -> None:
    path = _write(tmp_path, case.content)
    args = ["--format", case.fmt, "--in", str(path), "--store", str(seeded)]
    if case.mapping:
        m = tmp_path / "m.toml"
        m.write_text("\n".join(f"{k} = {_toml(v)}" for k, v in case.mapping.items()) + "\n")
        args += ["--mapping", str(m)]
    before = digest(seeded)
    res = subprocess.run([sys.executable, "-m", "fbgpu", "ingest", *args], capture_output=True,
                         text=True, env=ENV, timeout=300, check=False)
    assert res.returncode == 2, res.stdout + res.stderr
    assert case.reason in res.stderr and str(path) in res.stderr, res.stderr
    assert "the store was not changed" in res.stderr
    assert digest(seeded) == before


def _toml(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return f'"{v}"' if isinstance(v, str) else str(v)


@pytest.mark.parametrize("case", REPAIRED, ids=[c.name for c in REPAIRED])
def test_repaired_and_counted(case: Repaired, tmp_path: Path) -> None:
    path = _write(tmp_path, case.content)
    r = ingest(tmp_path / "s", case.fmt, [path], mapping=case.mapping)
    for rule, n in case.counts.items():
        assert r.counts.get(rule, 0) == n, (rule, r.counts)
    stored = Path(r.path).read_text()  # the report on disk holds the same counts
    for rule, n in case.counts.items():
        assert f'"{rule}": {n}' in stored
