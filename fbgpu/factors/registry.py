"""The factor registry: one entry per factor (name, family, direction, formula, NaN rules)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Family = Literal["minute", "trade", "order"]
FAMILIES: tuple[Family, ...] = ("minute", "trade", "order")


@dataclass(frozen=True)
class FactorSpec:
    """A registered factor.

    ``compute(ctx)`` maps the family's day context (:mod:`fbgpu.factors.context`) to one float64
    value per stock of that source (``xp`` array). ``formula`` is the function's docstring: the
    definition in words and symbols. ``min_obs`` says which minimum-count rule applies.
    """

    name: str
    family: Family
    direction: int
    min_obs: str
    compute: Callable[[Any], Any]

    @property
    def formula(self) -> str:
        return inspect.cleandoc(self.compute.__doc__ or "")


#: name -> spec, in the order of the spec's tables (minute, trade, order).
FACTORS: dict[str, FactorSpec] = {}


def factor(
    name: str, family: Family, direction: int, min_obs: str = "none (ratio or sum)"
) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register the decorated ``compute(ctx)`` as factor ``name``."""

    def deco(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if name in FACTORS:
            raise ValueError(f"factor {name!r} registered twice")
        if family not in FAMILIES or direction not in (-1, 1):
            raise ValueError(f"factor {name!r}: bad family {family!r} or direction {direction}")
        if not (fn.__doc__ or "").strip():
            raise ValueError(f"factor {name!r} needs its formula as docstring")
        FACTORS[name] = FactorSpec(name, family, direction, min_obs, fn)
        # Keep the spec's order (minute, trade, order families) whatever the import order.
        ordered = sorted(FACTORS.items(), key=lambda kv: FAMILIES.index(kv[1].family))
        FACTORS.clear()
        FACTORS.update(ordered)
        return fn

    return deco


def factor_names(family: Family | None = None) -> list[str]:
    """Registered names (of one family), in registry order."""
    return [n for n, f in FACTORS.items() if family is None or f.family == family]


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
