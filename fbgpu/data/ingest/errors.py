"""Ingest errors and the validation report written with every ingest.

:class:`IngestError` is raised for every fatal problem (see docs/ingest.md for which rules are fatal
and which drop and count). It always names the file, the data row (1-based, header excluded; 0 means
the header or the file as a whole) and the column, so that a user can open the file at that spot.

:class:`ValidationReport` collects the per-rule counts of one ingest call. It is written as JSON
under ``<store>/ingest_reports/`` and summarised on one screen through logging.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fbgpu.errors import ExitStatus

logger = logging.getLogger(__name__)

#: Rule names counted by every ingest, in the order the summary shows them.
RULES: tuple[str, ...] = (
    "rows_read",
    "rows_written",
    "duplicates_dropped",
    "rows_reordered",
    "cancellations_separated",
    "status_rows_skipped",
    "trades_unknown_order_id",
    "outside_limit_band",
    "nonpositive_price_or_volume",
    "outside_session",
    "symbols_not_in_master",
    "rows_not_in_master",
    "suspended_rows_added",
    "non_stock_rows_skipped",
    "bars_vwap_outside_range",
    "minute_bars_differing_from_trades",
    "daily_vwap_unknown",
    "float_cap_unknown",
    "suspension_fill_skipped",
    "rows_filtered_out",
    "trades_side_unknown",
    "stock_days_side_unknown",
    "st_from_current_name",
)


class IngestError(Exception):
    """A vendor file cannot be ingested; nothing was written to the store.

    Attributes:
        file: the input file (for archives ``archive.zip!member.csv``), or the store partition
            whose existing schema conflicts.
        row: 1-based data row (header excluded); 0 for the header / the whole file; ``None`` when
            the problem is not tied to one row.
        column: the vendor column name (or canonical field) involved, ``None`` when not tied to one.
        reason: what is wrong, in words.
    """

    exit_status = ExitStatus.REJECTED  # fbgpu/errors.py: the command line's exit status

    def __init__(
        self, file: str | Path, row: int | None, column: str | None, reason: str
    ) -> None:
        self.file = str(file)
        self.row = row
        self.column = column
        self.reason = reason
        where = [f"file {self.file}"]
        if row is not None:
            where.append("header" if row == 0 else f"row {row} (line {row + 1})")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {reason}")


class MappingError(IngestError):
    """The mapping, a config option or a command-line argument is wrong (not the data).

    The command line exits 1 (usage/config) for these and 2 for an :class:`IngestError` about the
    input files (docs/ingest.md, "Exit status"). ``file`` is the mapping file, ``<mapping>`` or
    ``<arguments>``; ``column`` the option.
    """

    exit_status = ExitStatus.USAGE


@dataclass
class ValidationReport:
    """Counts per rule for one ingest call, plus per-table details.

    ``counts`` maps rule name (see :data:`RULES`) to the number of rows (or symbols, for
    ``symbols_not_in_master``) the rule touched. ``tables`` maps ``table/date`` to the rows written
    there. ``details`` holds rule-specific evidence (first examples, minute-bar differences per
    symbol, index weight sums, ...), ``notes`` free-text remarks (e.g. why unknown order ids are
    normal for SSE).
    """

    format: str
    files: list[str] = field(default_factory=list)
    dates: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULES, 0))
    tables: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )
    path: str | None = None

    def add(self, rule: str, n: int) -> None:
        """Add ``n`` to the count of ``rule``."""
        self.counts[rule] = self.counts.get(rule, 0) + int(n)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False, default=str)

    def summary(self) -> str:
        """A one-screen text summary: files, dates, non-zero counts, tables written, notes."""
        lines = [
            f"ingest {self.format}: {len(self.files)} file(s), "
            f"{len(self.dates)} date(s) {self.dates[0] if self.dates else ''}"
            f"{'..' + self.dates[-1] if len(self.dates) > 1 else ''}"
        ]
        width = max(len(r) for r in self.counts) if self.counts else 0
        for rule, n in self.counts.items():
            if n or rule in ("rows_read", "rows_written"):
                lines.append(f"  {rule:<{width}}  {n:>12,}")
        shown = list(self.tables.items())
        for key, n in shown[:12]:
            lines.append(f"  wrote {key}: {n:,} rows")
        if len(shown) > 12:
            lines.append(f"  ... and {len(shown) - 12} more partitions")
        lines.extend(f"  note: {t}" for t in self.notes)
        if self.path:
            lines.append(f"  report: {self.path}")
        return "\n".join(lines)

    def log(self) -> None:
        for line in self.summary().splitlines():
            logger.info(line)
