"""Chunked, atomic writing of one large tick partition (a table x date), stock chunk by chunk.

:meth:`fbgpu.data.store.Store.write` takes a whole day in memory; a full-market day of ticks is
tens of millions of rows, so the generator streams it instead: each chunk of stocks (already in
canonical ``(symbol, seq)`` order, chunks in symbol order) is appended as row groups to a hidden
temporary file in the partition directory; :meth:`close` fsyncs it, renames it over
``part-0.parquet`` and writes the manifest, exactly like the store does (same layout, same
atomicity guarantee, same manifest format), so readers cannot tell the difference.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import uuid
from dataclasses import asdict

import pyarrow as pa
import pyarrow.parquet as pq

from fbgpu.data.schemas import schema_for
from fbgpu.data.store import MANIFEST_NAME, Manifest, Store, atomic_write_bytes, code_version


class ChunkedPartitionWriter:
    """Append canonical-schema chunks to one partition; :meth:`close` publishes it atomically."""

    def __init__(self, store: Store, table: str, date: dt.date, *, config_hash_: str = "",
                 extra: dict[str, object] | None = None) -> None:
        self.store = store
        self.table = table
        self.date = date
        self.schema = schema_for(table)
        self.config_hash = config_hash_
        self.extra = dict(extra or {})
        self.path = store.partition_path(table, date)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex}.tmp"
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            self._tmp, self.schema, compression="zstd")
        self.rows = 0

    def write(self, chunk: pa.Table) -> None:
        """Append rows (must already carry the canonical schema and order)."""
        if self._writer is None:
            raise RuntimeError(f"{self.table}/{self.date}: writer already closed")
        if chunk.schema != self.schema:
            raise ValueError(f"{self.table}/{self.date}: chunk schema {chunk.schema} is not "
                             f"the canonical {self.schema}")
        if chunk.num_rows:
            self._writer.write_table(chunk, row_group_size=1 << 20)
            self.rows += chunk.num_rows

    def close(self) -> Manifest:
        """Finish the file, fsync, rename into place, write the manifest; return it."""
        if self._writer is None:
            raise RuntimeError(f"{self.table}/{self.date}: writer already closed")
        if self.rows == 0:
            self._writer.write_table(self.schema.empty_table())
        self._writer.close()
        self._writer = None
        h = hashlib.sha256()
        with open(self._tmp, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        man = Manifest(table=self.table, date=self.date.isoformat(), rows=self.rows,
                       sha256=h.hexdigest(), code_version=code_version(),
                       config_hash=self.config_hash, inputs={}, extra=self.extra)
        atomic_write_bytes(self.path.parent / MANIFEST_NAME,
                           json.dumps(asdict(man), indent=1).encode())
        return man

    def abort(self) -> None:
        """Drop the temporary file (the previous partition, if any, stays intact)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()
