"""Loading a researcher's own factor modules (docs/user-factors.md).

A user module is a Python file (``path/to/my_factors.py``) or an importable dotted name
(``mypkg.factors``) whose top level registers factors with :func:`fbgpu.factor`. Loading it
registers them next to the 27 built-ins; they are then computed in the same passes, stored in the
same ``factors`` table (marked as user factors in its manifest), evaluated and trained like the
built-ins.

A module travels as its *source text* (:class:`UserModule`): Dask workers load the same source
without needing the file, and the source's hash versions the module's columns in the store (a
changed module recomputes only its own columns).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fbgpu.errors import ExitStatus
from fbgpu.factors.registry import FACTORS, FactorDefinitionError, unregister

log = logging.getLogger(__name__)

#: Prefix of the ``sys.modules`` names given to modules loaded from a file.
MODULE_PREFIX = "fbgpu_user_factors."


class UserModuleError(ValueError):
    """A user factor module cannot be found, imported or registered."""

    exit_status = ExitStatus.USAGE  # fbgpu/errors.py: the command line's exit status


@dataclass(frozen=True)
class UserModule:
    """One loaded user module: where it came from, its source and the factors it registered."""

    origin: str  # the path or dotted name the user gave
    source: str
    names: tuple[str, ...]

    @property
    def sha256(self) -> str:
        """Hash of the source text (versions this module's columns in the store)."""
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]


#: origin -> loaded module (so loading the same module twice is a no-op).
LOADED: dict[str, UserModule] = {}


def _module_name(origin: str) -> str:
    digest = hashlib.sha256(origin.encode()).hexdigest()[:12]
    stem = Path(origin).stem if origin.endswith(".py") else origin.replace(".", "_")
    safe = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in stem)
    return f"{MODULE_PREFIX}{safe}_{digest}"


def _read_source(ref: str, base: Path | None) -> tuple[str, str, str | None]:
    """``(origin, source, file)`` of a module reference (a .py path or a dotted name)."""
    if ref.endswith(".py") or "/" in ref or "\\" in ref:
        p = Path(ref).expanduser()
        if not p.is_absolute() and base is not None and (base / p).exists():
            p = base / p
        if not p.is_file():
            raise UserModuleError(f"factor module {ref}: no such file")
        try:
            return str(p.resolve()), p.read_text(encoding="utf-8"), str(p.resolve())
        except (OSError, UnicodeDecodeError) as e:
            raise UserModuleError(f"factor module {ref}: cannot read it: {e}") from e
    try:
        spec = importlib.util.find_spec(ref)
    except (ImportError, ValueError) as e:
        raise UserModuleError(f"factor module {ref!r}: cannot import it: {e}") from e
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise UserModuleError(f"factor module {ref!r}: no such module (a .py path or an "
                              "importable dotted name)")
    return ref, Path(spec.origin).read_text(encoding="utf-8"), spec.origin


def load_source(origin: str, source: str, file: str | None = None) -> UserModule:
    """Execute a module's ``source`` as a fresh module and return what it registered.

    Its factors are registered under the module name this function gives it; a module that
    registers nothing, or whose registration fails, leaves the registry as it was.
    """
    if origin in LOADED and LOADED[origin].source == source:
        return LOADED[origin]
    name = _module_name(origin)
    unregister(name)
    mod = types.ModuleType(name)
    mod.__file__ = file or f"<{origin}>"
    sys.modules[name] = mod
    try:
        code = compile(source, file or f"<{origin}>", "exec")
        exec(code, mod.__dict__)  # running the user's module is the point
    except FactorDefinitionError as e:
        unregister(name)
        sys.modules.pop(name, None)
        raise UserModuleError(f"factor module {origin}: {e}") from e
    except Exception as e:
        unregister(name)
        sys.modules.pop(name, None)
        raise UserModuleError(
            f"factor module {origin}: importing it raised {type(e).__name__}: {e}") from e
    names = tuple(n for n, s in FACTORS.items() if s.module == name)
    if not names:
        sys.modules.pop(name, None)
        raise UserModuleError(f"factor module {origin} registers no factor (decorate "
                              "functions with @fbgpu.factor(name, family, direction))")
    um = UserModule(origin, source, names)
    LOADED[origin] = um
    log.info("factor module %s: %d factor(s) %s", origin, len(names), ", ".join(names))
    return um


def load_modules(refs: Iterable[str], base: Path | str | None = None) -> list[UserModule]:
    """Load user factor modules (``.py`` paths, relative to ``base`` when given and found there,
    or dotted names). Raises :class:`UserModuleError` naming the module and the problem."""
    out = []
    for ref in refs:
        origin, source, file = _read_source(str(ref), Path(base) if base else None)
        out.append(load_source(origin, source, file))
    return out


def unload(modules: Sequence[UserModule] | None = None) -> None:
    """Unregister user modules (default: all loaded ones)."""
    for um in list(modules if modules is not None else LOADED.values()):
        name = _module_name(um.origin)
        unregister(name)
        sys.modules.pop(name, None)
        LOADED.pop(um.origin, None)


def module_of(name: str) -> UserModule | None:
    """The loaded user module that defines factor ``name`` (None for built-ins)."""
    spec = FACTORS.get(name)
    if spec is None or spec.builtin:
        return None
    for um in LOADED.values():
        if name in um.names and _module_name(um.origin) == spec.module:
            return um
    return None


def origin_of(module: str) -> str:
    """The path or dotted name a user gave for the module registered as ``module``."""
    for um in LOADED.values():
        if _module_name(um.origin) == module:
            return um.origin
    return module
