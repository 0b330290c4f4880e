"""Configuration of the factor step (``[factors]`` table of the TOML config).

A frozen dataclass checked in ``__post_init__`` rather than a pydantic model: ``fbgpu factors``
imports this module before its first read, and pydantic's import (~0.05-0.07 s, a quarter of the
command's imports; issue #16) bought nothing here that a few explicit checks do not.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

#: The rules that judge a reconstructed order big (``big_order_rule``).
BIG_ORDER_RULES: tuple[str, ...] = ("mean_plus_k_std", "fixed_notional")


def _real(name: str, v: Any, *, lo: float, lo_open: bool, hi: float = math.inf) -> float:
    """``v`` (an int or float, not a bool) as a finite float with ``lo <= v <= hi``
    (``lo < v`` when ``lo_open``); otherwise a ValueError naming the key."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{name} must be a number, got {v!r}")
    try:
        f = float(v)
    except OverflowError:  # an int beyond a double's range
        f = math.inf
    if not math.isfinite(f) or f < lo or (lo_open and f == lo) or f > hi:
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        high = "" if math.isinf(hi) else f" and <= {hi:g}"
        raise ValueError(f"{name} must be a finite number {low}{high}, got {v!r}")
    return f


def _count(name: str, v: Any, *, lo: int) -> int:
    """``v`` as an int ``>= lo`` (a float with no fractional part is accepted, as TOML writers
    may emit ``10.0``; bools are not numbers here); otherwise a ValueError naming the key."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} must be a whole number, got {v!r}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v!r}")
    return v


@dataclass(frozen=True)
class FactorConfig:
    """Every knob of the 27 factor definitions, with the spec's defaults (spec/factors.md).

    Changing any value changes the config hash, so the ``factors`` partitions are recomputed.
    Unknown keys are a TypeError (a ValueError naming the file from :meth:`from_toml`); ints are
    accepted for the float keys and stored as floats; bools and strings are refused.

    Attributes:
        big_order_rule: How a reconstructed order is judged big: amount >= mean + k * std of the
            stock-day's order amounts (population std; all-equal amounts make every order big),
            or amount >= big_order_notional CNY.
        big_order_k: The multiplier k of the mean + k * std rule (finite, >= 0).
        big_order_notional: CNY threshold of the fixed_notional rule (finite, > 0).
        min_obs_day: Minimum observations for full-day moments and correlations (>= 1).
        min_obs_window: Minimum observations for 30-minute-window moments/correlations (>= 1).
        bigorder_ret_top_frac: Share of traded minutes (by amount per trade) kept by
            bigorder_ret: ceil(frac * n) minutes, computed exactly on the decimal fraction
            (0 < frac <= 1).
        modules: User factor modules to load (docs/user-factors.md): .py paths (relative to
            the config file) or importable dotted names. Their factors are computed with the
            built-ins; the list itself is not part of any hash (each module's source is).
    """

    big_order_rule: str = "mean_plus_k_std"
    big_order_k: float = 1.0
    big_order_notional: float = 1_000_000.0
    min_obs_day: int = 10
    min_obs_window: int = 5
    bigorder_ret_top_frac: float = 0.3
    modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.big_order_rule not in BIG_ORDER_RULES:
            raise ValueError(f"big_order_rule must be one of {list(BIG_ORDER_RULES)}, "
                             f"got {self.big_order_rule!r}")
        mods = self.modules
        if isinstance(mods, str) or not isinstance(mods, (list, tuple)) or not all(
                isinstance(m, str) for m in mods):
            raise ValueError(f"modules must be a list of strings, got {mods!r}")
        checked = {
            "big_order_k": _real("big_order_k", self.big_order_k, lo=0.0, lo_open=False),
            "big_order_notional": _real("big_order_notional", self.big_order_notional,
                                        lo=0.0, lo_open=True),
            "min_obs_day": _count("min_obs_day", self.min_obs_day, lo=1),
            "min_obs_window": _count("min_obs_window", self.min_obs_window, lo=1),
            "bigorder_ret_top_frac": _real("bigorder_ret_top_frac", self.bigorder_ret_top_frac,
                                           lo=0.0, lo_open=True, hi=1.0),
            "modules": tuple(mods),
        }
        for name, value in checked.items():  # frozen: the normalised values go in this way
            object.__setattr__(self, name, value)

    def hash_fields(self) -> dict[str, object]:
        """The fields that define the built-in factors' values (``modules`` excluded), in
        declaration order, as JSON values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "modules"}

    def to_dict(self) -> dict[str, object]:
        """Every field as JSON values (``modules`` as a list): ``FactorConfig(**d)`` rebuilds it."""
        return {**self.hash_fields(), "modules": list(self.modules)}

    def replace(self, **changes: Any) -> FactorConfig:
        """A copy with ``changes`` applied and checked."""
        return dataclasses.replace(self, **changes)

    @property
    def top_frac_fraction(self) -> Fraction:
        """``bigorder_ret_top_frac`` as the exact decimal fraction (0.3 -> 3/10)."""
        return Fraction(str(self.bigorder_ret_top_frac)).limit_denominator(10**9)

    @classmethod
    def from_toml(cls, path: str | Path | None) -> FactorConfig:
        """Read the ``[factors]`` table of a TOML file: defaults when a sectioned file has no such
        table, and the whole file when it has no sections at all.

        ``None`` gives the defaults. Unknown keys are an error naming the file.
        """
        if path is None:
            return cls()
        from fbgpu.config import check_sections, known_sections, read_toml

        p = Path(path)
        data = read_toml(p)  # ConfigError (a ValueError) naming the file
        # A sectioned config (the whole pipeline's file) without [factors] means the defaults;
        # a file of bare FactorConfig keys is the factor step's own file.
        sectioned = "factors" in data or any(
            k in known_sections() and isinstance(v, dict) for k, v in data.items())
        if sectioned:
            check_sections(data, p)
        section = dict(data.get("factors", {}) if sectioned else data)
        mods = section.get("modules")
        if isinstance(mods, list):
            # Paths are relative to the config file; dotted names stay as they are.
            section["modules"] = [
                str((p.parent / m).resolve())
                if isinstance(m, str) and m.endswith(".py") and not Path(m).is_absolute()
                else m for m in mods]
        try:
            return cls.from_mapping(section)
        except ValueError as e:
            raise ValueError(f"{p}: invalid [factors] configuration: {e}") from e

    @classmethod
    def from_mapping(cls, section: dict[str, Any]) -> FactorConfig:
        """Build from a ``[factors]`` table already parsed: unknown keys are a ValueError
        naming them (the constructor's own would be a TypeError)."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise ValueError(f"unknown keys {unknown}; known: {known}")
        return cls(**section)
