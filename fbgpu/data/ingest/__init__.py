"""Real-data ingest: vendor Level-2 tick files and bar/reference files into the store.

``ingest(store, fmt, paths, date=None, mapping=None) -> ValidationReport`` is the entry point;
see docs/ingest.md for formats, rules and the validation report.
"""

from fbgpu.data.ingest.api import ingest
from fbgpu.data.ingest.errors import RULES, IngestError, MappingError, ValidationReport
from fbgpu.data.ingest.mapping import FORMATS, IngestConfig, Policies, load_config

__all__ = [
    "FORMATS",
    "RULES",
    "IngestConfig",
    "IngestError",
    "MappingError",
    "Policies",
    "ValidationReport",
    "ingest",
    "load_config",
]
