"""qlib binary importer/exporter: hand-computed un-adjustment, symbols, gap rows, round trip,
bad files -> clear error + non-zero exit + store untouched (CLI as a subprocess)."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbgpu.data.ingest import IngestError
from fbgpu.data.ingest.qlib import (
    export_qlib,
    ingest_qlib,
    qlib_daily_table,
    read_bin,
    to_fbgpu_symbol,
    to_qlib_symbol,
)
from fbgpu.data.store import Store

CAL = ["2022-01-04", "2022-01-05", "2022-01-06", "2022-01-07", "2022-01-10", "2022-01-11"]


def _bin(path: Path, start: int, vals: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.array([start, *vals], dtype="<f4").tofile(path)


def make_qlib(root: Path, amount: bool = True) -> Path:
    (root / "calendars").mkdir(parents=True)
    (root / "calendars" / "day.txt").write_text("\n".join(CAL) + "\n")
    (root / "instruments").mkdir()
    (root / "instruments" / "all.txt").write_text(
        "SH600000\t2022-01-04\t2022-01-11\nSZ000001\t2022-01-05\t2022-01-10\n")
    nan = float("nan")
    # SH600000: factor 2, adjusted close 20 -> raw 10; a NaN (suspension) on 2022-01-06
    f = root / "features" / "sh600000"
    _bin(f / "close.day.bin", 0, [20, 22, nan, 24, 26, 28])
    _bin(f / "open.day.bin", 0, [20, 21, nan, 23, 25, 27])
    _bin(f / "high.day.bin", 0, [21, 23, nan, 25, 27, 29])
    _bin(f / "low.day.bin", 0, [19, 20, nan, 22, 24, 26])
    _bin(f / "volume.day.bin", 0, [500, 600, nan, 700, 800, 900])  # adjusted = raw / 2
    _bin(f / "factor.day.bin", 0, [2, 2, 2, 2, 2, 2])
    if amount:
        _bin(f / "amount.day.bin", 0, [1e4, 1.3e4, nan, 1.6e4, 2e4, 2.4e4])
    # SZ000001 starts at calendar index 1, factor 1.5 then 3
    g = root / "features" / "sz000001"
    _bin(g / "close.day.bin", 1, [15, 16.5, 18, 19.5])
    _bin(g / "open.day.bin", 1, [15, 15, 18, 18])
    _bin(g / "high.day.bin", 1, [16.5, 18, 19.5, 21])
    _bin(g / "low.day.bin", 1, [15, 15, 18, 18])
    _bin(g / "volume.day.bin", 1, [100, 200, 100, 200])
    _bin(g / "factor.day.bin", 1, [1.5, 1.5, 3, 3])
    if amount:
        _bin(g / "amount.day.bin", 1, [1500, 3300, 1800, 3900])
    return root


def test_symbols() -> None:
    assert to_fbgpu_symbol("SH600000") == "600000.SH"
    assert to_fbgpu_symbol("sz000001") == "000001.SZ"
    assert to_qlib_symbol("000001.SZ") == "SZ000001"
    for bad in ("HK00700", "SH", "SHabc"):
        with pytest.raises(ValueError):
            to_fbgpu_symbol(bad)


def test_unadjust_by_hand(tmp_path: Path) -> None:
    t = qlib_daily_table(make_qlib(tmp_path / "q")).to_pylist()
    by = {(r["symbol"], r["date"]): r for r in t}
    r = by[("600000.SH", "2022-01-04")]
    assert r["close"] == pytest.approx(10.0) and r["open"] == pytest.approx(10.0)
    assert r["volume"] == 1000 and r["adjfactor"] == 2 and r["suspended"] == 0
    r = by[("000001.SZ", "2022-01-07")]  # 18 / 3, 100 * 3
    assert r["close"] == pytest.approx(6.0) and r["volume"] == 300
    assert ("000001.SZ", "2022-01-04") not in by and ("000001.SZ", "2022-01-11") not in by
    g = by[("600000.SH", "2022-01-06")]  # gap inside the span -> explicit suspended row
    assert g["suspended"] == 1 and g["volume"] == 0 and g["close"] == pytest.approx(11.0)
    assert g["open"] is None  # no trade: empty open


def test_missing_amount_warned(tmp_path: Path) -> None:
    from fbgpu.data.ingest.errors import ValidationReport
    rep = ValidationReport(format="qlib")
    t = qlib_daily_table(make_qlib(tmp_path / "q", amount=False), rep)
    assert rep.counts["qlib_amount_filled"] == 5 + 4  # live stock-days, not the suspended one
    assert any("WARNED" in n for n in rep.notes)
    r = next(x for x in t.to_pylist() if x["symbol"] == "600000.SH")
    assert r["amount"] == pytest.approx(1000 * 10.0)  # raw volume x raw close


def test_store_and_round_trip(tmp_path: Path) -> None:
    st = Store(tmp_path / "s")
    rep = ingest_qlib(st, make_qlib(tmp_path / "q"))
    assert rep.counts["qlib_suspended_rows"] == 1
    d = st.read("daily", dt.date(2022, 1, 7)).to_pylist()
    one = {r["symbol"]: r for r in d}
    assert one["000001.SZ"]["adj_factor"] == 3 and one["000001.SZ"]["close"] == pytest.approx(6)
    import pyarrow as pa
    tabs = [st.read("daily", dt.date.fromisoformat(x)) for x in CAL]
    daily = pa.concat_tables([t.cast(tabs[0].schema) for t in tabs])
    cal = [dt.date.fromisoformat(x) for x in CAL]
    export_qlib(daily, tmp_path / "q2", cal, ["open", "high", "low", "close", "volume", "amount"])
    for sym in ("sh600000", "sz000001"):
        for f in ("close", "open", "high", "low", "volume", "factor"):
            a = read_bin(tmp_path / "q" / "features" / sym / f"{f}.day.bin", len(CAL))
            b = read_bin(tmp_path / "q2" / "features" / sym / f"{f}.day.bin", len(CAL))
            assert a[0] == b[0]
            np.testing.assert_allclose(a[1], b[1], rtol=1e-6, equal_nan=True)
    st2 = Store(tmp_path / "s2")
    ingest_qlib(st2, tmp_path / "q2")
    for x in cal:
        pd.testing.assert_frame_equal(st2.read("daily", x).to_pandas(),
                                      st.read("daily", x).to_pandas(), rtol=1e-6)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("breakage,needle", [
    ("truncate", "multiple of 4"),
    ("factor", "factor must be a positive"),
    ("calendar", "not a date"),
])
def test_bad_files_cli(tmp_path: Path, breakage: str, needle: str) -> None:
    q = make_qlib(tmp_path / "q")
    store = tmp_path / "s"
    ingest_qlib(store, make_qlib(tmp_path / "ok"))
    before = _digest(store)
    if breakage == "truncate":
        p = q / "features" / "sh600000" / "close.day.bin"
        p.write_bytes(p.read_bytes()[:-2])
    elif breakage == "factor":
        _bin(q / "features" / "sz000001" / "factor.day.bin", 1, [1.5, 0, 3, 3])
    else:
        (q / "calendars" / "day.txt").write_text("2022-01-04\nnot-a-date\n")
    r = subprocess.run([sys.executable, "-m", "fbgpu", "ingest", "--format", "qlib", "--in",
                        str(q), "--store", str(store)], capture_output=True, text=True)
    assert r.returncode != 0
    assert needle in r.stderr and "file " in r.stderr
    assert _digest(store) == before
    with pytest.raises(IngestError):
        qlib_daily_table(q)


def test_export_cli_daily_and_factors(tmp_path: Path) -> None:
    import pyarrow as pa
    q = make_qlib(tmp_path / "q")
    store = tmp_path / "s"
    ingest_qlib(store, q)
    r = subprocess.run([sys.executable, "-m", "fbgpu", "export", "--format", "qlib", "--table",
                        "daily", "--out", str(tmp_path / "e"), "--store", str(store)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for f in ("close", "volume", "factor"):
        a = read_bin(q / "features" / "sz000001" / f"{f}.day.bin", len(CAL))
        b = read_bin(tmp_path / "e" / "features" / "sz000001" / f"{f}.day.bin", len(CAL))
        assert a[0] == b[0]
        np.testing.assert_allclose(a[1], b[1], rtol=1e-6)
    # factors are written as-is (no adjustment), one bin per numeric column
    d = dt.date(2022, 1, 5)
    Store(store).write("factors", d, pa.table({"date": [d, d], "symbol": ["600000.SH", "000001.SZ"],
                                               "vol20": [0.5, -1.25]}))
    r = subprocess.run([sys.executable, "-m", "fbgpu", "export", "--table", "factors", "--out",
                        str(tmp_path / "f"), "--store", str(store)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s, v = read_bin(tmp_path / "f" / "features" / "sz000001" / "vol20.day.bin", len(CAL))
    assert s == 1 and v.tolist() == [-1.25]
    r = subprocess.run([sys.executable, "-m", "fbgpu", "export", "--table", "scores", "--out",
                        str(tmp_path / "g"), "--store", str(store)], capture_output=True, text=True)
    assert r.returncode == 2 and "no 'scores' partitions" in r.stderr


# ---------------------------------------------------------------- problems met on real files
# (fr220574/Qlib-format-A-share-dataset, 2026-05 snapshot; docs/real-data.md): upper-case
# feature directories, indices among the stocks, raw (unadjusted) volume, no amount/vwap, a
# universe given by a wide index-weights CSV, and a date range starting inside a suspension.

def make_real_like(root: Path, n_days: int = 60, volume_raw: bool = True) -> Path:
    """5 stocks with a 2:1 factor jump at day 30 (volume raw or adjusted), an index, no amount,
    no vwap, upper-case directories; SZ000005 is suspended on days 40..44 (NaN close), SZ000004
    on days 20..22 (flat rows: the close carried, volume 0)."""
    cal = [d.item() for d in np.busday_offset("2022-01-03", np.arange(n_days))]
    (root / "calendars").mkdir(parents=True)
    (root / "calendars" / "day.txt").write_text("".join(f"{d}\n" for d in cal))
    rng = np.random.default_rng(0)
    for k in range(1, 6):
        d = root / "features" / f"SZ00000{k}"
        fac = np.where(np.arange(n_days) < 30, 1.0, 2.0)
        raw_close = 10.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n_days)))
        raw_close[30:] /= 2.0  # the split halves the raw price; the adjusted price is smooth
        raw_vol = 1000.0 * np.exp(rng.normal(0, 0.1, n_days)) * fac  # twice the shares after
        close = raw_close * fac
        vol = raw_vol if volume_raw else raw_vol / fac
        if k == 5:
            close[40:45] = np.nan
            vol[40:45] = np.nan
        if k == 4:  # a suspension written as flat rows: close carried, volume 0
            close[20:23] = close[19]
            vol[20:23] = 0.0
        for name, v in (("close", close), ("open", close), ("high", close * 1.01),
                        ("low", close * 0.99), ("volume", vol), ("factor", fac)):
            _bin(d / f"{name}.day.bin", 0, list(v))
    idx = root / "features" / "SH000001"  # an index among the stocks
    for name in ("close", "volume", "factor"):
        _bin(idx / f"{name}.day.bin", 0, [3000.0] * n_days)
    return root


def test_real_volume_convention_detected(tmp_path: Path) -> None:
    from fbgpu.data.ingest.errors import ValidationReport
    for raw in (True, False):
        q = make_real_like(tmp_path / f"q{raw}", volume_raw=raw)
        rep = ValidationReport(format="qlib")
        t = qlib_daily_table(q, rep).to_pandas()
        assert any(("read as raw" if raw else "read as adjusted") in n for n in rep.notes)
        v = np.fromfile(q / "features" / "SZ000001" / "volume.day.bin", "<f4")[1:]
        got = t[t["symbol"] == "000001.SZ"]["volume"].to_numpy()
        fac = np.where(np.arange(len(v)) < 30, 1.0, 2.0)
        np.testing.assert_allclose(got, np.rint(v if raw else v * fac))
        # the same directory read with the wrong explicit convention differs after the split
        wrong = qlib_daily_table(q, volume="adjusted" if raw else "raw").to_pandas()
        w = wrong[wrong["symbol"] == "000001.SZ"]["volume"].to_numpy()
        assert np.allclose(w[:30], got[:30]) and not np.allclose(w[30:], got[30:])


def test_real_indices_skipped_upper_case_dirs_no_amount(tmp_path: Path) -> None:
    from fbgpu.data.ingest.errors import ValidationReport
    rep = ValidationReport(format="qlib")
    t = qlib_daily_table(make_real_like(tmp_path / "q"), rep).to_pandas()
    assert set(t["symbol"]) == {f"00000{k}.SZ" for k in range(1, 6)}  # no 000001.SH index
    assert rep.counts["qlib_indices_skipped"] == 1
    live = t["suspended"] == 0
    assert rep.counts["qlib_amount_filled"] == int(live.sum())
    assert t["vwap"].isna().all()  # no vwap bin and no amount: nothing to derive it from
    s4 = t[t["symbol"] == "000004.SZ"].reset_index(drop=True)
    assert s4["suspended"].tolist()[18:24] == [0, 0, 1, 1, 1, 0]  # the flat rows
    assert s4["open"][20:23].isna().all() and (s4["volume"][20:23] == 0).all()
    assert (s4["amount"][20:23] == 0).all()
    np.testing.assert_allclose(s4["close"][20:23], s4["close"][19])
    assert rep.counts["qlib_zero_volume_suspended"] == 3
    assert rep.counts["qlib_suspended_rows"] == 5 + 3
    np.testing.assert_allclose(t.loc[live, "amount"], t.loc[live, "volume"] * t.loc[live, "close"])


def test_real_universe_from_weights_and_date_range(tmp_path: Path) -> None:
    q = make_real_like(tmp_path / "q")
    w = tmp_path / "index_weight_info.csv"  # wide, JoinQuant codes, as the CSI 500 file
    w.write_text(",000002.XSHE,000005.XSHE,600000.XSHG\n2022-01-03,0.5,0.3,0.2\n")
    cal = (q / "calendars" / "day.txt").read_text().split()
    opts = tmp_path / "opts.toml"
    opts.write_text(f'[qlib]\nsymbols_from = "{w}"\nstart = "{cal[41]}"\nend = "{cal[50]}"\n')
    st = Store(tmp_path / "s")
    rep = ingest_qlib(st, q, options=opts)
    days = st.dates("daily")
    assert days[0].isoformat() == cal[41] and days[-1].isoformat() == cal[50]
    t = pd.concat([st.read("daily", d).to_pandas() for d in days])
    assert set(t["symbol"].astype(str)) == {"000002.SZ", "000005.SZ"}
    # day 41 is inside SZ000005's suspension (days 40..44): an explicit suspended
    # row carrying the raw close of day 39, from before the requested range
    s5 = t[t["symbol"].astype(str) == "000005.SZ"].set_index("date").sort_index()
    close = np.fromfile(q / "features" / "SZ000005" / "close.day.bin", "<f4")[1:]
    assert s5["suspended"].iloc[0] == 1
    assert s5["close"].iloc[0] == pytest.approx(close[39] / 2.0, rel=1e-6)
    assert rep.counts["qlib_suspended_rows"] == 4  # days 41..44
    assert rep.counts["qlib_symbols_missing"] == 1  # 600000.XSHG has no feature directory
    import json
    on_disk = json.loads(Path(rep.path).read_text())  # the written report has the qlib counts
    assert on_disk["counts"]["qlib_symbols_missing"] == 1
    assert any("qlib" in n and "volume" in n for n in on_disk["notes"])
    bad = tmp_path / "bad.toml"
    bad.write_text('[qlib]\nstart = "2022-13-01"\n')
    before = _digest(tmp_path / "s")
    r = subprocess.run([sys.executable, "-m", "fbgpu", "ingest", "--format", "qlib", "--in",
                        str(q), "--mapping", str(bad), "--store", str(tmp_path / "s")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not a date" in r.stderr and "bad.toml" in r.stderr
    assert _digest(tmp_path / "s") == before
