"""Read a symbol-sorted partition straight into contiguous column arrays (the tick read path).

A tick or minute partition is sorted by ``symbol`` (then ``seq``/``minute``), so a stock-day is
one contiguous run of rows and a set of stocks is a few row spans. :func:`read_runs` reads such
a partition row group by row group and copies each decoded column chunk directly into one
preallocated numpy array per column:

* **one copy**: the decoded Arrow chunk (zero-copy viewed as numpy) goes straight to its place
  in the output; there is no intermediate multi-chunk Arrow table and no second concatenation
  copy (``ChunkedArray.to_numpy()`` of a multi-chunk column allocates and copies everything
  again);
* **bounded transient memory**: only one row group's decoded columns exist besides the output
  (two inside :func:`chunked_reads`: the one kept for the next chunk), and the Arrow
  allocator reuses their pages for the next row group, so peak memory is the output plus a
  row group or two, not twice the day;
* **stock selection by row-group ranges**: with ``symbols`` (a memory-budget chunk), only the
  row groups that hold the requested stocks' rows are decoded (one pass; no filtered re-scan
  of the whole partition), and only those rows are copied. Inside :func:`chunked_reads` (a
  memory budget's day), a chunk that ends inside a row group leaves that group's decode for
  the next chunk, which starts there, so a day read in chunks decodes each row group once.

The ``symbol`` column is read first (dictionary codes only, 4 bytes a row) to find the runs,
once per file (``_RUNS_CACHE``, shared with the Arrow IPC path); the CSR ``offsets`` follow
from the run lengths. Columns that contain nulls (none of the tick
schemas' columns do in a conformed store) are converted as ``pyarrow`` does (integers with nulls
become float64 with NaN), so values are the same as ``Table.column(c).to_numpy()``.

An **Arrow IPC partition** (``part-0.arrow``, the store's default hot format) is read by
:func:`read_runs_ipc`: the file is memory-mapped and its one record batch's columns are viewed
as numpy arrays (:func:`as_numpy`, ``np.frombuffer``): no decoding, no copy, no allocation; the
arrays are the file's pages in the page cache (read-only). A stock selection that is one
contiguous row range (a memory-budget chunk: consecutive symbols) is a zero-copy slice too;
only a scattered selection, a multi-batch file (one written by another tool) or a column with
nulls is copied, once, into contiguous arrays.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from fbgpu.data.store import pq  # pyarrow.parquet, imported on first use

_Opened = TypeVar("_Opened")  # what a partition's opening returns (_remembered_runs)


class TickReadError(Exception):
    """A partition cannot be read as symbol-sorted runs (the message names the file)."""


def numpy_dtype(typ: pa.DataType) -> np.dtype:
    """The numpy dtype of a fixed-width numeric Arrow type (as ``to_pandas_dtype`` gives it),
    found without pyarrow's pandas shim."""
    if pa.types.is_floating(typ):
        return np.dtype(f"f{typ.bit_width // 8}")
    if pa.types.is_signed_integer(typ):
        return np.dtype(f"i{typ.bit_width // 8}")
    if pa.types.is_unsigned_integer(typ):
        return np.dtype(f"u{typ.bit_width // 8}")
    return np.dtype(typ.to_pandas_dtype())


def as_numpy(arr: pa.Array) -> np.ndarray:
    """The values of ``arr`` as numpy: a read-only zero-copy view of its data buffer for a
    null-free numeric array (``np.frombuffer``), else ``arr.to_numpy(zero_copy_only=False)``
    (integers with nulls become float64 with NaN, as ``pyarrow`` converts them).

    ``Array.to_numpy`` imports pandas (pyarrow's pandas shim) on its first call, which costs a
    factor run ~0.3 CPU s and drags in ``pyarrow.compute``; the view does not.
    """
    typ = arr.type
    if arr.null_count == 0 and (pa.types.is_integer(typ) or pa.types.is_floating(typ)):
        dtype = numpy_dtype(typ)
        buf = arr.buffers()[1]
        if buf is None or len(arr) == 0:
            return np.empty(0, dtype=dtype)
        return np.frombuffer(buf, dtype=dtype, count=len(arr),
                             offset=arr.offset * dtype.itemsize)
    return arr.to_numpy(zero_copy_only=False)


def _symbol_runs(chunks: Sequence[pa.Array]) -> tuple[list[str], list[int]]:
    """Names and start rows of the runs of equal symbols over consecutive chunks (a run that
    continues across a chunk boundary is one run); the row count is appended as last start."""
    names: list[str] = []
    starts: list[int] = []
    base = 0
    for ch in chunks:
        n = len(ch)
        if n == 0:
            continue
        if pa.types.is_dictionary(ch.type):
            codes = as_numpy(ch.indices)
            st = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
            # the dictionary is small (the day's symbols): index it in numpy, not with
            # pyarrow.compute's take (whose import alone costs ~0.1-0.3 s of a run)
            run_names = np.asarray(ch.dictionary.to_pylist(), dtype=object)[codes[st]].tolist()
        else:
            vals = np.asarray(ch.to_pylist(), dtype=object)
            st = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1]])
            run_names = list(vals[st])
        for s, name in zip(st.tolist(), run_names, strict=True):
            if names and s == 0 and names[-1] == name:
                continue  # the previous chunk's last run goes on
            names.append(name)
            starts.append(base + s)
        base += n
    starts.append(base)
    return names, starts


def _stock_runs(path: str | Path, chunks: Sequence[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_symbol_runs` as arrays ``(names, starts)`` (object, int64; ``starts`` ends with
    the row count), checked to be one run per stock: :class:`TickReadError` naming ``path``
    otherwise."""
    names, starts = _symbol_runs(chunks)
    if len(set(names)) != len(names):
        raise TickReadError(f"{path}: partition is not sorted by symbol: a stock-day is not "
                            "contiguous")
    return np.asarray(names, dtype=object), np.asarray(starts, dtype=np.int64)


#: The stock runs of the last few Arrow IPC partitions read, keyed by the file's identity
#: (device, inode, size, modification and change times, as Python's own bytecode and
#: ``linecache`` checks do): a memory-budgeted day reads each partition once
#: per stock chunk, and finding the runs scans the whole ``symbol`` column (16.7 M codes for
#: the full-day orders, ~15-20 ms), so without it every chunk paid for the whole day. The
#: store replaces a partition by writing a new file and renaming it (a new inode), so a
#: rewritten partition never matches an old entry (a file overwritten in place by hand with
#: the same size within one timestamp tick would: the store never does that).
_RUNS_CACHE: OrderedDict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = OrderedDict()
_RUNS_CACHE_SIZE = 8
_RUNS_LOCK = threading.Lock()


def _file_key(path: str | Path) -> tuple[int, ...]:
    """The identity of the file now at ``path``: device, inode, size, modification and change
    times (ns)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


#: Within :func:`chunked_reads`: the last decoded row group of a Parquet partition whose
#: stock-selection read ended inside it, keyed by the file's identity (``_file_key``), with the
#: group and the columns. Under a memory budget the next chunk starts in that group, and
#: decoding a 1 M-row group again for every chunk made a budgeted Parquet day 1.6-2.5x the
#: unbudgeted one. Taken (removed) by the read that uses it; one entry per file, at most
#: ``_DECODED_SIZE`` files; emptied when the outermost ``chunked_reads`` block ends. The
#: budget planner counts it (``parquet_read_bytes``: three row groups per partition, this one,
#: the one being decoded and the pool's slack). Process-wide: while a block is open, another
#: thread's selective read of a Parquet partition may keep a decode too (bounded as above).
_DECODED: OrderedDict[tuple[int, ...], tuple[int, tuple[str, ...], pa.Table]] = OrderedDict()
_DECODED_SIZE = 4
_CHUNKED_DEPTH = 0  # open chunked_reads() blocks (any thread: the reads run on a pool)


@contextlib.contextmanager
def chunked_reads() -> Iterator[None]:
    """A block of in-order stock-chunk reads (a memory budget's day): inside it, a Parquet
    read of a stock selection that ends inside a row group keeps that group's decode for the
    next read, which starts there, so each row group is decoded once. Outside any such block
    nothing is kept (an ad hoc selection holds no memory afterwards); leaving the outermost
    block drops whatever is still kept. Process-wide (the reads run on reader threads)."""
    global _CHUNKED_DEPTH
    with _RUNS_LOCK:
        _CHUNKED_DEPTH += 1
    try:
        yield
    finally:
        with _RUNS_LOCK:
            _CHUNKED_DEPTH -= 1
            if not _CHUNKED_DEPTH:
                _DECODED.clear()


def _take_decoded(key: tuple[int, ...] | None, group: int, cols: Sequence[str]
                  ) -> pa.Table | None:
    """The remembered decode of row ``group`` (these ``cols``) of the file ``key``, removed
    from the cache; None when there is none (or ``key`` is None: an unstable file)."""
    if key is None:
        return None
    with _RUNS_LOCK:
        hit = _DECODED.get(key)
        if hit is None or hit[0] != group or hit[1] != tuple(cols):
            return None
        del _DECODED[key]
        return hit[2]


def _keep_decoded(key: tuple[int, ...] | None, group: int, cols: Sequence[str],
                  table: pa.Table) -> None:
    """Remember ``table``, the decode of row ``group`` of the file ``key``, inside a
    :func:`chunked_reads` block (replacing that file's previous entry; the oldest file's entry
    goes beyond ``_DECODED_SIZE``)."""
    if key is None:
        return
    with _RUNS_LOCK:
        if not _CHUNKED_DEPTH:
            return
        _DECODED.pop(key, None)
        _DECODED[key] = (group, tuple(cols), table)
        while len(_DECODED) > _DECODED_SIZE:
            _DECODED.popitem(last=False)


def _remembered_runs(path: str | Path, open_file: Callable[[], _Opened],
                     symbol_chunks: Callable[[_Opened], Sequence[pa.Array]]
                     ) -> tuple[_Opened, np.ndarray, np.ndarray, tuple[int, ...] | None]:
    """Open a partition (``open_file()``) and find its stock runs: ``(opened, names, starts,
    key)``, the runs of :func:`_symbol_runs` over ``symbol_chunks(opened)`` as read-only arrays
    (``starts`` ends with the row count), checked to be one run per stock
    (:class:`TickReadError` otherwise) and remembered per file (``_RUNS_CACHE``). The file's
    identity is read before and after opening it: when the two differ (the store renamed a new
    file into place meanwhile) the runs are found afresh, nothing is remembered and ``key`` is
    None, so no key is ever paired with another file's data."""
    before = _file_key(path)
    opened = open_file()
    key = before if _file_key(path) == before else None
    if key is not None:
        with _RUNS_LOCK:
            hit = _RUNS_CACHE.get(key)
            if hit is not None:
                _RUNS_CACHE.move_to_end(key)
                return opened, *hit, key
    run_names, run_starts = _stock_runs(path, symbol_chunks(opened))
    run_names.flags.writeable = False
    run_starts.flags.writeable = False
    if key is not None:
        with _RUNS_LOCK:
            _RUNS_CACHE[key] = (run_names, run_starts)
            while len(_RUNS_CACHE) > _RUNS_CACHE_SIZE:
                _RUNS_CACHE.popitem(last=False)
    return opened, run_names, run_starts, key


def _mapped_runs(path: str | Path
                 ) -> tuple[pa.Schema, list[pa.RecordBatch], np.ndarray, np.ndarray]:
    """Memory-map an Arrow IPC partition: ``(schema, batches, names, starts)``, its stock runs
    remembered per file (:func:`_remembered_runs`)."""
    def symbols(opened: tuple[pa.Schema, list[pa.RecordBatch]]) -> list[pa.Array]:
        if "symbol" not in opened[0].names:
            raise TickReadError(f"{path}: no symbol column")
        return [b.column("symbol") for b in opened[1]]

    (schema, batches), names, starts, _ = _remembered_runs(path, lambda: _ipc_batches(path),
                                                          symbols)
    return schema, batches, names, starts


def _parquet_runs(path: str | Path) -> tuple[Any, np.ndarray, np.ndarray, tuple[int, ...] | None]:
    """Open a Parquet partition: ``(ParquetFile, names, starts, key)``, its stock runs from
    the ``symbol`` column (dictionary codes only) remembered per file
    (:func:`_remembered_runs`); :class:`TickReadError` when it has no ``symbol`` column."""
    def symbols(opened: Any) -> list[pa.Array]:
        if "symbol" not in opened.schema_arrow.names:
            raise TickReadError(f"{path}: no symbol column")
        return opened.read(columns=["symbol"]).column("symbol").chunks

    return _remembered_runs(path, lambda: pq.ParquetFile(path), symbols)


def is_ipc(path: str | Path) -> bool:
    """Whether ``path`` is an Arrow IPC partition (by its name, ``*.arrow``)."""
    return str(path).endswith(".arrow")


def _ipc_batches(path: str | Path) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """The record batches of a memory-mapped Arrow IPC file (views of its pages)."""
    reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
    return reader.schema, [reader.get_batch(i) for i in range(reader.num_record_batches)]


def symbol_counts(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(symbols, rows)`` of a symbol-sorted partition: each stock's row count, from the
    ``symbol`` column alone (dictionary codes; no other column is decoded)."""
    if is_ipc(path):
        _, _, names, starts = _mapped_runs(path)
    else:
        _, names, starts, _ = _parquet_runs(path)
    return names.copy(), np.diff(starts)


def _spans(keep: np.ndarray, starts: np.ndarray) -> list[tuple[int, int, int]]:
    """``(src_start, src_end, dst_start)`` row spans of the kept runs, adjacent runs merged."""
    if keep.all():  # the whole partition: one span (no loop over the day's stocks)
        return [(int(starts[0]), int(starts[-1]), 0)] if len(keep) else []
    out: list[tuple[int, int, int]] = []
    dst = 0
    for r in np.flatnonzero(keep).tolist():
        a, b = int(starts[r]), int(starts[r + 1])
        if out and out[-1][1] == a:
            s0, _, d0 = out[-1]
            out[-1] = (s0, b, d0)
        else:
            out.append((a, b, dst))
        dst += b - a
    return out


def _copy_chunk(out: np.ndarray, arr: np.ndarray, c0: int,
                spans: list[tuple[int, int, int]], span_ends: list[int]) -> None:
    """Copy the rows of ``arr`` (global rows ``c0:c0+len(arr)``) that fall in ``spans``."""
    c1 = c0 + len(arr)
    k = bisect.bisect_right(span_ends, c0)
    while k < len(spans) and spans[k][0] < c1:
        s0, s1, d0 = spans[k]
        a, b = max(s0, c0), min(s1, c1)
        if a < b:
            out[d0 + a - s0:d0 + b - s0] = arr[a - c0:b - c0]
        k += 1


def read_runs(
    path: str | Path, columns: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(symbols, offsets, arrays)`` of a symbol-sorted Parquet partition.

    ``columns``: the value columns to read (default: every column but ``date`` and ``symbol``).
    ``symbols``: keep only these stocks' rows (any order; absent ones are ignored).
    ``offsets`` (int64, ``len(symbols) + 1``) are the CSR row offsets of each stock's run in the
    returned arrays, which are contiguous numpy arrays, one per column.

    Raises :class:`TickReadError` when the file is not sorted by symbol, and lets ``pyarrow``'s
    ``ArrowInvalid``/``OSError`` through for an unreadable file (the store wraps them).
    An Arrow IPC file (``*.arrow``) is read by :func:`read_runs_ipc`.
    """
    if is_ipc(path):
        return read_runs_ipc(path, columns, symbols)
    f, run_names, starts, key = _parquet_runs(path)
    md = f.metadata
    schema = f.schema_arrow
    cols, want = _selection(path, schema, columns, symbols)
    keep = (np.ones(len(run_names), dtype=bool) if want is None
            else np.isin(run_names.astype(str), want.astype(str)))
    counts = np.diff(starts)[keep]
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    n_out = int(offsets[-1])
    spans = _spans(keep, starts)
    span_ends = [s[1] for s in spans]
    out = {c: np.empty(n_out, dtype=numpy_dtype(schema.field(c).type)) for c in cols}
    base = 0
    for g in range(md.num_row_groups):
        if not cols or not spans:
            break
        n_g = md.row_group(g).num_rows
        if span_ends[-1] <= base:
            break
        k = bisect.bisect_right(span_ends, base)
        if k < len(spans) and spans[k][0] < base + n_g:  # the group holds kept rows
            # a stock chunk of a memory budget that ended inside this group decoded it
            t = _take_decoded(key, g, cols)
            if t is None:
                t = f.read_row_group(g, columns=cols)
            for c in cols:
                c0 = base
                for ch in t.column(c).chunks:
                    arr = as_numpy(ch)
                    if arr.dtype != out[c].dtype:
                        out[c] = out[c].astype(arr.dtype)  # ints with nulls become float
                    _copy_chunk(out[c], arr, c0, spans, span_ends)
                    c0 += len(ch)
            if want is not None and span_ends[-1] < base + n_g:
                # this read ends inside the group: the next chunk (the next stocks) starts here
                _keep_decoded(key, g, cols, t)
            del t
        base += n_g
    return run_names[keep], offsets, out



def _selection(path: str | Path, schema: pa.Schema, columns: Sequence[str] | None,
               symbols: Sequence[str] | None) -> tuple[list[str], np.ndarray | None]:
    """The value columns to read (checked against ``schema``) and the sorted unique symbols
    wanted (None = all)."""
    if "symbol" not in schema.names:
        raise TickReadError(f"{path}: no symbol column")
    cols = ([c for c in schema.names if c not in ("date", "symbol")] if columns is None
            else [c for c in columns if c not in ("date", "symbol")])
    missing = [c for c in cols if c not in schema.names]
    if missing:
        raise TickReadError(f"{path}: no column(s) {missing}")
    want = (np.unique(np.asarray(list(symbols), dtype=object).astype(str)).astype(object)
            if symbols is not None else None)
    return cols, want


def read_runs_ipc(
    path: str | Path, columns: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """:func:`read_runs` of a symbol-sorted Arrow IPC file, memory-mapped.

    With one record batch (what the store writes) and a selection that is one contiguous row
    range (all stocks, or consecutive ones), each returned array is a read-only zero-copy view
    of the mapped file; otherwise the selected rows are copied once into contiguous arrays.
    """
    schema, batches, run_names, starts = _mapped_runs(path)
    cols, want = _selection(path, schema, columns, symbols)
    keep = (np.ones(len(run_names), dtype=bool) if want is None
            else np.isin(run_names.astype(str), want.astype(str)))
    counts = np.diff(starts)[keep]
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    spans = _spans(keep, starts)
    out: dict[str, np.ndarray] = {}
    if len(batches) == 1 and len(spans) <= 1:
        a, b = (spans[0][0], spans[0][1]) if spans else (0, 0)
        for c in cols:
            out[c] = as_numpy(batches[0].column(c).slice(a, b - a))
        return run_names[keep], offsets, out
    n_out = int(offsets[-1])
    span_ends = [s[1] for s in spans]
    for c in cols:
        out[c] = np.empty(n_out, dtype=numpy_dtype(schema.field(c).type))
        c0 = 0
        for bt in batches:
            arr = as_numpy(bt.column(c))
            if arr.dtype != out[c].dtype:
                out[c] = out[c].astype(arr.dtype)  # ints with nulls become float
            _copy_chunk(out[c], arr, c0, spans, span_ends)
            c0 += len(arr)
    return run_names[keep], offsets, out


def read_runs_cudf(path: str | Path, columns: Sequence[str] | None, cudf: Any
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """:func:`read_runs` of a whole symbol-sorted Parquet partition with the value columns
    decoded on the GPU by ``cudf.read_parquet(path, columns=...)`` and taken as device (cupy)
    arrays (``Series.values``; a column with nulls as float64 with NaN, ``to_cupy``, as the
    host path converts it).

    The runs (symbols and CSR ``offsets``, host arrays: they index the universe) come from
    the ``symbol`` column's dictionary codes read on the host (:func:`symbol_counts`, 4 bytes
    a row, the host path's own logic and its sortedness check), so both paths give the same
    ``DayTicks``. ``cudf``: the module (the tests pass a stand-in). Never run against a real
    cudf (none was installed where this was built).
    """
    names, rows = symbol_counts(path)
    cols, _ = _selection(path, pq.ParquetFile(path).schema_arrow, columns, None)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(rows, out=offsets[1:])
    df = cudf.read_parquet(str(path), columns=list(cols))
    out: dict[str, Any] = {}
    for c in cols:
        col = df[c]
        out[c] = col.values if col.null_count == 0 else col.astype("float64").to_cupy(
            na_value=np.nan)
    return np.asarray(names, dtype=object), offsets, out
