"""Name the likely right format when a file is rejected under another one.

Run on the error path only (:func:`with_format_hint`): the rejected file's header is matched
against every tick and bar format, and for tick formats the exchange of its first rows is read
from the symbol (suffix, market column, or code prefix). The hint is appended to the error:

- the rows are SZSE securities but the format is an SSE one (or the reverse): the format of the
  other exchange whose columns the header has (``use --format szse-trade``);
- the header lacks a column of the chosen format but has all of another's;
- the header has all columns of the chosen format and strictly more fields of another one
  (a minute-bar file given as ``daily-bars``).

No hint is given when nothing fits better; a hint never changes what is rejected.
"""

from __future__ import annotations

import io
import zlib
from collections import Counter
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fbgpu.data.ingest.errors import IngestError, MappingError
from fbgpu.data.ingest.mapping import COMMON, MARKET_CODES, IngestConfig, norm_code, resolve_format
from fbgpu.data.ingest.reader import Source, read_header, resolve_columns
from fbgpu.data.ingest.values import normalize_symbol

#: Formats a hint can name, with the exchange of tick formats and words for messages.
HINT_FORMATS: dict[str, tuple[str | None, str]] = {
    "sse-trade": ("SH", "an SSE trade file"),
    "sse-order": ("SH", "an SSE order file"),
    "sse-tick": ("SH", "an SSE merged tick file"),
    "szse-trade": ("SZ", "an SZSE trade file"),
    "szse-order": ("SZ", "an SZSE order file"),
    "minute-bars": (None, "a minute-bar file"),
    "daily-bars": (None, "a daily-bar file"),
}
_COMMON = {f.name for f in COMMON} - {"time"}  # a time column tells minute from daily bars
SAMPLE_ROWS = 200


def _resolved(header: list[str], fmt: str) -> int | None:
    """How many of ``fmt``'s own fields (date/symbol/market aside) the header holds, under
    the built-in names; None when a required field is missing."""
    spec = resolve_format(fmt, IngestConfig())
    try:
        cols = resolve_columns(header, spec, "")
    except IngestError:
        return None
    return sum(1 for f in cols if f not in _COMMON)


def _first_rows(src: Source, cfg: IngestConfig) -> pa.Table | None:
    """Up to :data:`SAMPLE_ROWS` rows of an input as text (None when unreadable)."""
    try:
        with src.opener() as f:
            if src.kind == "parquet":
                pf = pq.ParquetFile(io.BytesIO(f.read()))
                batch = next(pf.iter_batches(batch_size=SAMPLE_ROWS), None)
                return None if batch is None else pa.Table.from_batches([batch])
            head = f.read(1 << 16)
        lines = head.split(b"\n")[: SAMPLE_ROWS + 1]
        text = b"\n".join(lines[:-1] if len(lines) > 1 else lines) + b"\n"
        return pacsv.read_csv(
            io.BytesIO(text), read_options=pacsv.ReadOptions(encoding=cfg.encoding),
            parse_options=pacsv.ParseOptions(delimiter=cfg.delimiter),
            convert_options=pacsv.ConvertOptions(column_types={}, strings_can_be_null=False,
                                                 auto_dict_encode=False))
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error, UnicodeDecodeError, LookupError):
        return None


def rows_exchange(table: pa.Table) -> str | None:
    """The exchange (``SH``/``SZ``/``BJ``) most of the sample's securities belong to."""
    header = table.column_names
    try:
        cols = resolve_columns(header, resolve_format("szse-order", IngestConfig()), "",
                               skip=tuple(f for f in ("seq", "price", "volume", "side",
                                                      "ord_type", "time", "date")))
    except IngestError:
        return None
    codes = [str(x) for x in table.column(cols["symbol"]).to_pylist()]
    markets: list[str | None] = [None] * len(codes)
    if "market" in cols:
        markets = [MARKET_CODES.get(norm_code(str(x))) for x in
                   table.column(cols["market"]).to_pylist()]
    votes = Counter()
    for code, market in zip(codes, markets, strict=True):
        sym = normalize_symbol(code, market, None)
        if sym is not None:
            votes[sym.rsplit(".", 1)[1]] += 1
    return votes.most_common(1)[0][0] if votes else None


def likely_format(src: Source, fmt: str, cfg: IngestConfig) -> str | None:
    """The format ``src`` more likely is, or None (see the module docstring)."""
    if fmt not in HINT_FORMATS:
        return None
    try:
        header = read_header(src, cfg)
    except IngestError:
        return None
    score = {f: _resolved(header, f) for f in HINT_FORMATS}
    fits = {f: s for f, s in score.items() if s is not None and f != fmt}
    exch = HINT_FORMATS[fmt][0]
    if exch is not None:
        sample = _first_rows(src, cfg)
        have = rows_exchange(sample) if sample is not None else None
        if have is not None and have != exch:
            other = {f: s for f, s in fits.items() if HINT_FORMATS[f][0] == have}
            if other:
                return max(other, key=lambda f: other[f])
    if not fits:
        return None
    best = max(fits, key=lambda f: fits[f])
    own = score[fmt]
    if own is None or fits[best] > own:
        return best
    return None


def with_format_hint(e: IngestError, sources: Sequence[Source], fmt: str,
                     cfg: IngestConfig) -> IngestError:
    """``e`` with "looks like ...: use --format X" appended when its file looks like format X."""
    if isinstance(e, MappingError):
        return e
    src = next((s for s in sources if s.label == e.file), None)
    if src is None:
        return e
    best = likely_format(src, fmt, cfg)
    if best is None:
        return e
    return type(e)(e.file, e.row, e.column,
                   f"{e.reason} (this file looks like {HINT_FORMATS[best][1]}: use --format "
                   f"{best})")
