"""One TOML file configures every step: a section per step, every key with a documented default.

Sections and the classes that validate them:

=============  =====================================================  ====================
section        class                                                  used by
=============  =====================================================  ====================
``[demo]``     :class:`fbgpu.pipeline.DemoConfig`                     ``fbgpu demo``
``[synth]``    :class:`fbgpu.data.synth.SynthConfig` (preset fields)  ``fbgpu synth``
``[factors]``  :class:`fbgpu.factors.FactorConfig`                    ``fbgpu factors``
``[evaluate]`` :class:`fbgpu.evaluate.EvaluateConfig`                 ``fbgpu evaluate``
``[train]``    :class:`fbgpu.models.TrainConfig`                      ``fbgpu train``
``[backtest]`` :class:`fbgpu.portfolio.BacktestConfig`                ``fbgpu backtest``
=============  =====================================================  ====================

``docs/config.md`` is generated from these classes by :func:`config_markdown` (a test keeps it
current), so the documented defaults are the code's defaults.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fbgpu.errors import ExitStatus


def config_classes() -> dict[str, type]:
    """Section name -> configuration class."""
    from fbgpu.data.synth import SynthConfig
    from fbgpu.evaluate import EvaluateConfig
    from fbgpu.factors import FactorConfig
    from fbgpu.models import TrainConfig
    from fbgpu.pipeline import DemoConfig
    from fbgpu.portfolio import BacktestConfig

    return {"demo": DemoConfig, "synth": SynthConfig, "factors": FactorConfig,
            "evaluate": EvaluateConfig, "train": TrainConfig, "backtest": BacktestConfig}


class ConfigError(ValueError):
    """A configuration file is malformed or names an unknown section or key."""

    exit_status = ExitStatus.USAGE  # fbgpu/errors.py: the command line's exit status


#: Sections read by commands outside :func:`config_classes`: ``[ingest]`` (``fbgpu ingest
#: --config``: format and mapping, docs/ingest.md) and ``[bench]`` (the benchmark suite's sizes,
#: docs/benchmarks.md).
OTHER_SECTIONS: tuple[str, ...] = ("ingest", "bench")


#: The step sections, i.e. the keys of :func:`config_classes` (a test checks they agree); a
#: constant so that checking a file's sections does not import every step (torch included).
STEP_SECTIONS: tuple[str, ...] = ("demo", "synth", "factors", "evaluate", "train", "backtest")


def known_sections() -> list[str]:
    """Every top-level section a config file may hold, sorted."""
    return sorted({*STEP_SECTIONS, *OTHER_SECTIONS})


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML config file; :class:`ConfigError` names the file when it is missing, not a
    readable UTF-8 text file (a binary file, a directory) or not valid TOML."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"config file {p} not found") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {e.start} is "
                          f"0x{e.object[e.start]:02x}): is it a binary file?") from e
    except OSError as e:
        raise ConfigError(f"config file {p} cannot be read: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p}: {e}") from e


def check_sections(data: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """``data`` if every top-level name is a known section (:func:`known_sections`), else a
    :class:`ConfigError` naming the file, the unknown names and the known ones."""
    unknown = sorted(set(data) - set(known_sections()))
    if unknown:
        raise ConfigError(f"config file {path}: unknown sections {unknown}; "
                          f"known: {known_sections()}")
    return data


def load_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a TOML config; unknown sections are an error (keys are checked by each step)."""
    return check_sections(read_toml(path), path)


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def _doc_entry(doc: str, name: str) -> str:
    """The docstring entry describing ``name`` (its line plus continuation lines), or ""."""
    lines = doc.splitlines()
    pats = (f"``{name}``", f"{name}:", f"{name},", f", {name}", f"; {name} (")
    for i, ln in enumerate(lines):
        s = ln.strip()
        if any(s.startswith((p, f"* {p}")) or f" {p}" in s or (p[0] in ",;" and p in s)
               for p in pats):
            indent = len(ln) - len(ln.lstrip())
            out = [s.removeprefix("* ")]
            for nxt in lines[i + 1:]:
                ns = nxt.strip()
                if not ns or ns.startswith("*") or len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                out.append(ns)
            return " ".join(out)
    return ""


def section_fields(cls: type) -> list[tuple[str, Any, str]]:
    """``(key, default, description)`` of every key of a config class (pydantic or dataclass)."""
    out: list[tuple[str, Any, str]] = []
    if issubclass(cls, BaseModel):
        for name, f in cls.model_fields.items():
            default = f.default_factory() if f.default_factory is not None else f.default
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            desc = f.description or _doc_entry(cls.__doc__ or "", name)
            out.append((name, _jsonable(default), desc))
    elif dataclasses.is_dataclass(cls):
        doc = cls.__doc__ or ""
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            if dataclasses.is_dataclass(default):
                default = dataclasses.asdict(default)
            desc = _doc_entry(doc, f.name).removeprefix(f"{f.name}: ")  # the key column names it
            out.append((f.name, _jsonable(default), desc))
    else:  # pragma: no cover - every section class is one of the two
        raise TypeError(f"{cls} is neither a pydantic model nor a dataclass")
    return out


def config_markdown() -> str:
    """The text of ``docs/config.md``: every section, key, default and description."""
    lines = [
        "# Configuration",
        "",
        "Every command takes `--config FILE.toml`; each step reads its own section. Keys left",
        "out keep the defaults below. This page is generated from the configuration classes by",
        "`python -m fbgpu.config > docs/config.md` (a test checks it is current).",
        "",
        "`[synth]` keys override the fields of the chosen preset (`[demo] preset`), whose values",
        "differ from the class defaults shown here; see docs/synth.md for the presets. The demo",
        "trains with the documented demo override of `[train]` (docs/models.md).",
        "",
        "`[bench]` (`fbgpu bench --config`) is read by the benchmark suite, which lives outside",
        "the package in `benchmarks/`: its keys are in docs/benchmarks.md (\"Sizes\").",
        "",
    ]
    for section, cls in config_classes().items():
        lines += [f"## [{section}]", "", f"`{cls.__module__}.{cls.__qualname__}`", "",
                  "| key | default | meaning |", "|---|---|---|"]
        for key, default, desc in section_fields(cls):
            d = json.dumps(default) if not isinstance(default, str) else default
            desc = desc.replace("|", "\\|").replace("\n", " ")
            d = d.replace("|", "\\|")
            lines.append(f"| `{key}` | `{d}` | {desc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(config_markdown(), end="")
