"""Configuration: docs/config.md is generated from the classes and every key is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbgpu.config import (
    ConfigError,
    config_classes,
    config_markdown,
    load_config_file,
    section_fields,
)

ROOT = Path(__file__).resolve().parents[1]


def test_docs_config_is_current() -> None:
    assert (ROOT / "docs" / "config.md").read_text() == config_markdown(), (
        "docs/config.md is stale: run `python -m fbgpu.config > docs/config.md`")


@pytest.mark.parametrize("section", sorted(config_classes()))
def test_every_key_has_a_default_and_a_description(section: str) -> None:
    fields = section_fields(config_classes()[section])
    assert fields
    undocumented = [k for k, _, desc in fields if not desc.strip()]
    assert not undocumented, f"[{section}] keys without a description: {undocumented}"


def test_unknown_section_and_bad_toml_are_clear_errors(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[factorz]\nk = 1\n")
    with pytest.raises(ConfigError, match=r"unknown sections \['factorz'\]"):
        load_config_file(p)
    p.write_text("[factors\n")
    with pytest.raises(ConfigError, match="c.toml"):
        load_config_file(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "none.toml")
    p.write_text("[factors]\n[train]\n")
    assert set(load_config_file(p)) == {"factors", "train"}
