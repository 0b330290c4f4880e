"""Input files to parsed blocks: archives, CSV streaming, Parquet, header mapping, error location.

CSV is streamed with :func:`pyarrow.csv.open_csv` in blocks of ``config.block_size`` bytes, every
mapped column read as text and parsed by :mod:`fbgpu.data.ingest.values`, so memory holds one raw
block plus the compact parsed columns. ``.gz`` files are decompressed on the fly, ``.zip`` members
are streamed one by one (``zipfile``), Parquet is read by row group. 7z archives need a 7z library,
which the project does not install: they get a clear error.

When pyarrow rejects a block (a line with the wrong number of fields, e.g. a truncated last line,
or bytes that are not valid in the declared encoding) the file is re-scanned line by line in
Python to name the row and the column; that only happens on the error path.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import fnmatch
import gzip
import io
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fbgpu.data.ingest.calendar_cn import not_a_trading_day
from fbgpu.data.ingest.errors import IngestError
from fbgpu.data.ingest.mapping import FormatSpec, IngestConfig, RowFilter, SourceField
from fbgpu.data.ingest.values import (
    Where,
    parse_code,
    parse_date,
    parse_float,
    parse_int,
    parse_str,
    parse_symbol,
    parse_time,
)

CSV_SUFFIXES = (".csv", ".txt", ".tsv")


@dataclass
class Source:
    """One input stream: a label for messages and a function that opens it (binary)."""

    label: str
    opener: Callable[[], IO[bytes]]
    kind: str  # "csv" | "parquet"


def _is_parquet(name: str) -> bool:
    return name.lower().endswith((".parquet", ".pq"))


def select_members(archive: Path, members: list[str], member: str | None) -> list[str]:
    """The zip members to read: all (sorted), or those matching ``member``.

    ``member`` is a name or a glob (``*``, ``?``, ``[...]``), matched against the member's full
    path inside the archive and against its base name. No match is an error listing the members;
    a plain name (no glob) matching several members by base name is ambiguous (an error too).
    """
    if member is None:
        return sorted(members)
    hits = sorted(m for m in members
                  if fnmatch.fnmatchcase(m, member) or fnmatch.fnmatchcase(m.rsplit("/", 1)[-1],
                                                                           member))
    listing = ", ".join(sorted(members)[:20]) + (" ..." if len(members) > 20 else "")
    if not hits:
        raise IngestError(archive, None, None, f"no member matches member = {member!r} "
                          f"(members: {listing})")
    is_glob = any(ch in member for ch in "*?[")
    if len(hits) > 1 and not is_glob:
        raise IngestError(archive, None, None, f"member = {member!r} is ambiguous: it matches "
                          f"{', '.join(hits)}; give the full path inside the archive")
    return hits


def expand_inputs(paths: list[str | Path], member: str | None = None) -> list[Source]:
    """Files to read, in the given order; a directory stands for its files, sorted by name.

    ``member`` selects members of zip archives (:func:`select_members`); it is an error when no
    input is a zip archive.
    """
    out = _expand(paths, member)
    seen: set[str] = set()
    for s in out:
        if s.label in seen:
            raise IngestError(s.label, None, None, "the same input is given twice")
        seen.add(s.label)
    if member is not None and not any("!" in s.label for s in out):
        from fbgpu.data.ingest.errors import MappingError

        raise MappingError("<mapping>", None, "member",
                           "member selects files inside zip archives, but no input is a zip")
    return out


def _expand(paths: list[str | Path], member: str | None) -> list[Source]:
    out: list[Source] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
            if not files:
                raise IngestError(p, None, None, "directory holds no files")
            out.extend(_expand(list(files), member))
            continue
        if not p.exists():
            raise IngestError(p, None, None, "no such file")
        name = p.name.lower()
        if name.endswith((".7z", ".rar")):
            raise IngestError(p, None, None,
                              f"{p.suffix} archives are not supported (no well-kept 7z/rar "
                              "library is installed); extract the file and ingest the CSV")
        if name.endswith(".zip"):
            try:
                with zipfile.ZipFile(p) as zf:
                    members = [i.filename for i in zf.infolist()
                               if not i.is_dir() and not i.filename.startswith("__MACOSX")]
            except zipfile.BadZipFile as e:
                raise IngestError(p, None, None, f"not a valid zip archive: {e}") from e
            if not members:
                raise IngestError(p, None, None, "zip archive holds no files")
            for m in select_members(p, members, member):
                out.append(Source(f"{p}!{m}", _zip_opener(p, m),
                                  "parquet" if _is_parquet(m) else "csv"))
        elif name.endswith(".gz"):
            out.append(Source(str(p), _gz_opener(p),
                              "parquet" if _is_parquet(name[:-3]) else "csv"))
        else:
            out.append(Source(str(p), _file_opener(p), "parquet" if _is_parquet(name) else "csv"))
    return out


def _file_opener(p: Path) -> Callable[[], IO[bytes]]:
    return lambda: open(p, "rb")


def _gz_opener(p: Path) -> Callable[[], IO[bytes]]:
    return lambda: gzip.open(p, "rb")  # type: ignore[return-value]


def _zip_opener(p: Path, member: str) -> Callable[[], IO[bytes]]:
    def opener() -> IO[bytes]:
        zf = zipfile.ZipFile(p)
        stream = zf.open(member)
        # Keep the archive open as long as the member stream is in use.
        stream._fbgpu_zip = zf  # type: ignore[attr-defined]
        return stream

    return opener


@dataclass
class Block:
    """Parsed columns of one block: canonical source-field name -> numpy array.

    Symbols are ``values["symbol"]`` (int32 indices) into ``symbols`` (names; ``None`` for rows
    whose code is not a security code when parsed leniently).
    """

    row0: int  # data-row number (1-based) of the block's first row
    n: int
    values: dict[str, np.ndarray]
    symbols: list[str | None]
    rows: np.ndarray  # data-row number of each row (not contiguous when rows were filtered)
    filtered: int = 0  # rows of the block dropped by the mapping's row filters


def resolve_columns(header: list[str], spec: FormatSpec, label: str,
                    skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Map each source field of ``spec`` to the header column holding it.

    Matching is case-insensitive after trimming spaces and BOMs; the first candidate present
    wins. Fields given a constant (``[constants]``) need no column. Required fields with no
    column are one :class:`IngestError` listing every missing field with its candidates.
    """
    norm: dict[str, list[str]] = {}
    for h in header:
        norm.setdefault(h.strip().lstrip("\ufeff").lower(), []).append(h)
    out: dict[str, str] = {}
    missing: list[SourceField] = []
    for f in spec.fields:
        if f.name in skip or f.constant is not None:
            continue
        for cand in f.candidates:
            hits = norm.get(cand.lower())
            if hits:
                if len(hits) > 1:
                    raise IngestError(label, 0, hits[0],
                                      f"column appears {len(hits)} times in the header")
                out[f.name] = hits[0]
                break
        else:
            if f.required:
                missing.append(f)
    if missing:
        what = "; ".join(f"{f.name!r} (looked for any of: {', '.join(f.candidates)})"
                         for f in missing)
        plural = "s" if len(missing) > 1 else ""
        raise IngestError(label, 0, missing[0].candidates[0],
                          f"missing column{plural} for {what}; header has: "
                          f"{', '.join(header[:40])}"
                          + (" ... (map them with [columns] in the mapping)" if len(header) > 40
                             else " (map them with [columns] in the mapping)"))
    return out


def check_filter_columns(header: list[str], filters: list[RowFilter], label: str) -> None:
    """Every row filter's column is in the header (exact name, as in the file)."""
    names = {h.strip().lstrip("\ufeff") for h in header}
    for flt in filters:
        if flt.column not in names:
            raise IngestError(label, 0, flt.column,
                              f"filter column {flt.column!r} is not in the header (header has: "
                              f"{', '.join(header[:40])})")


def _header_name(header: list[str], column: str) -> str:
    for h in header:
        if h.strip().lstrip("\ufeff") == column:
            return h
    return column


def filter_mask(batch: pa.RecordBatch, filters: list[RowFilter],
                names: dict[str, str]) -> np.ndarray | None:
    """Rows of ``batch`` that every filter keeps (None: no filter). ``names`` maps a filter's
    column to the batch's column name. Values are compared as trimmed text."""
    if not filters:
        return None
    keep = np.ones(batch.num_rows, dtype=bool)
    for flt in filters:
        col = batch.column(batch.schema.get_field_index(names[flt.column]))
        text = pc.utf8_trim_whitespace(col.cast(pa.string()))
        values = pa.array(flt.in_ if flt.in_ is not None else flt.not_in, pa.string())
        hit = pc.fill_null(pc.is_in(text, value_set=values), False)
        hit_np = hit.to_numpy(zero_copy_only=False).astype(bool)
        keep &= hit_np if flt.in_ is not None else ~hit_np
    return keep


def _decode_check(raw: bytes, encoding: str) -> str | None:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        return None


def locate_csv_problem(src: Source, config: IngestConfig, reason: str) -> IngestError:
    """Re-scan a CSV line by line to name the row and column pyarrow rejected."""
    enc = codecs.lookup(config.encoding).name
    with src.opener() as f:
        header_raw = f.readline()
        header_text = _decode_check(header_raw.lstrip(codecs.BOM_UTF8), enc)
        if header_text is None:
            return IngestError(src.label, 0, None,
                               f"header is not valid {config.encoding} text (wrong encoding?)")
        header = next(csv.reader([header_text], delimiter=config.delimiter), [])
        row = 0
        for raw in f:
            row += 1
            text = _decode_check(raw, enc)
            if text is None:
                col = None
                for j, part in enumerate(raw.split(config.delimiter.encode())):
                    if _decode_check(part, enc) is None:
                        col = header[j] if j < len(header) else f"#{j + 1}"
                        break
                return IngestError(src.label, row, col,
                                   f"bytes that are not valid {config.encoding} text "
                                   "(wrong encoding? pass encoding in the mapping)")
            if not text.strip():
                continue
            fields = next(csv.reader([text], delimiter=config.delimiter), [])
            if len(fields) != len(header):
                last = "" if raw.endswith(b"\n") else " (last line has no newline: truncated?)"
                col = header[len(fields) - 1] if 0 < len(fields) <= len(header) else None
                return IngestError(src.label, row, col,
                                   f"expected {len(header)} fields, got {len(fields)}{last}")
    return IngestError(src.label, None, None, f"unreadable CSV: {reason}")


def _csv_header(src: Source, config: IngestConfig) -> list[str]:
    try:
        with src.opener() as f:
            head = f.read(1 << 16)
    except (EOFError, OSError, zlib.error) as e:
        raise IngestError(src.label, None, None, f"cannot read or decompress: {e}") from e
    if not head.strip():
        raise IngestError(src.label, None, None, "empty file")
    first = head.split(b"\n", 1)[0] + b"\n"
    try:
        reader = pacsv.open_csv(
            io.BytesIO(first),
            read_options=pacsv.ReadOptions(encoding=config.encoding),
            parse_options=pacsv.ParseOptions(delimiter=config.delimiter),
        )
        names = list(reader.schema.names)
    except UnicodeDecodeError as e:
        raise IngestError(src.label, 0, None,
                          f"header is not valid {config.encoding} text (wrong encoding? set "
                          f"encoding in the mapping): {e.reason}") from e
    except (pa.ArrowInvalid, LookupError) as e:
        raise IngestError(src.label, 0, None, f"unreadable header: {e}") from e
    return names


def constant_label(name: str) -> str:
    """How a ``[constants]`` field is named in messages (it has no column)."""
    return f"[constants] {name}"


def _parse_block(batch: pa.RecordBatch, cols: dict[str, str], spec: FormatSpec,
                 config: IngestConfig, label: str, row0: int, lenient_symbols: bool,
                 filter_names: dict[str, str] | None = None) -> Block:
    rows = np.arange(row0, row0 + batch.num_rows, dtype=np.int64)
    keep = filter_mask(batch, config.filter, filter_names or {})
    filtered = 0
    if keep is not None and not keep.all():
        idx = np.flatnonzero(keep)
        filtered = batch.num_rows - len(idx)
        batch = batch.take(pa.array(idx))
        rows = rows[idx]
    arrays: dict[str, pa.Array] = {f: batch.column(batch.schema.get_field_index(c))
                                   for f, c in cols.items()}
    labels = dict(cols)
    for f in spec.fields:
        if f.constant is not None:
            arrays[f.name] = pa.array([f.constant] * batch.num_rows, pa.string())
            labels[f.name] = constant_label(f.name)
    values: dict[str, np.ndarray] = {}
    symbols: list[str | None] = []
    market = None
    if "market" in arrays:
        mf = spec.field("market")
        market = parse_code(arrays["market"], Where(label, labels["market"], row0, rows),
                            mf.codes or {}, as_int=False,
                            unknown="?" if lenient_symbols else None)
    for name, arr in arrays.items():
        if name == "market":
            continue
        f: SourceField = spec.field(name)
        w = Where(label, labels[name], row0, rows)
        if f.kind == "float":
            values[name] = parse_float(arr, w, f.required and not f.allow_empty)
        elif f.kind == "int":
            values[name] = parse_int(arr, w, f.required)
        elif f.kind == "code":
            values[name] = parse_code(arr, w, f.codes or {})
        elif f.kind == "date":
            values[name] = parse_date(arr, w, f.required)
        elif f.kind == "time":
            ns, days = parse_time(arr, w, config.time_format)
            values[name] = ns
            values["time_date"] = days
        elif f.kind == "symbol":
            symbols, values[name] = parse_symbol(arr, w, market, spec.exchange,
                                                 lenient=lenient_symbols)
        else:
            values[name] = parse_str(arr)
    # Optional fields absent from this file: fill so that blocks of different files concatenate.
    n = batch.num_rows
    for f in spec.fields:
        if f.name in values or f.name == "market" or f.required:
            continue
        if f.kind == "float":
            values[f.name] = np.full(n, np.nan)
        elif f.kind in ("int", "date"):
            values[f.name] = np.full(n, -1, dtype=np.int64 if f.kind == "int" else np.int32)
        elif f.kind == "code":
            values[f.name] = np.full(n, -128, dtype=np.int8)  # -128: not given
        elif f.kind == "str":
            values[f.name] = np.full(n, None, dtype=object)
    return Block(row0, n, values, symbols, rows, filtered)


def read_header(src: Source, config: IngestConfig) -> list[str]:
    """Column names of an input (CSV header or Parquet schema)."""
    if src.kind == "parquet":
        try:
            with src.opener() as f:
                return list(pq.ParquetFile(io.BytesIO(f.read())).schema_arrow.names)
        except (pa.ArrowInvalid, OSError) as e:
            raise IngestError(src.label, None, None, f"not a readable Parquet file: {e}") from e
    return _csv_header(src, config)


def iter_blocks(src: Source, cols: dict[str, str], spec: FormatSpec,
                config: IngestConfig, lenient_symbols: bool = False,
                header: list[str] | None = None) -> Iterator[Block]:
    """Parsed blocks of one input; raises :class:`IngestError` naming file, row and column.

    ``header`` (the input's column names) is needed when the mapping has row filters: their
    columns are read too, and rows they reject are dropped before parsing (``Block.filtered``).
    """
    row0 = 1
    fnames = {flt.column: _header_name(header or [], flt.column) for flt in config.filter}
    wanted = list(dict.fromkeys([*cols.values(), *fnames.values()]))
    if src.kind == "parquet":
        with src.opener() as f:
            pf = pq.ParquetFile(io.BytesIO(f.read()))
            for batch in pf.iter_batches(batch_size=1 << 20, columns=wanted):
                batch = pa.RecordBatch.from_arrays(
                    [c.cast(pa.string()) for c in batch.columns], names=batch.schema.names)
                yield _parse_block(batch, cols, spec, config, src.label, row0,
                                   lenient_symbols, fnames)
                row0 += batch.num_rows
        return
    stream: Any = src.opener()
    try:
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(encoding=config.encoding,
                                               block_size=config.block_size),
                parse_options=pacsv.ParseOptions(delimiter=config.delimiter),
                convert_options=pacsv.ConvertOptions(
                    include_columns=wanted, column_types=dict.fromkeys(wanted, pa.string()),
                    strings_can_be_null=False, quoted_strings_can_be_null=False),
            )
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                yield _parse_block(batch, cols, spec, config, src.label, row0,
                                   lenient_symbols, fnames)
                row0 += batch.num_rows
        except (pa.ArrowInvalid, UnicodeDecodeError) as e:
            try:
                located = locate_csv_problem(src, config, str(e))
            except (EOFError, OSError, zlib.error) as e2:
                raise IngestError(src.label, None, None, f"cannot decompress: {e2}") from e
            raise located from e
        except (EOFError, OSError, zlib.error) as e:  # truncated/corrupt gzip or zip member
            raise IngestError(src.label, None, None, f"cannot read or decompress: {e}") from e
    finally:
        stream.close()
        zf = getattr(stream, "_fbgpu_zip", None)
        if zf is not None:
            zf.close()


@dataclass
class Rows:
    """All parsed rows of one ingest: per-row arrays plus where each row came from.

    ``values`` holds the source fields plus ``date`` (int32 days since 1970-01-01), ``symbol``
    (int32 index into ``symbols``), ``file`` (int32 index into ``files``) and ``row`` (int64
    data-row number in its file).
    """

    values: dict[str, np.ndarray]
    symbols: list[str | None]
    files: list[str]
    columns: list[dict[str, str]]  # per file: source field -> vendor column
    filtered: int = 0  # rows dropped by the mapping's row filters

    @property
    def n(self) -> int:
        return len(self.values["row"])

    def error(self, i: int, field: str | None, reason: str) -> IngestError:
        """An :class:`IngestError` for row ``i`` naming its file, row and vendor column."""
        fi = int(self.values["file"][i])
        col = self.columns[fi].get(field, field) if field else None
        return IngestError(self.files[fi], int(self.values["row"][i]), col, reason)

    def take(self, idx: np.ndarray) -> Rows:
        return Rows({k: v[idx] for k, v in self.values.items()}, self.symbols, self.files,
                    self.columns, self.filtered)


def day_str(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(day))).isoformat()


def _check_dates(label: str, rows: np.ndarray, day: np.ndarray, cols: dict[str, str],
                 config: IngestConfig, first_day: int | None, one_day: bool) -> int | None:
    """Every row's date on the exchange calendar; with ``one_day``, one date per file.

    Returns the file's date (its first row's) for the next block of the same file.
    """
    if not len(day):
        return first_day
    col = cols.get("date", cols.get("time"))
    if one_day and not config.split_dates:
        if first_day is None:
            first_day = int(day[0])
        other = day != first_day
        if other.any():
            i = int(np.flatnonzero(other)[0])
            raise IngestError(label, int(rows[i]), col,
                              f"row is dated {day_str(day[i])}, but the file's first row is "
                              f"dated {day_str(first_day)}: a tick file holds one trading day "
                              "(set split_dates = true in the mapping to split it by date)")
    uniq, first = np.unique(day, return_index=True)
    for d, i in zip(uniq, first, strict=True):
        why = not_a_trading_day(dt.date(1970, 1, 1) + dt.timedelta(days=int(d)),
                                config.calendar)
        if why is not None:
            raise IngestError(label, int(rows[int(i)]), col,
                              f"{why} (not on the exchange calendar; see calendar in the "
                              "mapping)")
    return first_day


def collect(sources: list[Source], spec: FormatSpec, config: IngestConfig,
            date: dt.date | None, lenient_symbols: bool = False, dated: bool = True,
            progress: Callable[[Iterator[Source]], Iterator[Source]] | None = None,
            one_day: bool = False) -> Rows:
    """Read and parse every input into one :class:`Rows`, resolving each row's date.

    A row's date comes from the date column, else from a timestamp that carries a date, else from
    ``date``. When ``date`` is given, a row carrying another date is an error (the wrong file was
    passed). A file without data rows is an error. ``dated=False`` (the security master) skips
    date resolution. Every date must be on the exchange calendar (``config.calendar``); with
    ``one_day`` (tick files) all rows of a file must share its first row's date unless
    ``config.split_dates``.
    """
    parts: dict[str, list[np.ndarray]] = {}
    names: dict[str | None, int] = {}
    files: list[str] = []
    columns: list[dict[str, str]] = []
    given = None if date is None else (date - dt.date(1970, 1, 1)).days
    it: Any = sources if progress is None else progress(iter(sources))
    filtered = 0
    rows_before = 0  # data rows of the earlier inputs (seq_from = "row_order")
    for fi, src in enumerate(it):
        header = read_header(src, config)
        cols = resolve_columns(header, spec, src.label)
        check_filter_columns(header, config.filter, src.label)
        files.append(src.label)
        labels = {**cols, **{f.name: constant_label(f.name) for f in spec.fields
                             if f.constant is not None}}
        if config.seq_from == "row_order":
            labels["seq"] = "[row order]"
        columns.append(labels)
        n_file = 0
        n_read = 0
        first_day: int | None = None
        for block in iter_blocks(src, cols, spec, config, lenient_symbols, header):
            n_file += block.n
            n_read += block.n + block.filtered
            filtered += block.filtered
            v = block.values
            if config.seq_from == "row_order":
                v["seq"] = rows_before + block.rows
            if "symbol" in v:
                lut = np.array([names.setdefault(s, len(names)) for s in block.symbols],
                               dtype=np.int32)
                v["symbol"] = lut[v["symbol"]] if len(lut) else v["symbol"]
            day = np.full(block.n, -1, dtype=np.int32)
            for src_field in ("time_date", "date"):  # the date column wins over the timestamp
                if src_field in v:
                    d = v.pop(src_field).astype(np.int32)
                    day = np.where(d >= 0, d, day)
            missing = day < 0
            if missing.any() and dated:
                if given is None:
                    i = int(np.flatnonzero(missing)[0])
                    raise IngestError(src.label, int(block.rows[i]), cols.get("date"),
                                      "no date for this row (the file has no date column or it "
                                      "is empty); pass the date (--date)")
                day[missing] = given
            if dated and given is not None and (day != given).any():
                i = int(np.flatnonzero(day != given)[0])
                other = dt.date(1970, 1, 1) + dt.timedelta(days=int(day[i]))
                raise IngestError(src.label, int(block.rows[i]),
                                  cols.get("date", cols.get("time")),
                                  f"row is dated {other}, but the ingest is for {date}")
            if dated:
                first_day = _check_dates(src.label, block.rows, day, cols, config, first_day,
                                         one_day)
            v["date"] = day
            v["file"] = np.full(block.n, fi, dtype=np.int32)
            v["row"] = block.rows
            for k, arr in v.items():
                parts.setdefault(k, []).append(arr)
        rows_before += n_read
        if n_file == 0:
            why = (f"all {n_read} data rows were removed by the row filter" if n_read
                   else "no data rows (empty file or header only)")
            raise IngestError(src.label, None, None, why)
    values = {k: np.concatenate(a) for k, a in parts.items()}
    symbols = [None] * len(names)
    for s, i in names.items():
        symbols[i] = s
    return Rows(values, symbols, files, columns, filtered)
