"""Mapping features for vendor layouts that used to need hand preprocessing (issue 13, item 3),
the side-unknown count, and error quality (format hints, all missing columns at once, readable
times, int64 overflow).

Every feature is exercised on a tiny file written here; each has a worked example in
docs/ingest.md ("Mapping features"). One ingest and two rejections run through the real command
line as subprocesses.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fbgpu.data.bars import hhmm_to_ns
from fbgpu.data.ingest import IngestError, MappingError, ingest
from fbgpu.data.store import Store

ENV = {**os.environ, "FBGPU_PROGRESS": "0", "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
D = "2024-01-02"

# SSE trades without a sequence number and without a BS flag (a common vendor export).
NOSEQ_HEAD = "SecurityID,MDDate,MDTime,TradeBuyNo,TradeSellNo,TradePrice,TradeQty"
NOSEQ = [
    "600000,20240102,09:25:00.000,5,3,8.00,1000",   # opening auction: side 0
    "600000,20240102,09:30:00.010,11,4,8.01,200",   # buy no > sell no: buyer-initiated
    "600000,20240102,09:30:01.000,6,13,8.00,300",   # sell no higher: seller-initiated
    "600000,20240102,09:30:02.000,14,12,8.00,100",  # equal price (tick rule: previous side)
    "600000,20240102,09:30:03.000,15,15,8.02,100",  # equal numbers: unknown under that rule
    "600000,20240102,15:00:00.500,20,21,8.03,400",  # closing auction: side 0
]


def write(path: Path, lines: list[str] | tuple[str, ...]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def fbgpu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fbgpu", *args], capture_output=True, text=True,
                          env=ENV, timeout=300, check=False)


def trades(store: Path | Store) -> list[dict]:
    return Store(store).read("trades", D).to_pylist() if not isinstance(store, Store) else \
        store.read("trades", D).to_pylist()


# ------------------------------------------------------------------ seq, side rules, constants

def test_seq_from_row_order_and_side_from_order_numbers(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", [NOSEQ_HEAD, *NOSEQ])
    r = ingest(tmp_path / "s", "sse-trade", [f],
               mapping={"seq_from": "row_order", "side_rule": "order_numbers"})
    got = [(t["seq"], t["side"]) for t in trades(tmp_path / "s")]
    assert got == [(1, 0), (2, 1), (3, -1), (4, 1), (5, 0), (6, 0)]
    # Equal order numbers in the continuous session: side unknown, counted and warned.
    assert r.counts["trades_side_unknown"] == 1
    assert r.counts["stock_days_side_unknown"] == 0  # other trades of the day have a side
    assert any("no side" in n for n in r.notes)


def test_tick_rule(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", [NOSEQ_HEAD, *NOSEQ])
    ingest(tmp_path / "s", "sse-trade", [f], mapping={"seq_from": "row_order",
                                                      "side_rule": "tick"})
    # 8.00 (auction) -> 8.01 up (+1) -> 8.00 down (-1) -> 8.00 zero tick (-1) -> 8.02 up (+1);
    # auction prints get 0 whatever the tick says.
    assert [t["side"] for t in trades(tmp_path / "s")] == [0, 1, -1, -1, 1, 0]


def test_row_order_continues_over_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", [NOSEQ_HEAD, *NOSEQ[:3]])
    b = write(tmp_path / "b.csv", [NOSEQ_HEAD, *NOSEQ[3:]])
    ingest(tmp_path / "s", "sse-trade", [a, b], mapping={"seq_from": "row_order",
                                                         "side_rule": "order_numbers"})
    assert [t["seq"] for t in trades(tmp_path / "s")] == [1, 2, 3, 4, 5, 6]


def test_constants_exchange_and_date(tmp_path: Path) -> None:
    head = "code,time,open,high,low,close,volume,amount"
    f = write(tmp_path / "m.csv", [head, "1,0931,10,10.1,9.9,10,100,1000"])
    ingest(tmp_path / "s", "minute-bars", [f],
           mapping={"constants": {"exchange": "SH", "date": "2024-01-02"}})
    assert list(Store(tmp_path / "s").read_minute(D).symbols) == ["000001.SH"]


def test_unflagged_sse_file_counts_side_unknown(tmp_path: Path) -> None:
    """An SSE file whose flag column is empty: every continuous trade has side 0, the stock-day
    is side-unknown (its active-buying factors will be NaN), counted and noted."""
    head = "SecurityID,MDDate,MDTime,ApplSeqNum,TradeBuyNo,TradeSellNo,TradeBSFlag,TradePrice," \
        "TradeQty"
    f = write(tmp_path / "t.csv", [head, "600000,20240102,09:30:00.010,1,11,4,,8.01,200",
                                   "600000,20240102,09:31:00.000,2,6,13,,8.00,300"])
    r = ingest(tmp_path / "s", "sse-trade", [f])
    assert r.counts["trades_side_unknown"] == 2 and r.counts["stock_days_side_unknown"] == 1
    assert r.details["side_unknown_stock_days"] == ["2024-01-02/600000.SH"]


# ------------------------------------------------------------------ row filters

MIXED_HEAD = "Market,SecurityID,MDDate,MDTime,ApplSeqNum,TradeBuyNo,TradeSellNo,TradeBSFlag," \
    "TradePrice,TradeQty"
MIXED = [
    "SZ,000001,20240102,09:30:00.000,1,11,4,B,10.01,200",
    "SH,600000,20240102,09:30:00.010,2,11,4,B,8.01,200",
    "SZ,000001,20240102,09:30:01.000,3,6,13,S,10.00,300",
    "SH,600000,20240102,09:30:01.000,4,6,13,S,8.00,300",
]


def test_row_filter_keeps_one_market(tmp_path: Path) -> None:
    f = write(tmp_path / "mixed.csv", [MIXED_HEAD, *MIXED])
    r = ingest(tmp_path / "s", "sse-trade", [f],
               mapping={"filter": {"column": "Market", "in": ["SH"]}})
    assert {t["symbol"] for t in trades(tmp_path / "s")} == {"600000.SH"}
    assert r.counts["rows_filtered_out"] == 2 and r.counts["rows_read"] == 2
    r2 = ingest(tmp_path / "s2", "sse-trade", [f],
                mapping={"filter": [{"column": "Market", "not_in": ["SH"]}]})
    assert {t["symbol"] for t in trades(tmp_path / "s2")} == {"000001.SZ"}
    assert r2.counts["rows_filtered_out"] == 2


def test_row_filter_keeps_file_row_numbers_in_errors(tmp_path: Path) -> None:
    bad = [*MIXED, "SH,600000,20240102,09:30:02.000,5,6,13,S,8.0x,300"]
    f = write(tmp_path / "mixed.csv", [MIXED_HEAD, *bad])
    with pytest.raises(IngestError) as ei:
        ingest(tmp_path / "s", "sse-trade", [f],
               mapping={"filter": {"column": "Market", "in": ["SH"]}})
    assert ei.value.row == 5 and ei.value.column == "TradePrice", str(ei.value)


# ------------------------------------------------------------------ zip members

def _zip(path: Path, members: dict[str, list[str]]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, lines in members.items():
            z.writestr(name, "\n".join(lines) + "\n")
    return path


def test_zip_member_selection(tmp_path: Path) -> None:
    orders = ["SecurityID,MDDate,MDTime,ApplSeqNum,OrderNO,OrdType,OrderPrice,Balance,"
              "OrderBSFlag", "600000,20240102,09:30:00.000,5,3,A,8.0,100,B"]
    z = _zip(tmp_path / "day.zip", {"day/trades_20240102.csv": [MIXED_HEAD, *MIXED],
                                    "day/orders_20240102.csv": orders,
                                    "day/readme.txt": ["not a table"]})
    r = ingest(tmp_path / "s", "sse-trade", [z], mapping={"member": "trades_*.csv"})
    assert r.files == [f"{z}!day/trades_20240102.csv"]
    r = ingest(tmp_path / "s", "sse-order", [z], mapping={"member": "orders_20240102.csv"})
    assert r.counts["rows_written"] == 1


# ------------------------------------------------------------------ command line (subprocess)

def test_cli_mapping_features_and_rejections(tmp_path: Path) -> None:
    z = _zip(tmp_path / "mixed.zip", {"trades.csv": [MIXED_HEAD, *MIXED], "notes.txt": ["x"]})
    m = write(tmp_path / "m.toml", ['member = "trades.csv"', 'side_rule = "order_numbers"',
                                    'filter = {column = "Market", in = ["SH"]}'])
    store = tmp_path / "s"
    res = fbgpu("ingest", "--format", "sse-trade", "--in", str(z), "--store", str(store),
                "--mapping", str(m))
    assert res.returncode == 0, res.stderr
    assert {t["symbol"] for t in trades(store)} == {"600000.SH"}
    before = digest(store)
    # A member that is not in the archive: rejected input, the members listed.
    write(m, ['member = "orders.csv"'])
    res = fbgpu("ingest", "--format", "sse-trade", "--in", str(z), "--store", str(store),
                "--mapping", str(m))
    assert res.returncode == 2, res.stderr
    assert "no member matches member = 'orders.csv'" in res.stderr
    assert "notes.txt, trades.csv" in res.stderr and "the store was not changed" in res.stderr
    # An SZSE file given as sse-trade: the hint names the right format.
    szse = write(tmp_path / "szse.csv", [
        "SecurityID,TransactTime,ApplSeqNum,BidApplSeqNum,OfferApplSeqNum,LastPx,LastQty,"
        "ExecType", "000001,20240102093000010,12,11,4,10.01,200,F"])
    res = fbgpu("ingest", "--format", "sse-trade", "--in", str(szse), "--store", str(store))
    assert res.returncode == 2, res.stderr
    assert "looks like an SZSE trade file: use --format szse-trade" in res.stderr
    assert digest(store) == before


# ------------------------------------------------------------------ error quality

SZSE_TRADE = ["SecurityID,SecurityIDSource,TransactTime,ApplSeqNum,BidApplSeqNum,"
              "OfferApplSeqNum,LastPx,LastQty,ExecType,BSFlag",
              "000001,102,20240102093000010,12,11,4,10.01,200,F,",
              "000001,102,20240102093001000,15,0,7,0.00,500,4,"]
SSE_TRADE = ["MDDate,MDTime,SecurityID,ApplSeqNum,TradeBuyNo,TradeSellNo,TradeBSFlag,TradePrice,"
             "TradeQty,TradeMoney", "2024.01.02,09:30:00.000,600000,101,13,12,B,8.01,200,1602"]
SZSE_ORDER = ["SecurityID,TransactTime,ApplSeqNum,Price,OrderQty,Side,OrdType",
              "000001,20240102093000010,3,10.00,100,1,2"]
SSE_ORDER = ["MDDate,MDTime,SecurityID,ApplSeqNum,OrderNO,OrdType,OrderPrice,OrderQty,"
             "OrderBSFlag", "2024.01.02,09:30:00.000,600000,5,3,A,8.0,100,B"]
SSE_TICK = ["MDDate,MDTime,SecurityID,BizIndex,Type,BuyOrderNO,SellOrderNO,Price,Qty,TickBSFlag",
            "2024.01.02,09:30:00.000,600000,1,A,101,0,8.00,100,B"]


@pytest.mark.parametrize(("lines", "fmt", "right"), [
    (SZSE_TRADE, "sse-trade", "szse-trade"),   # fits sse-trade by header; the rows are SZSE
    (SSE_TRADE, "szse-trade", "sse-trade"),
    (SZSE_ORDER, "sse-order", "szse-order"),
    (SSE_ORDER, "szse-order", "sse-order"),    # fits szse-order by header; the rows are SSE
    (SZSE_ORDER, "szse-trade", "szse-order"),
    (SSE_TICK, "sse-trade", "sse-tick"),
], ids=["szse trades as sse", "sse trades as szse", "szse orders as sse", "sse orders as szse",
        "szse orders as trades", "sse merged ticks as trades"])
def test_hint_names_the_right_format(lines: list[str], fmt: str, right: str,
                                     tmp_path: Path) -> None:
    f = write(tmp_path / "x.csv", lines)
    with pytest.raises(IngestError) as ei:
        ingest(tmp_path / "s", fmt, [f])
    assert f"use --format {right}" in str(ei.value), str(ei.value)
    ingest(tmp_path / "s", right, [f])  # and the named format takes it


def test_no_hint_for_a_plain_data_error(tmp_path: Path) -> None:
    f = write(tmp_path / "x.csv", [SSE_TRADE[0], SSE_TRADE[1].replace("8.01", "8.0x")])
    with pytest.raises(IngestError) as ei:
        ingest(tmp_path / "s", "sse-trade", [f])
    assert "--format" not in str(ei.value)


def test_all_missing_columns_in_one_message(tmp_path: Path) -> None:
    head = SSE_TRADE[0].replace("TradePrice", "Px").replace("TradeQty", "Qty")
    f = write(tmp_path / "x.csv", [head, SSE_TRADE[1]])
    with pytest.raises(IngestError) as ei:
        ingest(tmp_path / "s", "sse-trade", [f])
    msg = str(ei.value)
    assert ei.value.row == 0 and ei.value.column == "TradePrice"
    assert "missing columns for 'price'" in msg and "'volume' (looked for" in msg


def test_times_in_messages_are_clock_times(tmp_path: Path) -> None:
    a = SSE_TRADE[1]
    b = a.replace("09:30:00.000", "09:30:01.250")
    f = write(tmp_path / "x.csv", [SSE_TRADE[0], a, b])
    with pytest.raises(IngestError) as ei:
        ingest(tmp_path / "s", "sse-trade", [f])
    assert "(09:30:01.250 vs 09:30:00.000)" in str(ei.value), str(ei.value)
    assert str(hhmm_to_ns(9, 30)) not in str(ei.value)


@pytest.mark.parametrize(("old", "new", "column"), [
    (",200,1602", ",9.3e18,1602", "TradeQty"),
    (",101,", ",99999999999999999999,", "ApplSeqNum"),
], ids=["volume", "seq"])
def test_int64_overflow_is_named(old: str, new: str, column: str, tmp_path: Path) -> None:
    f = write(tmp_path / "x.csv", [SSE_TRADE[0], SSE_TRADE[1].replace(old, new)])
    with pytest.raises(IngestError) as ei:
        ingest(tmp_path / "s", "sse-trade", [f])
    msg = str(ei.value)
    assert "overflow" in msg and "int64 range" in msg and ei.value.column == column, msg
    assert "-9223372036854775808" not in msg


# ------------------------------------------------------------------ mapping errors

@pytest.mark.parametrize(("mapping", "column", "reason"), [
    ({"side_rule": "flag"}, "side_rule", "no BS-flag field"),
    ({"seq_from": "row_order"}, "seq_from", "has no sequence number"),
    ({"constants": {"colour": "x"}}, "colour", "has no field 'colour' in [constants]"),
    ({"constants": {"symbol": "1"}, "columns": {"symbol": "code"}}, "symbol", "both a column"),
    ({"filter": {"column": "Market", "in": ["SH"], "not_in": ["SZ"]}}, "filter.0",
     "exactly one of 'in' or 'not_in'"),
    ({"filter": {"column": "Market", "in": ["SH"], "eval": "1"}}, "filter.0.eval",
     "bad mapping option"),
], ids=["flag rule without a flag field", "row order for bars", "unknown constant field",
        "column and constant", "filter with in and not_in", "filter with an unknown key"])
def test_mapping_errors(mapping: dict, column: str, reason: str, tmp_path: Path) -> None:
    fmt = "minute-bars" if "seq_from" in mapping else "szse-trade"
    f = write(tmp_path / "x.csv", SZSE_TRADE)
    with pytest.raises(MappingError) as ei:
        ingest(tmp_path / "s", fmt, [f], mapping=mapping)
    assert ei.value.column == column and reason in str(ei.value), str(ei.value)
    assert not (tmp_path / "s" / "trades").exists()


def test_row_filter_on_parquet(tmp_path: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    f = write(tmp_path / "mixed.csv", [MIXED_HEAD, *MIXED])
    pq.write_table(pacsv.read_csv(f), tmp_path / "mixed.parquet")
    r = ingest(tmp_path / "s", "sse-trade", [tmp_path / "mixed.parquet"],
               mapping={"filter": {"column": "Market", "in": ["SZ"]}})
    assert {t["symbol"] for t in trades(tmp_path / "s")} == {"000001.SZ"}
    assert r.counts["rows_filtered_out"] == 2


def test_minute_file_given_as_daily_bars_gets_a_hint(tmp_path: Path) -> None:
    head = "symbol,date,time,open,high,low,close,volume,amount"
    f = write(tmp_path / "m.csv", [head, "000001.SZ,20240102,0931,10,10.1,9.9,10,100,1000",
                                   "000001.SZ,20240102,0932,10,10.1,9.9,10,100,1000"])
    with pytest.raises(IngestError) as ei:
        ingest(tmp_path / "s", "daily-bars", [f])
    assert "two rows" in str(ei.value) and "use --format minute-bars" in str(ei.value)


def test_same_input_twice_is_rejected(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", [NOSEQ_HEAD, *NOSEQ])
    with pytest.raises(IngestError, match="given twice"):
        ingest(tmp_path / "s", "sse-trade", [f, f], mapping={"seq_from": "row_order",
                                                             "side_rule": "order_numbers"})


def test_unflagged_file_end_to_end_factor_is_nan_not_zero(tmp_path: Path) -> None:
    """The issue's case: a file whose flag column is empty made early_active_buy_perc 0.0.
    Now it is NaN for that stock-day; the order-number rule on the same file gives the value."""
    import datetime as dt
    import math

    from fbgpu.factors import compute_factors

    head = "SecurityID,MDDate,MDTime,ApplSeqNum,TradeBuyNo,TradeSellNo,TradeBSFlag,TradePrice," \
        "TradeQty"
    rows = [f"600000,20240102,09:{30 + i // 6:02d}:{i % 6 * 10:02d}.000,{i + 1},"
            f"{100 + i if i % 3 else 10},{50 + i},,{8.00 + 0.01 * (i % 4):.2f},{100 * (i + 1)}"
            for i in range(24)]
    f = write(tmp_path / "t.csv", [head, *rows])
    date = [dt.date(2024, 1, 2)]
    name = "early_active_buy_perc"
    ingest(tmp_path / "flagless", "sse-trade", [f])
    v = compute_factors(Store(tmp_path / "flagless"), date, [name], backend="cpu").to_numpy()
    assert math.isnan(float(v[0, 0, 0]))
    ingest(tmp_path / "rule", "sse-trade", [f], mapping={"side_rule": "order_numbers"})
    v = compute_factors(Store(tmp_path / "rule"), date, [name], backend="cpu").to_numpy()
    # Buy number > sell number on 16 of the 24 trades (i % 3 != 0): their share of the amount.
    amount = [(8.00 + 0.01 * (i % 4)) * 100 * (i + 1) for i in range(24)]
    want = sum(a for i, a in enumerate(amount) if i % 3) / sum(amount)
    assert math.isclose(float(v[0, 0, 0]), want, rel_tol=1e-9)
