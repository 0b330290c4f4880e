"""Bad input: every malformed file stops with an IngestError naming file, row and column, and
leaves the store byte-for-byte unchanged (every file hashed before and after)."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fbgpu.data.ingest import IngestError, ingest
from fbgpu.data.store import Store, ipc_bytes

CORPUS = Path(__file__).parent / "data" / "ingest"
HEAD = "SecurityID,TransactTime,ApplSeqNum,BidApplSeqNum,OfferApplSeqNum,LastPx,LastQty,ExecType"
ROW1 = "000001,20240102093000010,12,11,4,10.01,200,F"
ROW2 = "000001,20240102093001000,14,6,13,10.00,300,F"
ROW3 = "000001,20240102093002000,15,0,7,0.00,500,4"


def szse(*lines: str, head: str = HEAD) -> bytes:
    return ("\n".join([head, *lines]) + "\n").encode()


@dataclass
class Case:
    name: str
    content: bytes
    row: int | None
    column: str | None
    reason: str
    fmt: str = "szse-trade"
    suffix: str = ".csv"
    date: str | None = None
    mapping: dict | None = None


CASES = [
    Case("missing column", szse("000001,20240102093000010,12,11,4,200,F",
                                head=HEAD.replace("LastPx,", "")), 0, "LastPx", "missing column"),
    Case("renamed column", szse(ROW1, head=HEAD.replace("LastPx", "LastPrice")), 0, "LastPx",
         "missing column"),
    Case("unparsable price", szse(ROW1, ROW2.replace("10.00", "10.0x")), 2, "LastPx",
         "not a number"),
    Case("unparsable seq", szse(ROW1.replace(",12,", ",abc,")), 1, "ApplSeqNum",
         "not an integer"),
    Case("empty required value", szse(ROW1, ROW2.replace(",300,", ",,")), 2, "LastQty",
         "empty value"),
    Case("wrong encoding in header", ("代码,时间\n000001,09:30:00\n").encode("gbk"), 0, None,
         "encoding"),
    Case("wrong encoding in a value", szse(ROW1) + b"\xc6\xbd\xb0\xb2" + ROW2[6:].encode()
         + b"\n", 2, "SecurityID", "encoding"),
    Case("truncated last line", szse(ROW1, ROW2)[:-20], 2, None, "expected 8 fields"),
    Case("extra field", szse(ROW1, ROW2 + ",99"), 2, None, "expected 8 fields, got 9"),
    Case("empty file", b"", None, None, "empty file"),
    Case("header only", szse(), None, None, "no data rows"),
    Case("unknown ExecType", szse(ROW1, ROW2.replace(",F", ",X")), 2, "ExecType",
         "unknown code 'X'"),
    Case("zero price trade", szse(ROW1, ROW2.replace("10.00", "0")), 2, "LastPx",
         "not positive"),
    Case("negative volume", szse(ROW1, ROW2.replace(",300,", ",-300,")), 2, "LastQty",
         "not positive"),
    Case("fractional volume", szse(ROW1.replace(",200,", ",200.5,")), 1, "LastQty",
         "whole number"),
    Case("impossible time", szse(ROW1.replace("093000010", "256100000")), 1, "TransactTime",
         "not a valid time"),
    Case("garbage time", szse(ROW1.replace("20240102093000010", "yesterday")), 1,
         "TransactTime", "not an integer"),
    Case("conflicting duplicate seq", szse(ROW1, ROW1.replace("10.01", "10.02")), 2, "LastPx",
         "repeats"),
    Case("not a security code", szse(ROW1.replace("000001", "ABCDEF")), 1, "SecurityID",
         "not a security code"),
    Case("date differs from --date", szse(ROW1), 1, "TransactTime", "is for 2024-01-03",
         date="2024-01-03"),
    Case("no date anywhere", b"SecurityID,time,ApplSeqNum,BidApplSeqNum,OfferApplSeqNum,LastPx,"
         b"LastQty,ExecType\n000001,09:30:00.010,12,11,4,10.01,200,F\n", 1, None,
         "pass the date"),
    Case("outside session (policy error)", szse(ROW1.replace("093000010", "160000000")), 1,
         "TransactTime", "outside the trading sessions",
         mapping={"policies": {"outside_session": "error"}}),
    Case("duplicated header column", szse(ROW1 + ",1", head=HEAD + ",LastPx"), 0, "LastPx",
         "appears 2 times"),
    Case("7z archive", b"7z\xbc\xaf\x27\x1c", None, None, "not supported", suffix=".7z"),
    Case("corrupt zip", b"PK\x03\x04garbage", None, None, "not a valid zip", suffix=".zip"),
    Case("truncated gzip", gzip.compress(szse(ROW1, ROW2) * 50)[:60], None, None,
         "decompress", suffix=".csv.gz"),
    Case("sse add without side", b"MDDate,MDTime,SecurityID,ApplSeqNum,OrderNO,OrdType,"
         b"OrderPrice,Balance,OrderBSFlag\n2024.01.02,09:30:00.000,600000,5,3,A,8.0,100,N\n",
         1, "OrderBSFlag", "buy/sell side", fmt="sse-order"),
    Case("unknown sse order kind", b"MDDate,MDTime,SecurityID,ApplSeqNum,OrderNO,OrdType,"
         b"OrderPrice,Balance,OrderBSFlag\n2024.01.02,09:30:00.000,600000,5,3,Q,8.0,100,B\n",
         1, "OrdType", "unknown code 'Q'", fmt="sse-order"),
    Case("conflicting minute bars", b"symbol,date,time,open,high,low,close,volume,amount\n"
         b"000001.SZ,20240102,93100000,1,1.1,1,1,100,100\n"
         b"000001.SZ,20240102,93100000,1,1.1,1,1.1,100,100\n", 2, "close", "corrupt",
         fmt="minute-bars"),
    Case("daily symbol twice", b"date,symbol,open,high,low,close,volume,amount\n"
         b"20240102,000001.SZ,1,1,1,1,100,100\n20240102,000001.SZ,1,1,1,1,100,100\n", 2,
         "symbol", "two rows", fmt="daily-bars"),
    Case("bad mapping key", szse(ROW1), None, "no_such_option", "bad mapping option",
         mapping={"no_such_option": 1}),
    Case("mapping for a field the format lacks", szse(ROW1), None, "colour", "has no field",
         mapping={"columns": {"colour": "x"}}),
]


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seeded")
    ingest(root, "securities", [CORPUS / "securities.csv"])
    ingest(root, "szse-trade", [CORPUS / "szse_trade_quirks.csv"])
    ingest(root, "sse-trade", [CORPUS / "sse_trade_quirks.csv"])
    return root


def test_at_least_twenty_distinct_cases() -> None:
    assert len({c.name for c in CASES}) == len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_cleanly(case: Case, seeded: Path, tmp_path: Path) -> None:
    path = tmp_path / f"bad{case.suffix}"
    path.write_bytes(case.content)
    before = digest(seeded)
    with pytest.raises(IngestError) as ei:
        ingest(seeded, case.fmt, [path], date=case.date, mapping=case.mapping)
    e = ei.value
    assert case.reason in str(e), str(e)
    assert e.row == case.row, str(e)
    if case.column is not None:
        assert e.column == case.column, str(e)
    if case.mapping is None:
        assert str(path) in e.file, str(e)
    assert digest(seeded) == before


def test_schema_mismatch_with_existing_partition(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    ingest(store, "sse-trade", [CORPUS / "sse_trade_quirks.csv"])
    part = store.partition_path("trades", "2024-01-02")
    t = store.read("trades", "2024-01-02")
    t = t.set_column(t.schema.get_field_index("volume"), "volume",
                     t.column("volume").cast(pa.float64()))
    if part.suffix == ".arrow":  # the store's default hot format
        part.write_bytes(ipc_bytes(t).to_pybytes())
    else:
        pq.write_table(t, part)
    before = digest(store.root)
    with pytest.raises(IngestError) as ei:
        ingest(store, "sse-trade", [CORPUS / "sse_trade_quirks.csv"])
    assert ei.value.column == "volume" and "schema mismatch" in str(ei.value)
    assert ei.value.file == str(part)
    assert digest(store.root) == before


def test_policy_drop_counts_instead_of_failing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(szse(ROW1, ROW2.replace("10.00", "0")))
    r = ingest(tmp_path / "s", "szse-trade", [bad], mapping={"policies": {"nonpositive": "drop"}})
    assert r.counts["nonpositive_price_or_volume"] == 1 and r.counts["rows_written"] == 1


def test_cli_exit_code_and_message(tmp_path: Path, seeded: Path) -> None:
    from typer.testing import CliRunner

    from fbgpu.cli import app
    from fbgpu.cli import ingest as ingest_cli

    ingest_cli.register(app)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(szse(ROW1, ROW2.replace("10.00", "10.0x")))
    before = digest(seeded)
    res = CliRunner().invoke(app, ["ingest", "--format", "szse-trade", "--in", str(bad),
                                   "--store", str(seeded)])
    assert res.exit_code == 2
    assert "row 2" in res.output and "LastPx" in res.output and "not changed" in res.output
    assert digest(seeded) == before
    res = CliRunner().invoke(app, ["ingest", "--format", "nope", "--in", str(bad),
                                   "--store", str(seeded)])
    assert res.exit_code != 0
