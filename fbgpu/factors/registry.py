"""The factor registry: one entry per factor (name, family, direction, formula, NaN rules).

The 27 built-in factors and a researcher's own (user) factors are registered the same way, with
the :func:`factor` decorator (public as ``fbgpu.factor``). A factor registered from outside the
``fbgpu`` package is a *user* factor: it is stored, evaluated and trained like the built-ins and
marked as a user factor in the ``factors`` table's manifest (docs/user-factors.md).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fbgpu.errors import ExitStatus

Family = Literal["minute", "trade", "order"]
FAMILIES: tuple[Family, ...] = ("minute", "trade", "order")
#: Where the built-in factors live; a factor defined in any other module is a user factor.
BUILTIN_PACKAGE = "fbgpu.factors."


class FactorDefinitionError(ValueError):
    """A factor cannot be registered (name clash, unknown family, no formula, bad direction)."""

    exit_status = ExitStatus.USAGE  # fbgpu/errors.py: the command line's exit status


@dataclass(frozen=True)
class FactorSpec:
    """A registered factor.

    ``compute(ctx)`` maps the family's day context (:mod:`fbgpu.factors.context`) to one float64
    value per stock of that source (``xp`` array of shape ``[ctx.S]``). ``formula`` is the
    function's docstring: the definition in words and symbols. ``min_obs`` says which
    minimum-count rule applies. ``cancels``: an ``order`` factor that also reads the day's
    cancellations (``ctx.cancels``), which are then loaded. ``module`` is where it was defined
    (a dotted name or a file path); ``builtin`` is False for user factors.
    """

    name: str
    family: Family
    direction: int
    min_obs: str
    compute: Callable[[Any], Any]
    cancels: bool = False
    module: str = ""

    @property
    def formula(self) -> str:
        return inspect.cleandoc(self.compute.__doc__ or "")

    @property
    def builtin(self) -> bool:
        return self.module.startswith(BUILTIN_PACKAGE)


#: name -> spec, in the order of the spec's tables (minute, trade, order), built-ins first.
FACTORS: dict[str, FactorSpec] = {}


def factor(
    name: str,
    family: Family,
    direction: int,
    min_obs: str = "none (ratio or sum)",
    *,
    cancels: bool = False,
) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register the decorated ``compute(ctx) -> values[ctx.S]`` as factor ``name``.

    Args:
        name: the column name in the ``factors`` table (a Python identifier, unique).
        family: ``"minute"`` (1-minute bars), ``"trade"`` (tick trades with reconstructed
            orders) or ``"order"`` (new orders; with ``cancels=True`` also the cancellations).
        direction: +1 when high values are expected to predict high returns, -1 otherwise.
        min_obs: the minimum-count rule in words (shown in docs and reports).
        cancels: an ``order`` factor that reads ``ctx.cancels``.

    The function's docstring is the formula; it is required. Re-registering a name from the
    same module replaces it (reloading a module); from another module it is an error.
    """

    def deco(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        module = getattr(fn, "__module__", "") or ""
        if not isinstance(name, str) or not name.isidentifier():
            raise FactorDefinitionError(f"factor name {name!r} ({module}) must be an identifier")
        if name in ("date", "symbol"):
            raise FactorDefinitionError(f"factor name {name!r} ({module}) is a reserved column")
        old = FACTORS.get(name)
        if old is not None and old.module != module:
            kind = "a built-in factor" if old.builtin else f"a factor of {old.module}"
            raise FactorDefinitionError(f"factor {name!r} ({module}) clashes with {kind}")
        if family not in FAMILIES:
            raise FactorDefinitionError(
                f"factor {name!r} ({module}): unknown family {family!r}; families: "
                f"{', '.join(FAMILIES)} (cancellations: family 'order' with cancels=True)")
        if direction not in (-1, 1):
            raise FactorDefinitionError(
                f"factor {name!r} ({module}): direction must be +1 or -1, got {direction!r}")
        if cancels and family != "order":
            raise FactorDefinitionError(
                f"factor {name!r} ({module}): cancels=True needs family 'order'")
        if not (fn.__doc__ or "").strip():
            raise FactorDefinitionError(
                f"factor {name!r} ({module}) needs its formula as docstring")
        FACTORS[name] = FactorSpec(name, family, direction, min_obs, fn, cancels, module)
        # Keep the spec's order (minute, trade, order families; built-ins before user factors)
        # whatever the import order.
        ordered = sorted(FACTORS.items(),
                         key=lambda kv: (not kv[1].builtin, FAMILIES.index(kv[1].family)))
        FACTORS.clear()
        FACTORS.update(ordered)
        return fn

    return deco


def unregister(module: str) -> list[str]:
    """Remove every factor defined in ``module``; returns their names."""
    gone = [n for n, s in FACTORS.items() if s.module == module]
    for n in gone:
        del FACTORS[n]
    return gone


def factor_names(family: Family | None = None) -> list[str]:
    """Registered names (of one family), in registry order."""
    return [n for n, f in FACTORS.items() if family is None or f.family == family]


def builtin_names() -> list[str]:
    """The built-in factors' names, in registry order."""
    return [n for n, f in FACTORS.items() if f.builtin]


def resolve_names(names: list[str] | tuple[str, ...] | str | None) -> list[str]:
    """Validate a selection (None = all; a comma-separated string is accepted), registry order.

    Raises ``KeyError`` naming the unknown factors and listing the known ones.
    """
    if names is None:
        return list(FACTORS)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in FACTORS]
    if unknown:
        raise KeyError(f"unknown factor(s) {unknown}; known: {', '.join(FACTORS)}")
    if not names:
        raise KeyError("empty factor selection")
    wanted = set(names)
    return [n for n in FACTORS if n in wanted]
