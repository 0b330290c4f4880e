"""The run record of a store (``<root>/run.json``): which steps ran, when, how long, on what.

Every pipeline step appends an entry; the report's run section reads it. Writes are atomic.
An entry's ``status`` is ``"ok"`` (the step finished: ``finished`` holds the time) or
``"failed"`` (``failed`` holds the time and ``error`` the message; a failed step is never given a
``finished`` time). ``steps`` keeps the latest entry of each step, so a step whose last run
failed shows as failed until it runs again; the other steps' entries are untouched.
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
    status: str = "ok",
    error: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """Record that ``step`` finished (``status="ok"``) or failed (``status="failed"``, with
    ``error``) after ``seconds``; the latest entry per step is kept too."""
    if status not in ("ok", "failed"):
        raise ValueError(f"status must be 'ok' or 'failed', got {status!r}")
    log = read_runlog(store)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    entry: dict[str, Any] = {
        "step": step,
        "status": status,
        ("finished" if status == "ok" else "failed"): now,
        "seconds": round(float(seconds), 3),
        "backend": backend,
        "device": device,
        "config": config or {},
        "summary": summary,
        **({"error": error} if status == "failed" else {}),
        **extra,
    }
    log.setdefault("steps", {})[step] = entry
    log.setdefault("history", []).append(entry)
    Path(store.root).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(store.root) / RUN_FILE, json.dumps(log, indent=1, default=str).encode())
    return entry
