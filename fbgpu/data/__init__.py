"""Data layer: canonical schemas, the Parquet store, ingest and the synthetic market."""

from fbgpu.data.store import DayTicks, Manifest, MinuteDay, Panel, Store, StoreError

__all__ = ["DayTicks", "Manifest", "MinuteDay", "Panel", "Store", "StoreError"]
