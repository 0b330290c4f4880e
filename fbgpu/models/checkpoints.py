"""Checkpoints of trained windows, written atomically, and the resume rule.

Layout under a checkpoint root (``<store>/models`` for :func:`fbgpu.models.run_train`)::

    <root>/<kind>/<retrain date>/seed<k>.pt    weights of every network of the model, one seed
    <root>/<kind>/<retrain date>/window.json   written last: the window is complete

A seed file carries its configuration hash and input fingerprint; ``window.json`` the same plus
the window's dates and validation ICs. A window is *complete* when ``window.json`` and every seed
file exist and all carry the current configuration hash and fingerprint; a complete window is
loaded, not retrained. A seed file alone (an interrupted window) is reused seed by seed.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fbgpu.data.store import atomic_write_bytes
from fbgpu.engine.guard import sanctioned

WINDOW_FILE = "window.json"


@dataclass(frozen=True)
class WindowPaths:
    """Where one (model kind, window) keeps its files."""

    root: Path
    kind: str
    window: str

    @property
    def dir(self) -> Path:
        return self.root / self.kind / self.window

    def seed(self, seed: int) -> Path:
        return self.dir / f"seed{seed}.pt"

    @property
    def manifest(self) -> Path:
        return self.dir / WINDOW_FILE


def save_seed(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` of ``payload`` (state dicts moved to the CPU) to ``path``, atomically.

    The copy of the weights to the host is a persistence crossing of the device path: one
    sanctioned block per checkpoint (``"checkpoint"``, :func:`fbgpu.engine.guard.sanctioned`),
    so that on a GPU under the sync guard it is allowed and counted rather than raising.
    """
    payload = dict(payload)
    with sanctioned("checkpoint"):
        payload["states"] = [
            {k: v.detach().to("cpu") for k, v in s.items()} for s in payload["states"]
        ]
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_seed(path: Path, device: torch.device) -> dict[str, Any] | None:
    """A seed payload with its state dicts on ``device``; None if absent or unreadable."""
    if not path.exists():
        return None
    try:
        # a stored checkpoint going up to the device: a sanctioned upload, like the raw inputs
        with sanctioned("checkpoint load"):
            payload = torch.load(path, map_location=device, weights_only=True)
    except Exception:  # a damaged file is retrained, never trusted
        return None
    return payload if isinstance(payload, dict) and "states" in payload else None


def seed_matches(payload: dict[str, Any] | None, config_hash: str, fingerprint: str) -> bool:
    return (
        payload is not None
        and payload.get("config_hash") == config_hash
        and payload.get("fingerprint") == fingerprint
    )


def write_window_manifest(paths: WindowPaths, info: dict[str, Any]) -> None:
    atomic_write_bytes(paths.manifest, json.dumps(info, indent=1, default=str).encode())


def read_window_manifest(paths: WindowPaths) -> dict[str, Any] | None:
    try:
        return json.loads(paths.manifest.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def window_complete(
    paths: WindowPaths, seeds: tuple[int, ...], config_hash: str, fingerprint: str
) -> bool:
    """True when the window's manifest and all seed files exist for this config and inputs."""
    info = read_window_manifest(paths)
    if info is None:
        return False
    if info.get("config_hash") != config_hash or info.get("fingerprint") != fingerprint:
        return False
    return all(paths.seed(s).exists() for s in seeds)
