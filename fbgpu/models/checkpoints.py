"""Checkpoints of trained windows, written atomically, and the resume rule.

Layout under a checkpoint root (``<store>/models`` for :func:`fbgpu.models.run_train`)::

    <root>/<kind>/<retrain date>/seed<k>.pt    weights of every network of the model, one seed
    <root>/<kind>/<retrain date>/window.json   written last: the window is complete

A seed file carries its configuration hash and input fingerprint; ``window.json`` the same plus
the window's dates and validation ICs. A window is *complete* when ``window.json`` and every seed
file exist and all carry the current configuration hash and fingerprint; a complete window is
loaded, not retrained. A seed file alone (an interrupted window) is reused seed by seed.

In :func:`fbgpu.models.run_train` both files are written behind the run by its store writer
(:mod:`fbgpu.data.writebehind`), seed files first and ``window.json`` after them; the run never
reads them back (its own fits are in memory), and a later run finds them because ``run_train``
(or the demo, at the end of its train stage) flushes the writer before returning.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from fbgpu.data.store import atomic_write_bytes
from fbgpu.data.writebehind import StoreWriteBehind
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


def save_seed(path: Path, payload: dict[str, Any], writer: StoreWriteBehind | None = None,
              xp: ModuleType | None = None) -> None:
    """``torch.save`` of ``payload`` (state dicts moved to the CPU) to ``path``, atomically.

    Without ``writer`` the copy of the weights to the host is made here, in one sanctioned block
    per checkpoint (``"checkpoint"``, :func:`fbgpu.engine.guard.sanctioned`), so that on a GPU
    under the sync guard it is allowed and counted rather than raising, and the file is written
    before the call returns.

    With ``writer`` (:class:`fbgpu.data.writebehind.StoreWriteBehind`) the checkpoint is
    written *behind*: every state tensor is wrapped as an array of the backend's namespace
    ``xp`` by DLPack (no copy, same device), the writer starts their host copies through its
    ``to_host_async`` (the persistence crossing, one per tensor) and its thread rebuilds the
    state dicts on the host and writes the same bytes as the synchronous route (tested). The
    file exists only once the writer has flushed; whoever reads it back (a resumed run) must
    flush first. The fitted tensors must not be modified after the call.
    """
    if writer is None:
        payload = dict(payload)
        with sanctioned("checkpoint"):
            payload["states"] = [
                {k: v.detach().to("cpu") for k, v in s.items()} for s in payload["states"]
            ]
        _write_payload(path, payload)
        return
    if xp is None:
        raise ValueError("save_seed with a writer needs the backend's array namespace xp")
    keys = [list(s) for s in payload["states"]]
    tensors = [s[k].detach() for s, ks in zip(payload["states"], keys, strict=True) for k in ks]
    # strides travel apart: torch.save records them, and the synchronous .to("cpu") keeps them
    strides = [t.stride() for t in tensors]
    arrays = [xp.from_dlpack(t.contiguous()) for t in tensors]
    rest = {k: v for k, v in payload.items() if k != "states"}

    def write(host: list[Any]) -> None:
        it = iter(zip(host, strides, strict=True))
        states = [{k: _host_tensor(*next(it)) for k in ks} for ks in keys]
        # the same key order as the synchronous route: torch.save's bytes follow it
        _write_payload(path, {k: (states if k == "states" else rest[k]) for k in payload})

    writer.submit(str(path), None, arrays, write, kind="file")


def _host_tensor(host: Any, stride: tuple[int, ...]) -> torch.Tensor:
    """The host copy of a state tensor as a CPU tensor with the device tensor's strides."""
    t = torch.from_numpy(np.asarray(host))
    if t.stride() == stride:
        return t
    return torch.empty_strided(t.shape, stride, dtype=t.dtype).copy_(t)


def _write_payload(path: Path, payload: dict[str, Any]) -> None:
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


def write_window_manifest(paths: WindowPaths, info: dict[str, Any],
                          writer: StoreWriteBehind | None = None) -> None:
    """Write the window's ``window.json`` (the window is complete), atomically.

    With ``writer`` it is queued behind the window's seed files (the writer runs its jobs in
    submission order), so it still lands last; without, it is written now.
    """
    data = json.dumps(info, indent=1, default=str).encode()
    if writer is None:
        atomic_write_bytes(paths.manifest, data)
    else:
        writer.submit_file(paths.manifest, lambda: atomic_write_bytes(paths.manifest, data))


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
