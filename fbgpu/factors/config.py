"""Configuration of the factor step (``[factors]`` table of the TOML config)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class FactorConfig(BaseModel):
    """Every knob of the 27 factor definitions, with the spec's defaults (spec/factors.md).

    Changing any value changes the config hash, so the ``factors`` partitions are recomputed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    big_order_rule: Literal["mean_plus_k_std", "fixed_notional"] = Field(
        "mean_plus_k_std",
        description="How a reconstructed order is judged big: amount >= mean + k * std of the "
        "stock-day's order amounts (population std; all-equal amounts make every order big), "
        "or amount >= big_order_notional CNY.",
    )
    big_order_k: float = Field(1.0, ge=0, description="k of the mean + k * std rule.")
    big_order_notional: float = Field(
        1_000_000.0, gt=0, description="CNY threshold of the fixed_notional rule."
    )
    min_obs_day: int = Field(
        10, ge=1, description="Minimum observations for full-day moments and correlations."
    )
    min_obs_window: int = Field(
        5, ge=1, description="Minimum observations for 30-minute-window moments/correlations."
    )
    bigorder_ret_top_frac: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Share of traded minutes (by amount per trade) kept by bigorder_ret: "
        "ceil(frac * n) minutes, computed exactly on the decimal fraction.",
    )

    modules: tuple[str, ...] = Field(
        (),
        description="User factor modules to load (docs/user-factors.md): .py paths (relative "
        "to the config file) or importable dotted names. Their factors are computed with the "
        "built-ins; the list itself is not part of any hash (each module's source is).",
    )

    def hash_fields(self) -> dict[str, object]:
        """The fields that define the built-in factors' values (``modules`` excluded)."""
        return self.model_dump(mode="json", exclude={"modules"})

    @field_validator("bigorder_ret_top_frac")
    @classmethod
    def _representable(cls, v: float) -> float:
        Fraction(str(v))  # raises on nonsense; keeps the exact decimal for ceil()
        return v

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
            return cls(**section)
        except Exception as e:
            raise ValueError(f"{p}: invalid [factors] configuration: {e}") from e
