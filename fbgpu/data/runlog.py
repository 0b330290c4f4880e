"""The run record of a store (``<root>/run.json``): which steps ran, when, how long, on what.

Every pipeline step appends an entry; the report's run section reads it. Writes are atomic.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from fbgpu.data.store import Store, atomic_write_bytes

RUN_FILE = "run.json"


def read_runlog(store: Store) -> dict[str, Any]:
    """The store's run record: ``{"steps": {name: entry}, "history": [entry, ...]}``."""
    p = Path(store.root) / RUN_FILE
    if not p.exists():
        return {"steps": {}, "history": []}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return {"steps": {}, "history": []}


def record_step(
    store: Store,
    step: str,
    seconds: float,
    *,
    backend: str = "",
    device: str = "",
    config: dict[str, Any] | None = None,
    summary: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """Record that ``step`` finished in ``seconds``; the latest entry per step is kept too."""
    log = read_runlog(store)
    entry = {
        "step": step,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(float(seconds), 3),
        "backend": backend,
        "device": device,
        "config": config or {},
        "summary": summary,
        **extra,
    }
    log.setdefault("steps", {})[step] = entry
    log.setdefault("history", []).append(entry)
    Path(store.root).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(store.root) / RUN_FILE, json.dumps(log, indent=1, default=str).encode())
    return entry
