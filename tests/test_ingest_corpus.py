"""Ingest of the hand-written vendor corpus (tests/data/ingest/): every format and quirk.

Each file exercises quirks named in its rows (auction prints with side N, cancellations, duplicated
and out-of-order sequence numbers, market orders with price 0, the 11:30 and 15:00 boundaries,
Chinese headers, ASCII-ordinal codes, a TOML mapping for an unknown layout); the expected canonical
rows are written out by hand below.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest

from fbgpu.data.bars import hhmm_to_ns
from fbgpu.data.ingest import ingest
from fbgpu.data.store import Store

CORPUS = Path(__file__).parent / "data" / "ingest"
D = dt.date(2024, 1, 2)


def rows(store: Store, table: str, symbol: str | None = None) -> list[dict]:
    out = store.read(table, D).to_pylist()
    return [r for r in out if symbol is None or r["symbol"] == symbol]


def ns(h: int, m: int, s: float = 0.0) -> int:
    return hhmm_to_ns(h, m, s)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def test_szse_trades_cancels_duplicates_reordering_sessions(store: Store) -> None:
    r = ingest(store, "szse-trade", [CORPUS / "szse_trade_quirks.csv"])
    c = r.counts
    assert c["rows_read"] == 12
    assert c["cancellations_separated"] == 2
    assert c["duplicates_dropped"] == 1  # seq 14 twice, identical
    assert c["rows_reordered"] == 1  # seq 13 after 14 (the cancel 15 goes to its own table)
    assert c["outside_session"] == 1  # the 15:30 print
    trades = rows(store, "trades", "000001.SZ")
    got = [(t["seq"], t["ts"], t["price"], t["volume"], t["buy_order_id"], t["sell_order_id"],
            t["side"]) for t in trades]
    assert got == [
        (10, ns(9, 25), 10.00, 1000, 3, 5, 0),  # opening auction: side 0
        (12, ns(9, 30, 0.010), 10.01, 200, 11, 4, 1),  # bid seq later: buyer-initiated
        (13, ns(9, 30, 0.5), 10.02, 100, 9, 8, 1),
        (14, ns(9, 30, 1), 10.00, 300, 6, 13, -1),
        (20, ns(11, 30), 10.03, 100, 19, 18, 1),
        (21, ns(13, 0), 10.02, 200, 17, 20, -1),
        (30, ns(15, 0), 10.05, 400, 25, 26, 0),  # closing auction: side 0
    ]
    assert all(math.isclose(t["amount"], t["price"] * t["volume"]) for t in trades)
    # A numeric code that lost its zeros (2 -> 000002) and ASCII-ordinal ExecTypes (70 F, 52 '4').
    assert [t["seq"] for t in rows(store, "trades", "000002.SZ")] == [5]
    cancels = [(x["symbol"], x["seq"], x["order_id"], x["volume"], x["side"])
               for x in rows(store, "cancels")]
    assert cancels == [("000001.SZ", 15, 7, 500, -1), ("000002.SZ", 6, 2, 100, 1)]
    # Minute bars and daily rows derived from the trades.
    m = store.read_minute(D)
    i = list(m.symbols).index("000001.SZ")
    assert m["volume"][i, 0] == 1600 and m["num_trades"][i, 0] == 4  # auction folded into 0
    assert m["volume"][i, 119] == 100 and m["volume"][i, 120] == 200
    assert m["volume"][i, 239] == 400 and m["close"][i, 239] == 10.05
    daily = {d["symbol"]: d for d in rows(store, "daily")}
    assert daily["000001.SZ"]["volume"] == 2300 and daily["000001.SZ"]["close"] == 10.05
    assert not daily["000001.SZ"]["suspended"] and math.isnan(daily["000001.SZ"]["pre_close"])


def test_szse_orders_chinese_headers_market_orders(store: Store) -> None:
    ingest(store, "szse-order", [CORPUS / "szse_order_cn.csv"])
    got = [(o["seq"], o["order_id"], o["price"], o["volume"], o["side"], o["order_type"])
           for o in rows(store, "orders")]
    assert got[0] == (3, 3, 10.00, 100, 1, 0)
    assert got[1][:2] == (4, 4) and math.isnan(got[1][2]) and got[1][3:] == (200, -1, 1)
    assert math.isnan(got[2][2]) and got[2][5] == 2  # OrdType U: best own side
    assert got[3] == (6, 6, 10.02, 400, -1, 0)  # ASCII ordinals 50/50: sell, limit


def test_sse_trades_flags_and_boundaries(store: Store) -> None:
    ingest(store, "sse-trade", [CORPUS / "sse_trade_quirks.csv"])
    trades = rows(store, "trades")
    assert [t["side"] for t in trades] == [0, 1, -1, -1, 1, 0]
    assert trades[3]["ts"] == ns(11, 30, 0.03) and trades[-1]["ts"] == ns(15, 0, 0.69)
    m = store.read_minute(D)
    assert m["num_trades"][0, 119] == 2  # 11:29:59.99 and 11:30:00.03 both in bar 119
    assert m["num_trades"][0, 239] == 1 and m["close"][0, 239] == 8.03
    assert m["volume"].sum() == 2200


def test_sse_orders_adds_deletes_status(store: Store) -> None:
    r = ingest(store, "sse-order", [CORPUS / "sse_order_quirks.csv"])
    assert r.counts["status_rows_skipped"] == 1 and r.counts["cancellations_separated"] == 1
    assert [(o["order_id"], o["volume"], o["side"]) for o in rows(store, "orders")] == [
        (11, 1000, 1), (12, 5000, -1), (14, 100, -1)]
    assert [(c["order_id"], c["volume"], c["side"]) for c in rows(store, "cancels")] == [
        (12, 1000, -1)]


def test_sse_tick_merged_stream(store: Store) -> None:
    r = ingest(store, "sse-tick", [CORPUS / "sse_tick.csv"])
    assert r.counts["status_rows_skipped"] == 1
    assert [(o["order_id"], o["side"], o["price"]) for o in rows(store, "orders")] == [
        (101, 1, 50.0), (102, -1, 50.1), (103, 1, 50.1)]
    assert [(c["order_id"], c["side"], c["volume"]) for c in rows(store, "cancels")] == [
        (102, -1, 200)]
    t = rows(store, "trades")
    assert [(x["buy_order_id"], x["sell_order_id"], x["side"], x["amount"]) for x in t] == [
        (103, 102, 1, 5010.0)]
    assert r.counts["trades_unknown_order_id"] == 0  # the stream carries both orders


def test_toml_mapping_for_an_unknown_layout(store: Store) -> None:
    ingest(store, "sse-trade", [CORPUS / "custom_vendor.csv"],
           mapping=CORPUS / "custom_vendor.toml")
    t = rows(store, "trades")
    assert [(x["symbol"], x["seq"], x["ts"], x["side"]) for x in t] == [
        ("600010.SH", 7, ns(9, 30, 0.123), 1), ("600010.SH", 8, ns(9, 30, 1), -1)]


def test_vendor_minute_bars_fold_and_fill(store: Store) -> None:
    ingest(store, "minute-bars", [CORPUS / "minute_cn.csv"])
    m = store.read_minute(D)
    # 09:30 (auction) and 09:31 bars fold into bar 0; bar 1 (no vendor bar) is filled.
    assert (m["open"][0, 0], m["high"][0, 0], m["low"][0, 0], m["close"][0, 0]) == (
        10.00, 10.05, 9.98, 10.02)
    assert m["volume"][0, 0] == 1500 and m["amount"][0, 0] == 15010.0
    assert m["volume"][0, 1] == 0 and m["close"][0, 1] == 10.02 and m["open"][0, 1] == 10.02
    assert m["close"][0, 2] == 10.03 and m["close"][0, 239] == 10.05
    assert np.isnan(m["num_trades"]).all()  # the vendor gives no trade counts: nulls
    d = rows(store, "daily")[0]
    assert (d["open"], d["high"], d["low"], d["close"], d["volume"]) == (
        10.00, 10.05, 9.98, 10.05, 2200)


def test_daily_securities_weights_and_limits(store: Store) -> None:
    r = ingest(store, "securities", [CORPUS / "securities.csv"])
    assert r.counts["non_stock_rows_skipped"] == 1
    r = ingest(store, "daily-bars", [CORPUS / "daily_en.csv"])
    assert r.counts["non_stock_rows_skipped"] == 1  # the CSI 300 index row
    d = {x["symbol"]: x for x in rows(store, "daily")}
    a = d["000001.SZ"]
    assert (a["pre_close"], a["limit_up"], a["limit_down"], a["adj_factor"]) == (
        9.95, 10.95, 8.96, 1.5)  # 9.95 x 1.1 = 10.945 rounds half up
    assert a["industry"] == "银行" and not a["st"]
    assert d["600000.SH"]["adj_factor"] == 1.0  # empty: the previous factor, else 1
    assert math.isclose(a["vwap"], 22050.0 / 2200)
    r = ingest(store, "index-weights", [CORPUS / "weights_wide.csv"], index_name="csi500")
    w = rows(store, "index_weights")
    assert [(x["index"], x["symbol"], x["weight"]) for x in w] == [
        ("csi500", "000001.SZ", 0.6), ("csi500", "600000.SH", 0.3)]
    assert r.details["index_weight_sums"]["max"] == pytest.approx(0.9)
    assert store.read("index_weights", dt.date(2024, 1, 3)).num_rows == 1


def test_trades_after_vendor_daily_keep_vendor_rows_and_check_limits(store: Store) -> None:
    ingest(store, "daily-bars", [CORPUS / "daily_en.csv"])
    r = ingest(store, "sse-trade", [CORPUS / "sse_trade_quirks.csv"])
    d = {x["symbol"]: x for x in rows(store, "daily")}
    assert d["600000.SH"]["volume"] == 2300  # the vendor row, not the derived one
    assert r.counts["outside_limit_band"] == 0  # 7.99..8.03 within 7.20..8.80


def test_suspended_stock_gets_a_row(store: Store) -> None:
    ingest(store, "securities", [CORPUS / "securities.csv"])
    ingest(store, "szse-trade", [CORPUS / "szse_trade_quirks.csv"])
    # The next day only 000002.SZ trades: 000001.SZ (listed, in yesterday's daily) is suspended.
    text = (CORPUS / "szse_trade_quirks.csv").read_text().splitlines()
    nxt = [text[0]] + [ln.replace("20240102", "20240103") for ln in text[1:]
                       if ln.startswith("2,")]
    f = store.root.parent / "next.csv"
    f.write_text("\n".join(nxt) + "\n")
    r = ingest(store, "szse-trade", [f])
    assert r.counts["suspended_rows_added"] == 1
    d = {x["symbol"]: x for x in store.read("daily", dt.date(2024, 1, 3)).to_pylist()}
    s = d["000001.SZ"]
    assert s["suspended"] and s["volume"] == 0 and s["close"] == s["pre_close"] == 10.05
    assert d["000002.SZ"]["pre_close"] == 20.5  # known at T: the previous close
    assert d["000002.SZ"]["limit_up"] == 22.55


def test_reingest_is_idempotent_and_correction_replaces(store: Store, tmp_path: Path) -> None:
    f = CORPUS / "sse_trade_quirks.csv"
    ingest(store, "sse-trade", [f])

    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(store.root)): p.read_bytes()
                for p in store.root.rglob("*") if p.is_file() and "ingest_reports" not in p.parts}

    first = snapshot()
    ingest(store, "sse-trade", [f])
    assert snapshot() == first
    fixed = tmp_path / "fixed.csv"
    fixed.write_text(f.read_text().replace("8.03,500,4015", "8.04,500,4020"))
    ingest(store, "sse-trade", [fixed])
    assert rows(store, "trades")[-1]["price"] == 8.04
    assert store.read("trades", D).num_rows == 6


def test_merge_by_symbol_and_replace(store: Store) -> None:
    ingest(store, "szse-trade", [CORPUS / "szse_trade_quirks.csv"])
    ingest(store, "sse-trade", [CORPUS / "sse_trade_quirks.csv"])
    assert {x["symbol"] for x in rows(store, "trades")} == {"000001.SZ", "000002.SZ",
                                                             "600000.SH"}
    assert len(store.read_minute(D).symbols) == 3
    ingest(store, "sse-trade", [CORPUS / "sse_trade_quirks.csv"], mapping={"replace": True})
    assert {x["symbol"] for x in rows(store, "trades")} == {"600000.SH"}
    assert list(store.read_minute(D).symbols) == ["600000.SH"]


def test_gzip_and_zip_inputs(store: Store, tmp_path: Path) -> None:
    import gzip
    import zipfile

    src = (CORPUS / "sse_trade_quirks.csv").read_bytes()
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(src))
    zp = tmp_path / "t.zip"
    with zipfile.ZipFile(zp, "w") as z:
        z.writestr("inner/t.csv", src)
    ingest(store, "sse-trade", [gz])
    a = store.read("trades", D)
    ingest(store, "sse-trade", [zp])
    assert store.read("trades", D).equals(a)


def test_parquet_input(store: Store, tmp_path: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    t = pacsv.read_csv(CORPUS / "minute_cn.csv")
    pq.write_table(t, tmp_path / "bars.parquet")
    ingest(store, "minute-bars", [tmp_path / "bars.parquet"])
    assert store.read_minute(D)["volume"].sum() == 2200


def test_gbk_file_with_encoding_option(store: Store, tmp_path: Path) -> None:
    f = tmp_path / "gbk.csv"
    f.write_bytes((CORPUS / "szse_order_cn.csv").read_text(encoding="utf-8").encode("gbk"))
    ingest(store, "szse-order", [f], mapping={"encoding": "gbk"})
    assert store.read("orders", D).num_rows == 4
