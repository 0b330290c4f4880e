"""Configuration: docs/config.md is generated from the classes and every key is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbgpu.config import (
    STEP_SECTIONS,
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


CLI_CASES = {
    # a negative board share used to reach numpy as "pvals < 0"
    "negative_share": ("[synth]\nboard_shares = [-0.1, 0.6, 0.3, 0.2]\n",
                       "board_shares must each be in [0, 1]"),
    "unknown_section": ("[train]\nlr = 0.1\n[trian]\nx = 1\n",
                        "unknown sections ['trian']; known: ['backtest', 'bench', 'demo'"),
    # a binary file used to fail with a UnicodeDecodeError that named no file
    "binary": (b"\x7fELF\x02\x01\x01\x00\xf0\xff\x00\x00", "is not UTF-8 text (byte 8 is 0xf0)"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_config_errors_exit_1_naming_file_and_problem(case: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    text, expected = CLI_CASES[case]
    cfg = tmp_path / f"{case}.toml"
    if isinstance(text, bytes):
        cfg.write_bytes(text)
    else:
        cfg.write_text(text)
    store = tmp_path / "store"
    r = subprocess.run([sys.executable, "-m", "fbgpu", "synth", "--store", str(store),
                        "--config", str(cfg)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    err = " ".join(r.stderr.split())  # rich wraps long messages
    assert str(cfg) in err.replace(" ", "") or cfg.name in err
    assert expected in err, err
    assert not store.exists()


def test_other_sections_are_known_and_binary_files_named(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[ingest]\nformat = 'x'\n[bench]\nquick = true\n")
    assert set(load_config_file(p)) == {"ingest", "bench"}
    assert set(STEP_SECTIONS) == set(config_classes())
    p.write_bytes(b"\x00\xfe\xff")
    with pytest.raises(ConfigError, match=r"c\.toml is not UTF-8 text"):
        load_config_file(p)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config_file(tmp_path)  # a directory


def _fbgpu(*args: str) -> tuple[int, str, str]:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "fbgpu", *args], capture_output=True, text=True,
                       timeout=180)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize(("command", "section"), [("factors", "[factors]"),
                                                  ("ingest", "[ingest]")])
def test_help_keeps_section_names(command: str, section: str) -> None:
    # rich markup used to swallow "[factors]" as a tag ("Also  modules in the config")
    code, out, _ = _fbgpu(command, "--help")
    assert code == 0
    assert section in out and "\\[" not in out


def test_factors_refuses_a_bad_factors_table_as_a_process(tmp_path: Path) -> None:
    """`fbgpu factors --config` with a bad [factors] value or key: exit 1, stderr names the file
    and the key, nothing is written to the store."""
    store = tmp_path / "store"
    store.mkdir()
    for body, key in (("min_obs_day = 0", "min_obs_day"), ("big_order_k = true", "big_order_k"),
                      ("big_order_kk = 2", "big_order_kk")):
        cfg = tmp_path / "bad.toml"
        cfg.write_text(f"[factors]\n{body}\n")
        code, _, err = _fbgpu("factors", "--store", str(store), "--config", str(cfg),
                              "--backend", "cpu", "--no-progress")
        assert code == 1 and "bad.toml" in err and key in err, err
        assert list(store.iterdir()) == []


def test_report_takes_the_shared_config(tmp_path: Path) -> None:
    # the option exists and the file is checked first: a good file gets as far as the store
    # check (building a report is covered by the report tests), a bad one stops at the file
    good = tmp_path / "all.toml"
    good.write_text("[train]\nlr = 0.001\n[backtest]\n")
    code, _, err = _fbgpu("report", "--store", str(tmp_path / "none"), "--config", str(good))
    assert code == 1 and "does not exist" in err and "No such option" not in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[reprot]\n")
    code, _, err = _fbgpu("report", "--store", str(tmp_path / "none"), "--config", str(bad))
    assert code == 1 and "reprot" in err
    assert not (tmp_path / "none").exists()


def test_factor_config_from_a_pipeline_file_without_factors_section(tmp_path: Path) -> None:
    """The whole pipeline's file with no [factors] gives the factor defaults; bare keys are the
    factor step's own file; an unknown top-level key next to sections is still an error."""
    from fbgpu.factors import FactorConfig

    sectioned = tmp_path / "pipeline.toml"
    sectioned.write_text("[demo]\nsync_guard = \"off\"\n")
    assert FactorConfig.from_toml(sectioned) == FactorConfig()
    bare = tmp_path / "factors.toml"
    bare.write_text("bigorder_ret_top_frac = 0.2\n")
    assert FactorConfig.from_toml(bare).bigorder_ret_top_frac == 0.2
    mixed = tmp_path / "mixed.toml"
    mixed.write_text("[demo]\nsync_guard = \"off\"\n[nonsense]\nx = 1\n")
    with pytest.raises(ValueError, match="nonsense"):
        FactorConfig.from_toml(mixed)
