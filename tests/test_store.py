"""The store: round trip, canonical sort, CSR readers, atomicity, manifests, errors, and the
on-disk formats of the hot tables (memory-mapped Arrow IPC by default, Parquet for old stores)."""

from __future__ import annotations

import datetime as dt
import hashlib
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fbgpu.data.schemas import MINUTES_PER_DAY, SCHEMAS
from fbgpu.data.store import PART_NAMES, Store, StoreError, conform

D1 = dt.date(2024, 1, 2)
D2 = dt.date(2024, 1, 3)


def _trades(date: dt.date, symbols: list[str], seqs: list[int]) -> pa.Table:
    n = len(symbols)
    return pa.table(
        {
            "date": [date] * n,
            "symbol": symbols,
            "seq": seqs,
            "ts": np.arange(n, dtype=np.int64) * 1000,
            "price": np.linspace(10, 11, n),
            "volume": np.full(n, 100),
            "amount": np.linspace(10, 11, n) * 100,
            "buy_order_id": np.arange(n),
            "sell_order_id": np.arange(n) + 1000,
            "side": np.resize(np.array([1, -1, 0], dtype=np.int8), n),
        }
    )


def _store_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_round_trip_sorts_and_builds_csr(tmp_path: Path, fmt: str) -> None:
    s = Store(tmp_path, fmt)
    t = _trades(D1, ["B.SZ", "A.SH", "B.SZ", "A.SH", "C.SZ"], [2, 5, 1, 3, 7])
    man = s.write("trades", D1, t)
    assert man.rows == 5 and s.dates("trades") == [D1] and s.tables() == ["trades"]
    back = s.read("trades", D1)
    assert back.schema == SCHEMAS["trades"]
    day = s.read_ticks("trades", D1)
    assert list(day.symbols) == ["A.SH", "B.SZ", "C.SZ"]
    assert day.offsets.tolist() == [0, 2, 4, 5]
    assert day["seq"].tolist() == [3, 5, 1, 2, 7]
    # every column moved with its row
    orig = {(r["symbol"], r["seq"]): r["price"] for r in t.to_pylist()}
    for i, sym in enumerate(day.symbols):
        for j in range(day.offsets[i], day.offsets[i + 1]):
            assert day["price"][j] == orig[(sym, day["seq"][j])]


def test_conform_rejects_missing_and_extra_columns(tmp_path: Path) -> None:
    t = _trades(D1, ["A.SH"], [1])
    with pytest.raises(StoreError, match=r"missing columns \['side'\]"):
        conform(t.drop(["side"]), "trades")
    with pytest.raises(StoreError, match="unexpected columns.*'foo'"):
        conform(t.append_column("foo", pa.array([1])), "trades")
    bad = t.set_column(4, "price", pa.array(["ten"]))
    with pytest.raises(StoreError, match="column 'price' cannot be cast"):
        conform(bad, "trades")


def test_rows_must_carry_the_partition_date(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="rows carry dates"):
        Store(tmp_path).write("trades", D2, _trades(D1, ["A.SH"], [1]))
    assert not Store(tmp_path).has("trades", D2)


def test_missing_table_and_date_errors_are_clear(tmp_path: Path) -> None:
    s = Store(tmp_path)
    with pytest.raises(StoreError, match="has no table 'trades'"):
        s.read("trades", D1)
    s.write("trades", D1, _trades(D1, ["A.SH"], [1]))
    with pytest.raises(StoreError, match=r"no partition for 2024-01-03 \(it has 2024-01-02"):
        s.read("trades", D2)
    with pytest.raises(StoreError, match="not a date"):
        s.read("trades", "yesterday")


def test_read_minute_dense_and_checks_completeness(tmp_path: Path) -> None:
    s = Store(tmp_path)
    rows = []
    for sym in ["B.SZ", "A.SH"]:
        for k in range(MINUTES_PER_DAY):
            rows.append(dict(date=D1, symbol=sym, minute=k, open=1.0, high=2.0, low=0.5,
                             close=1.5 + k, volume=k, amount=10.0 * k, num_trades=k % 3))
    s.write("minute", D1, pa.Table.from_pylist(rows))
    m = s.read_minute(D1)
    assert list(m.symbols) == ["A.SH", "B.SZ"]
    assert m["close"].shape == (2, MINUTES_PER_DAY)
    assert m["close"][1, 5] == 6.5 and m["volume"][0, 239] == 239
    s.write("minute", D2, pa.Table.from_pylist([{**r, "date": D2} for r in rows[:-1]]))
    with pytest.raises(StoreError, match="A.SH has 239 bars"):
        s.read_minute(D2)


def test_read_panel_aligns_dates_and_symbols(tmp_path: Path) -> None:
    s = Store(tmp_path)
    for d, syms, vals in [(D1, ["A", "B"], [1.0, 2.0]), (D2, ["C", "A"], [3.0, 4.0])]:
        s.write("scores", d, pa.table({"date": [d] * 2, "symbol": syms, "x": vals}))
    p = s.read_panel("scores")
    assert list(p.symbols) == ["A", "B", "C"]
    np.testing.assert_array_equal(p["x"], [[1, 2, np.nan], [4, np.nan, 3]])
    assert p.present.tolist() == [[True, True, False], [True, False, True]]


def test_manifest_and_is_current(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.write("trades", D1, _trades(D1, ["A.SH"], [1]))
    inputs = s.fingerprints([("trades", D1)])
    s.write("scores", D1, pa.table({"date": [D1], "symbol": ["A.SH"], "x": [1.0]}),
            config_hash_="cfg1", inputs=inputs)
    assert s.is_current("scores", D1, config_hash_="cfg1", inputs=inputs)
    assert not s.is_current("scores", D1, config_hash_="cfg2", inputs=inputs)
    assert not s.is_current("scores", D1, config_hash_="cfg1", inputs=inputs,
                            code_version_="other")
    # a changed input partition changes its fingerprint, so the result is stale
    s.write("trades", D1, _trades(D1, ["A.SH", "A.SH"], [1, 2]))
    assert not s.is_current("scores", D1, config_hash_="cfg1",
                            inputs=s.fingerprints([("trades", D1)]))
    with pytest.raises(StoreError, match="no partition trades/2024-01-03"):
        s.fingerprints([("trades", D2)])


def test_rewrite_is_idempotent(tmp_path: Path) -> None:
    s = Store(tmp_path)
    t = _trades(D1, ["B.SZ", "A.SH"], [2, 1])
    s.write("trades", D1, t)
    before = _store_digest(tmp_path)
    s.write("trades", D1, t)
    assert _store_digest(tmp_path) == before


def _slow_writer(root: str, started: mp.Event, fmt: str) -> None:  # pragma: no cover - child
    import fbgpu.data.store as store_mod

    real = store_mod.os.fsync

    def slow_fsync(fd: int) -> None:
        started.set()
        time.sleep(30)
        real(fd)

    store_mod.os.fsync = slow_fsync
    n = 200_000
    Store(root, fmt).write("trades", D1, _trades(D1, ["A.SH"] * n, list(range(n))))


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_write_killed_midway_leaves_previous_partition_intact(tmp_path: Path, fmt: str) -> None:
    s = Store(tmp_path, fmt)
    part = PART_NAMES[fmt]
    old = _trades(D1, ["A.SH"], [1])
    s.write("trades", D1, old)
    before = s.read("trades", D1)
    ctx = mp.get_context("fork")
    started = ctx.Event()
    p = ctx.Process(target=_slow_writer, args=(str(tmp_path), started, fmt))
    p.start()
    assert started.wait(60), "writer never reached fsync"
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    # the killed write left at most a hidden temp file; readers still see the old partition
    assert s.read("trades", D1).equals(before)
    assert s.dates("trades") == [D1]
    leftovers = [q.name for q in (tmp_path / "trades" / "date=2024-01-02").iterdir()]
    assert all(n.startswith(".") or n in (part, "_manifest.json") for n in leftovers)

    # a first-ever write killed midway leaves no partition that reads as complete
    p = ctx.Process(target=_slow_writer, args=(str(tmp_path / "fresh"), ctx.Event(), fmt))
    p.start()
    time.sleep(1.0)
    while not list((tmp_path / "fresh").rglob(f".{part}.*.tmp")) and p.is_alive():
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    fresh = Store(tmp_path / "fresh")
    assert fresh.dates("trades") == [] and not fresh.has("trades", D1)


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_partition_writer_streams_chunks_atomically(tmp_path: Path, fmt: str) -> None:
    s = Store(tmp_path, fmt)
    s.write("trades", D1, _trades(D1, ["A.SH"], [1]))
    old = s.read("trades", D1)
    chunks = [conform(_trades(D1, ["A.SH", "A.SH"], [1, 2]), "trades"),
              conform(_trades(D1, ["B.SZ"], [1]), "trades")]
    # an exception inside the block aborts: the previous partition stays, no temp file is left
    with pytest.raises(RuntimeError, match="boom"), s.open_writer("trades", D1) as w:
        w.write(chunks[0])
        raise RuntimeError("boom")
    assert s.read("trades", D1).equals(old)
    assert not list((tmp_path / "trades").rglob("*.tmp"))
    with s.open_writer("trades", D1, config_hash_="c") as w:
        for c in chunks:
            w.write(c)
        with pytest.raises(StoreError, match="is not the canonical"):
            w.write(_trades(D1, ["C.SZ"], [1]))
    day = s.read_ticks("trades", D1)
    assert list(day.symbols) == ["A.SH", "B.SZ"] and day.offsets.tolist() == [0, 2, 3]
    man = s.manifest("trades", D1)
    assert man.rows == 3 and man.config_hash == "c"
    blob = (tmp_path / "trades" / "date=2024-01-02" / PART_NAMES[fmt]).read_bytes()
    assert man.sha256 == hashlib.sha256(blob).hexdigest()
    assert sorted(q.name for q in (tmp_path / "trades" / "date=2024-01-02").iterdir()) == \
        sorted([PART_NAMES[fmt], "_manifest.json"])  # no spool or temporary file is left
    # a chunked write reads back exactly as the same rows written at once
    whole = Store(tmp_path / "whole", fmt)
    whole.write("trades", D1, pa.concat_tables(chunks))
    assert s.read("trades", D1).to_pydict() == whole.read("trades", D1).to_pydict()


def _sorted_ticks_file(path: Path, rng: np.random.Generator, n_sym: int, row_group: int,
                       dictionary: bool) -> pa.Table:
    """A symbol-sorted tick file with runs of random length (some empty symbols skipped) and
    tiny row groups, so that runs straddle row-group and page boundaries."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    names = [f"{600000 + i}.SH" for i in range(n_sym)]
    counts = rng.integers(0, 40, n_sym)
    sym = np.repeat(np.array(names, dtype=object), counts)
    n = len(sym)
    vol = rng.integers(1, 10_000, n).astype(np.int64)
    table = pa.table({
        "symbol": pa.array(sym, pa.string()),
        "ts": np.arange(n, dtype=np.int64),
        "price": np.where(rng.random(n) < 0.05, np.nan, rng.normal(10, 1, n)),
        "volume": vol,
        "side": rng.choice(np.array([1, -1], dtype=np.int8), n),
    })
    if dictionary:
        table = table.set_column(0, "symbol", pc.dictionary_encode(table.column("symbol")))
    pq.write_table(table, path, row_group_size=row_group)
    return table


RUN_COLUMNS = ("ts", "price", "volume", "side")


def _assert_runs_match(path: Path, table: pa.Table, sel: list[str] | None) -> dict:
    """``read_runs(path, ..., sel)`` equals a whole read of ``table`` filtered to ``sel``: the
    stocks present (sorted), int64 CSR offsets from 0, and each column's values (NaN kept),
    dtype and contiguity. Returns the columns read."""
    from fbgpu.data.tickread import read_runs

    syms, offsets, cols = read_runs(path, list(RUN_COLUMNS), sel)
    keep = np.ones(table.num_rows, dtype=bool) if sel is None else np.isin(
        np.array(table.column("symbol").to_pylist(), dtype=object), sel)
    ref = table.filter(pa.array(keep))
    ref_sym = np.array(ref.column("symbol").to_pylist(), dtype=object)
    want = sorted(set(ref_sym))
    assert list(syms) == want
    assert offsets.dtype == np.int64 and offsets[0] == 0
    np.testing.assert_array_equal(np.diff(offsets), [int((ref_sym == s).sum()) for s in want])
    for c in RUN_COLUMNS:
        r = ref.column(c).to_numpy()
        assert cols[c].dtype == r.dtype and cols[c].flags.c_contiguous
        np.testing.assert_array_equal(cols[c], r)
    return cols


@pytest.mark.parametrize("dictionary", [True, False])
def test_read_runs_matches_arrow_for_every_selection(tmp_path: Path, dictionary: bool) -> None:
    """read_runs (row group by row group into preallocated arrays) returns exactly what a whole
    pyarrow read + filter returns: same stocks, CSR offsets, values (NaN kept), dtypes, for
    the whole file and for random stock selections (absent names ignored)."""

    rng = np.random.default_rng(7)
    for k in range(6):
        path = tmp_path / f"t{k}.parquet"
        table = _sorted_ticks_file(path, rng, n_sym=int(rng.integers(1, 60)),
                                   row_group=int(rng.integers(1, 50)), dictionary=dictionary)
        all_syms = np.array(sorted(set(table.column("symbol").to_pylist())), dtype=object)
        selections = [None, list(all_syms[::3]), list(all_syms[-1:]), ["000000.XX"],
                      [*rng.permutation(all_syms)[: max(1, len(all_syms) // 2)], "9.X"]]
        for sel in selections:
            _assert_runs_match(path, table, sel)


def _count_row_group_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The row groups pyarrow decodes from now on (``ParquetFile.read_row_group`` calls)."""
    import pyarrow.parquet as pq

    calls: list[int] = []
    real = pq.ParquetFile.read_row_group

    def counting(self: pq.ParquetFile, i: int, *a: object, **k: object) -> pa.Table:
        calls.append(i)
        return real(self, i, *a, **k)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counting)
    return calls


def test_stock_selection_decodes_only_overlapping_row_groups(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """A memory-budget chunk (a range of stocks) decodes the row groups that hold it, each
    once: not a filtered re-scan of the whole partition."""
    import pyarrow.parquet as pq

    from fbgpu.data.tickread import read_runs

    path = tmp_path / "t.parquet"
    names = [f"{600000 + i}.SH" for i in range(20)]
    sym = np.repeat(names, 10)  # 200 rows, 10 per stock, row groups of 25 rows
    pq.write_table(pa.table({"symbol": sym, "ts": np.arange(200, dtype=np.int64)}), path,
                   row_group_size=25)
    calls = _count_row_group_reads(monkeypatch)
    syms, offsets, cols = read_runs(path, ["ts"], names[5:8])  # rows 50..79: groups 2, 3
    np.testing.assert_array_equal(offsets, [0, 10, 20, 30])
    assert list(syms) == names[5:8]
    np.testing.assert_array_equal(cols["ts"], np.arange(50, 80))
    assert calls == [2, 3]


def test_a_day_read_in_stock_chunks_decodes_each_row_group_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Consecutive stock chunks (a memory budget's reads) decode each row group once: a chunk
    that ends inside a group leaves its decode to the next chunk, which starts there. The
    chunks' rows are the whole file's, and nothing stays remembered once the day is read."""
    import pyarrow.parquet as pq

    from fbgpu.data import tickread

    rng = np.random.default_rng(3)
    path = tmp_path / "t.parquet"
    table = _sorted_ticks_file(path, rng, n_sym=40, row_group=37, dictionary=True)
    names = sorted(set(table.column("symbol").to_pylist()))
    calls = _count_row_group_reads(monkeypatch)
    whole = {c: table.column(c).to_numpy() for c in RUN_COLUMNS}
    n_groups = pq.ParquetFile(path).metadata.num_row_groups
    for width in (1, 3, 7):  # chunks smaller and larger than a row group
        calls.clear()
        got = {c: [] for c in RUN_COLUMNS}
        with tickread.chunked_reads():
            for lo in range(0, len(names), width):
                syms, _, cols = tickread.read_runs(path, list(RUN_COLUMNS),
                                                   names[lo:lo + width])
                assert list(syms) == names[lo:lo + width]
                for c in RUN_COLUMNS:
                    got[c].append(cols[c])
            assert not tickread._DECODED  # the last chunk took the last group's decode
        for c in RUN_COLUMNS:
            np.testing.assert_array_equal(np.concatenate(got[c]), whole[c])
        assert calls == list(range(n_groups)), width
    # outside a chunked_reads block a read keeps nothing (and so decodes again)
    calls.clear()
    tickread.read_runs(path, ["ts"], names[:1])
    tickread.read_runs(path, ["ts"], names[1:2])
    assert not tickread._DECODED and calls == [0, 0]


def test_chunk_reads_in_any_order_with_other_columns_and_group_edges(tmp_path: Path) -> None:
    """Inside chunked_reads, reads that do not follow the day's order (a chunk again, a chunk
    further back, other columns, a chunk ending exactly on a row-group boundary) still return
    exactly what a whole read filtered to their stocks does."""
    import pyarrow.parquet as pq

    from fbgpu.data import tickread

    path = tmp_path / "t.parquet"
    names = [f"{600000 + i}.SH" for i in range(12)]
    sym = np.repeat(names, 10)  # 120 rows, 10 per stock, row groups of 20: stocks 2k, 2k+1
    table = pa.table({"symbol": sym, "ts": np.arange(120, dtype=np.int64),
                      "price": np.arange(120, dtype=np.float64) / 7, "volume": np.arange(120),
                      "side": np.ones(120, dtype=np.int8)})
    pq.write_table(table, path, row_group_size=20)
    with tickread.chunked_reads():
        for sel, cols in [(names[0:3], ["ts"]), (names[3:4], ["price", "ts"]),
                          (names[3:4], ["ts"]), (names[1:3], ["ts", "price"]),
                          (names[4:6], list(RUN_COLUMNS)),  # ends on a group boundary
                          (names[6:7], list(RUN_COLUMNS)), (names[0:1], list(RUN_COLUMNS)),
                          (names[6:12], list(RUN_COLUMNS))]:
            syms, offsets, got = tickread.read_runs(path, cols, sel)
            rows = np.flatnonzero(np.isin(sym, sel))
            assert list(syms) == sel and offsets[-1] == len(rows)
            for c in cols:
                np.testing.assert_array_equal(got[c], table.column(c).to_numpy()[rows], c)
    assert not tickread._DECODED


def test_a_parquet_partition_without_symbols_is_a_clear_error(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from fbgpu.data.tickread import TickReadError, read_runs, symbol_counts

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"ts": np.arange(5, dtype=np.int64)}), path)
    for call in (lambda: read_runs(path, ["ts"], ["600000.SH"]), lambda: symbol_counts(path)):
        with pytest.raises(TickReadError, match="no symbol column"):
            call()


def test_a_replaced_parquet_file_is_not_read_from_an_earlier_decode(tmp_path: Path) -> None:
    """A chunk read that ended inside a row group remembers that group's decode for the file
    it read; a file renamed into place before the next chunk (the store's way of replacing a
    partition) is another file, so the next chunk reads the new file's values."""
    from fbgpu.data import tickread

    rng = np.random.default_rng(5)
    path = tmp_path / "t.parquet"
    old = _sorted_ticks_file(path, rng, n_sym=10, row_group=1000, dictionary=True)
    names = sorted(set(old.column("symbol").to_pylist()))
    with tickread.chunked_reads():
        tickread.read_runs(path, list(RUN_COLUMNS), names[:3])  # ends inside the only group
        assert tickread._DECODED
        new_path = tmp_path / "new.parquet"
        new = _sorted_ticks_file(new_path, np.random.default_rng(6), n_sym=10, row_group=1000,
                                 dictionary=True)
        os.replace(new_path, path)
        _assert_runs_match(path, new, names[3:])
    assert not tickread._DECODED


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_read_ticks_rejects_an_unsorted_partition(tmp_path: Path, fmt: str) -> None:
    import pyarrow.parquet as pq

    from fbgpu.data.store import ipc_bytes

    store = Store(tmp_path, fmt)
    store.write("trades", D1, _trades(D1, ["600000.SH", "600001.SH"], [1, 2]))
    path = store.partition_path("trades", D1)
    assert path.name == PART_NAMES[fmt]
    t = store.read("trades", D1)
    bad = pa.concat_tables([t, t.slice(0, 1)])  # 600000.SH again at the end
    if fmt == "arrow":
        path.write_bytes(ipc_bytes(bad).to_pybytes())
    else:
        pq.write_table(bad, path)
    with pytest.raises(StoreError, match="not sorted by symbol"):
        store.read_ticks("trades", D1, ["price"])
    path.write_bytes(b"not a partition")
    with pytest.raises(StoreError, match="cannot read"):
        store.read_ticks("trades", D1, ["price"])


def test_symbol_counts_and_budget_chunks_by_per_stock_rows(tmp_path: Path) -> None:
    """symbol_counts gives each stock's rows from the symbol column; stock_chunks fills chunks
    greedily from them: every chunk fits the budget, the chunks cover the universe in order, a
    budget that fits the day gives no chunks, and one below a single stock-day is refused."""
    from fbgpu.factors.compute import WORKING_BYTES_PER_ROW, stock_chunks

    store = Store(tmp_path)
    rng = np.random.default_rng(3)
    names = [f"{600000 + i}.SH" for i in range(12)]
    counts = rng.integers(1, 60, len(names))
    counts[4] = 400  # one heavy stock
    syms = list(np.repeat(names, counts))
    store.write("trades", D1, _trades(D1, syms, list(range(len(syms)))))
    got_names, got_rows = store.symbol_counts("trades", D1)
    assert list(got_names) == names and list(got_rows) == list(counts)
    need = counts * WORKING_BYTES_PER_ROW["trades"]
    assert stock_chunks(store, D1, float(need.sum())) is None
    budget = float(need[4])  # exactly the heavy stock alone
    chunks = stock_chunks(store, D1, budget)
    assert chunks is not None
    assert [s for c in chunks for s in c] == names
    by = dict(zip(names, need, strict=True))
    for c in chunks:
        assert sum(by[s] for s in c) <= budget
    assert [names[4]] in [list(c) for c in chunks]
    # the footprint comes off the budget; below the heavy stock alone the budget is refused
    again = stock_chunks(store, D1, budget + 1e6, footprint=1e6)
    assert again is not None and [list(c) for c in again] == [list(c) for c in chunks]
    from fbgpu.factors.compute import MemoryBudgetError

    with pytest.raises(MemoryBudgetError, match=f"stock-day {names[4]} alone needs"):
        stock_chunks(store, D1, budget - 1)


# ------------------------------------------------------------------ on-disk formats (issue 16)


def _ipc_file(path: Path, table: pa.Table, batch_rows: int | None) -> None:
    """``table`` as an Arrow IPC file with record batches of ``batch_rows`` (None: one)."""
    table = table.combine_chunks()
    with pa.ipc.new_file(str(path), table.schema) as w:
        if table.num_rows:
            w.write_table(table, max_chunksize=batch_rows or table.num_rows)


@pytest.mark.parametrize("batch_rows", [None, 7])
def test_read_runs_ipc_matches_arrow_for_every_selection(tmp_path: Path,
                                                         batch_rows: int | None) -> None:
    """The memory-mapped IPC read returns exactly what a whole read + filter returns (stocks,
    offsets, values with NaN, dtypes) for one-batch files (the store's layout) and multi-batch
    files (runs straddling batches), whole and for random selections; with one batch, the whole
    file and any run of consecutive stocks are read-only views of the mapped file (no copy)."""
    import pyarrow.compute as pc


    rng = np.random.default_rng(11)
    for k in range(6):
        n_sym = int(rng.integers(1, 60))
        _sorted_ticks_file(tmp_path / "x.parquet", rng, n_sym, 50, dictionary=True)
        import pyarrow.parquet as pq

        table = pq.read_table(tmp_path / "x.parquet")
        table = table.set_column(0, "symbol", pc.dictionary_encode(
            table.column("symbol").cast(pa.string())))
        path = tmp_path / f"t{k}.arrow"
        _ipc_file(path, table, batch_rows)
        all_syms = np.array(sorted(set(table.column("symbol").to_pylist())), dtype=object)
        contiguous = list(all_syms[1:4])
        selections = [None, contiguous, list(all_syms[::3]), ["000000.XX"],
                      [*rng.permutation(all_syms)[: max(1, len(all_syms) // 2)], "9.X"]]
        for sel in selections:
            cols = _assert_runs_match(path, table, sel)
            if batch_rows is None and (sel is None or sel is contiguous) and len(cols["ts"]):
                for c in RUN_COLUMNS:  # a view of the mapped file: not owned, not writable
                    assert not cols[c].flags.owndata and not cols[c].flags.writeable


def test_default_format_setting_and_old_parquet_stores(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A new store writes its hot tables as Arrow IPC and other tables as Parquet and records
    the setting; a store holding Parquet hot partitions from before the setting keeps writing
    Parquet and stays readable; FBGPU_STORE_FORMAT chooses for a new store; a bad setting is a
    clear error naming the file."""
    monkeypatch.delenv("FBGPU_STORE_FORMAT", raising=False)
    new = Store(tmp_path / "new")
    new.write("trades", D1, _trades(D1, ["A.SH"], [1]))
    new.write("daily_probe", D1, pa.table({"date": [D1], "symbol": ["A.SH"], "x": [1.0]}))
    assert new.partition_path("trades", D1).name == "part-0.arrow"
    assert new.partition_path("daily_probe", D1).name == "part-0.parquet"
    assert Store(tmp_path / "new").hot_format == "arrow"  # recorded in store.json
    assert new.tables() == ["daily_probe", "trades"] and new.dates("trades") == [D1]

    old = Store(tmp_path / "old", "parquet")
    old.write("trades", D1, _trades(D1, ["A.SH"], [1]))
    (tmp_path / "old" / "store.json").unlink()  # as written before the setting existed
    again = Store(tmp_path / "old")
    assert again.hot_format == "parquet"
    again.write("trades", D2, _trades(D2, ["B.SZ"], [1]))
    assert again.partition_path("trades", D2).name == "part-0.parquet"
    assert again.dates("trades") == [D1, D2]
    assert list(again.read_ticks("trades", D2).symbols) == ["B.SZ"]

    monkeypatch.setenv("FBGPU_STORE_FORMAT", "parquet")
    assert Store(tmp_path / "env").hot_format == "parquet"
    monkeypatch.setenv("FBGPU_STORE_FORMAT", "csv")
    with pytest.raises(StoreError, match="FBGPU_STORE_FORMAT.*unknown store format"):
        _ = Store(tmp_path / "env2").hot_format
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "store.json").write_text("{not json")
    with pytest.raises(StoreError, match="store.json"):
        _ = Store(tmp_path / "bad").hot_format


def test_convert_rewrites_hot_partitions_with_the_same_values(tmp_path: Path) -> None:
    """Store.convert rewrites every hot partition in the other format (values, schema and
    manifest provenance unchanged, sha256 of the new file), leaves no old file behind, and is a
    no-op the second time; converting back gives the same values again."""
    s = Store(tmp_path, "parquet")
    syms = ["B.SZ", "A.SH", "B.SZ", "C.SZ"]
    s.write("trades", D1, _trades(D1, syms, [2, 5, 1, 7]), config_hash_="h",
            inputs={"x/1": "abc"})
    s.write("trades", D2, _trades(D2, syms[:2], [1, 2]))
    before = {d: s.read("trades", d).to_pydict() for d in (D1, D2)}
    old_man = s.manifest("trades", D1)
    s2 = Store(tmp_path)
    assert s2.convert("arrow") == 2 and s2.convert("arrow") == 0
    for d in (D1, D2):
        assert s2.partition_path("trades", d).name == "part-0.arrow"
        assert not (s2.partition_dir("trades", d) / "part-0.parquet").exists()
        assert s2.read("trades", d).to_pydict() == before[d]
        assert s2.read("trades", d).schema == SCHEMAS["trades"]
    man = s2.manifest("trades", D1)
    blob = s2.partition_path("trades", D1).read_bytes()
    assert man.sha256 == hashlib.sha256(blob).hexdigest() != old_man.sha256
    assert (man.config_hash, man.inputs, man.code_version) == \
        (old_man.config_hash, old_man.inputs, old_man.code_version)
    assert Store(tmp_path).hot_format == "arrow"
    assert Store(tmp_path).convert("parquet") == 2
    assert Store(tmp_path).read("trades", D1).to_pydict() == before[D1]


def test_arrow_partitions_are_read_by_pandas_and_polars(tmp_path: Path) -> None:
    """An arrow partition is a plain Feather v2 file: pandas and polars read the same rows."""
    import pandas as pd
    import polars as pl

    s = Store(tmp_path)
    s.write("trades", D1, _trades(D1, ["B.SZ", "A.SH", "B.SZ"], [2, 5, 1]))
    path = s.partition_path("trades", D1)
    want = s.read("trades", D1)
    pdf = pd.read_feather(path)
    assert pdf["symbol"].astype(str).tolist() == want.column("symbol").to_pylist()
    np.testing.assert_array_equal(pdf["price"].to_numpy(), want.column("price").to_numpy())
    plf = pl.read_ipc(path)
    assert plf["seq"].to_list() == want.column("seq").to_pylist()
    assert plf["symbol"].cast(pl.Utf8).to_list() == want.column("symbol").to_pylist()
    assert s.read_schema("trades", D1) == SCHEMAS["trades"]


def test_budget_chunks_find_the_stock_runs_once_per_partition(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """Reading a memory-mapped partition stock chunk by stock chunk scans its ``symbol`` column
    for the stock runs once, not once per chunk (issue #16: a budgeted run costs little), and
    the chunks read what a whole read holds; a partition the store rewrites (a new file, even of
    the same size) is scanned again, so its new stocks are read, never the old runs."""
    from fbgpu.data import tickread

    store = Store(tmp_path, "arrow")
    names = [f"{600000 + i}.SH" for i in range(9)]
    syms = list(np.repeat(names, 5))
    store.write("trades", D1, _trades(D1, syms, list(range(len(syms)))))
    tickread._RUNS_CACHE.clear()
    scans = []
    real = tickread._symbol_runs
    monkeypatch.setattr(tickread, "_symbol_runs", lambda ch: scans.append(1) or real(ch))
    whole = store.read_ticks("trades", D1, ["price"])
    parts = [store.read_ticks("trades", D1, ["price"], names[a:a + 3]) for a in (0, 3, 6)]
    assert len(scans) == 1
    assert [s for p in parts for s in p.symbols] == list(whole.symbols)
    np.testing.assert_array_equal(np.concatenate([p.columns["price"] for p in parts]),
                                  whole.columns["price"])
    # same row count and sizes, other stocks: the rewrite is a new file, the runs are new
    renamed = [f"{300000 + i}.SZ" for i in range(9)]
    store.write("trades", D1, _trades(D1, list(np.repeat(renamed, 5)), list(range(len(syms)))))
    again = store.read_ticks("trades", D1, ["price"], renamed[:3])
    assert len(scans) == 2 and list(again.symbols) == renamed[:3]
    assert list(store.symbol_counts("trades", D1)[0]) == renamed and len(scans) == 2


def test_a_partition_replaced_while_it_is_mapped_is_not_remembered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the file at a partition's path changes between the identity read before mapping it
    and the one after (a rename in between), its runs are found afresh and not cached under
    either identity: the next read scans again."""
    from fbgpu.data import tickread

    store = Store(tmp_path, "arrow")
    store.write("trades", D1, _trades(D1, ["600000.SH", "600001.SH"], [1, 2]))
    tickread._RUNS_CACHE.clear()
    scans = []
    real = tickread._symbol_runs
    monkeypatch.setattr(tickread, "_symbol_runs", lambda ch: scans.append(1) or real(ch))
    real_key = tickread._file_key
    calls = iter(range(1000))
    monkeypatch.setattr(tickread, "_file_key", lambda p: (*real_key(p), next(calls)))
    for _ in range(2):
        assert list(store.read_ticks("trades", D1, ["price"]).symbols) == ["600000.SH",
                                                                             "600001.SH"]
    assert len(scans) == 2 and not tickread._RUNS_CACHE
    monkeypatch.setattr(tickread, "_file_key", real_key)
    store.read_ticks("trades", D1, ["price"])
    store.read_ticks("trades", D1, ["price"])
    assert len(scans) == 3 and len(tickread._RUNS_CACHE) == 1


@settings(max_examples=150, deadline=None)
@given(words=st.lists(st.sampled_from(["", "a", "aa", "b", "B", "é", "000001.SZ", "600000.SH"]),
                      max_size=14),
       data=st.data())
def test_sorted_by_symbol_reads_each_chunk_as_its_values(words: list[str], data) -> None:
    """The sortedness check behind a skipped sort is the one on the column's values (UTF-8,
    i.e. code point, order), whatever the chunking: dictionary chunks with a shuffled
    dictionary holding unused entries, any index width, sliced (an offset into their
    indices), or plain strings; nulls are never called sorted. Checked to fail when the
    indices' offset is ignored."""
    from fbgpu.data.store import _sorted_by_symbol

    chunks: list[pa.Array] = []
    rest = list(words)
    index_type = data.draw(st.sampled_from([pa.int8(), pa.int16(), pa.int32(), pa.int64(),
                                            pa.uint8(), pa.uint32()]))  # one per column
    while rest:
        n = data.draw(st.integers(1, len(rest)))
        part, rest = rest[:n], rest[n:]
        if data.draw(st.booleans()):
            unused = data.draw(st.lists(st.sampled_from(["zz", "~", "Z"]), max_size=2))
            uniq = data.draw(st.permutations(sorted(set(part)) + unused))  # unused entries too
            pad = data.draw(st.integers(0, 2))  # slice off a head: indices with an offset
            idx = pa.array([0] * pad + [uniq.index(w) for w in part], type=index_type)
            chunks.append(pa.DictionaryArray.from_arrays(idx, pa.array(uniq,
                                                                        type=pa.string()))[pad:])
        else:
            chunks.append(pa.array(part, type=pa.string()))
    if not chunks:
        return
    if len({c.type for c in chunks}) > 1:  # one column type per table: decode the dictionaries
        chunks = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in chunks]
    table = pa.table({"symbol": pa.chunked_array(chunks)})
    values = table.column("symbol").to_pylist()
    assert values == words
    assert _sorted_by_symbol(table, ("symbol",)) == (words == sorted(words))
    assert not _sorted_by_symbol(table, ("symbol", "ts"))
    with_null = pa.table({"symbol": pa.chunked_array([pa.array([None, *words[:1]],
                                                               type=pa.string())])})
    assert not _sorted_by_symbol(with_null, ("symbol",))
    null_word = pa.DictionaryArray.from_arrays(pa.array([0, 1], type=pa.int32()),
                                               pa.array(["a", None], type=pa.string()))
    assert not _sorted_by_symbol(pa.table({"symbol": null_word}), ("symbol",))


@pytest.mark.parametrize("streamed", [False, True])
def test_parquet_dictionaries_for_ticks_and_non_float_columns_only(tmp_path: Path,
                                                                   streamed: bool) -> None:
    """A Parquet partition of a tick table dictionary-encodes every column (prices repeat);
    one of another table (index weights; factors) only its non-float columns, its float
    columns plain; all read back to the values written. Both write paths: whole-table
    (``Store.write``) and streamed (``Store.open_writer``, fixed-schema tables)."""
    import pyarrow.parquet as pq

    from fbgpu.data.store import date_column, float64_column, symbol_column

    s = Store(tmp_path, "parquet")
    syms = ["A.SH", "B.SZ", "C.SZ"]
    tables = {
        "trades": _trades(D1, ["A.SH", "A.SH", "B.SZ", "B.SZ", "C.SZ"], [3, 5, 1, 2, 7]),
        "index_weights": pa.table({"date": date_column(D1, 3),
                                   "index": pa.array(["csi500"] * 3).dictionary_encode(),
                                   "symbol": symbol_column(syms),
                                   "weight": float64_column(np.array([0.5, 0.25, 0.25]))}),
    }
    if not streamed:  # a wide table: no fixed schema, so no streamed writer
        tables["factors"] = pa.Table.from_arrays(
            [date_column(D1, 3), symbol_column(syms),
             float64_column(np.array([0.5, np.nan, -2.0]))], names=["date", "symbol", "f"])
    for name, table in tables.items():
        table = conform(table, name)
        if streamed:
            with s.open_writer(name, D1) as w:
                w.write(table)  # in the partition's order already
        else:
            s.write(name, D1, table)
        meta = pq.ParquetFile(s.partition_path(name, D1)).metadata
        for i in range(meta.num_columns):
            col = meta.schema.column(i).name
            encodings = meta.row_group(0).column(i).encodings
            dictionary = any("DICTIONARY" in e for e in encodings)
            floating = pa.types.is_floating(table.schema.field(col).type)
            assert dictionary == (name == "trades" or not floating), (name, col, encodings)
        back = s.read(name, D1)
        assert back.num_rows == table.num_rows
        assert sorted(back.column("symbol").to_pylist()) == sorted(
            table.column("symbol").to_pylist())
    if not streamed:
        back = s.read("factors", D1)
        assert back.column("symbol").to_pylist() == syms
        np.testing.assert_array_equal(back.column("f").to_numpy(), [0.5, np.nan, -2.0])
