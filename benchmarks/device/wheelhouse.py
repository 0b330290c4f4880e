"""Build the wheelhouse that the lent GPU machine installs from (``make gpu-wheelhouse``).

That machine has no network: every package fbgpu, its tests and its benchmarks need and its image
lacks travels as a wheel. This script downloads exactly the wheels listed in
``requirements-device.txt`` (``--no-deps``, for the target Python and manylinux x86_64), checks that
every dependency of an ``[install]`` wheel is either another wheel here or a package of the image
(``image-packages.txt``), stores wheels larger than ``--xz-above`` MiB recompressed as ``.whl.xz``
(their zip members stored, the whole xz-compressed: the 51 MiB polars runtime becomes 31 MiB, so
the carried working tree stays well inside its 64 MiB), and writes the install lists that
``gpu_session.sh`` reads:

* ``requirements-install.txt``, ``requirements-nodeps.txt``, ``requirements-fallback.txt``: the
  lines of each section (``gpu_session.sh`` installs the first two, and a fallback only where
  ``depcheck.py`` finds the image's version of that package too old);
* ``MANIFEST.txt``: the target, every file with its size, and the total.

Usage: ``python benchmarks/device/wheelhouse.py [--python-version 3.12] [--out .wheelhouse]``.
Re-running downloads only what is missing and removes stale files (another version or Python).
"""

from __future__ import annotations

import argparse
import email.parser
import io
import lzma
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # a bare venv: pip's own copy
    from pip._vendor.packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent
SECTIONS = ("install", "fallback", "nodeps")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_12_x86_64",
             "manylinux2010_x86_64", "manylinux1_x86_64")
MiB = 2**20


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def marker_env(python_version: str) -> dict[str, str]:
    """The PEP 508 environment of CPython ``python_version`` on Linux x86_64."""
    return {"python_version": python_version, "python_full_version": f"{python_version}.0",
            "implementation_name": "cpython", "implementation_version": f"{python_version}.0",
            "platform_python_implementation": "CPython", "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "platform_release": "", "platform_version": "", "extra": ""}


def read_requirements(path: Path, python_version: str) -> dict[str, list[str]]:
    """The requirement lines of each section that apply to ``python_version``."""
    out: dict[str, list[str]] = {s: [] for s in SECTIONS}
    section = None
    env = marker_env(python_version)
    for raw in path.read_text().splitlines():
        line = raw.strip()
        m = re.fullmatch(r"#\s*\[(\w+)\]", line)
        if m:
            if m.group(1) not in SECTIONS:
                raise SystemExit(f"{path}: unknown section [{m.group(1)}]")
            section = m.group(1)
            continue
        if not line or line.startswith("#"):
            continue
        if section is None:
            raise SystemExit(f"{path}: requirement {line!r} before any section")
        req = Requirement(line)
        if len(req.specifier) != 1 or next(iter(req.specifier)).operator != "==":
            raise SystemExit(f"{path}: {line!r} must pin one version (==)")
        if req.marker is None or req.marker.evaluate(env):
            out[section].append(f"{req.name}{req.specifier}")
    return out


def wheel_name(path: Path) -> str:
    return canonical(path.name.split("-")[0])


def fits(path: Path, wanted: dict[str, str], python_version: str) -> bool:
    """Whether the wheel file ``path`` is the pinned version of a wanted package, for the
    target Python."""
    base = path.name.removesuffix(".xz").removesuffix(".whl")
    parts = base.split("-")
    spec = wanted.get(canonical(parts[0]))
    if spec is None or parts[1] != spec.split("==")[1]:
        return False
    py, abi = parts[-3], parts[-2]
    cp = f"cp{python_version.replace('.', '')}"
    return (py.startswith("py3") or py == cp or (abi == "abi3" and py.startswith("cp3")
                                                 and int(py[3:]) <= int(cp[3:])))


def wheel_metadata(path: Path) -> email.message.Message:
    """A wheel's METADATA (``.whl`` or ``.whl.xz``)."""
    data: Path | io.BytesIO = path
    if path.suffix == ".xz":
        data = io.BytesIO(lzma.decompress(path.read_bytes()))
    with zipfile.ZipFile(data) as z:
        meta = next(n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        return email.parser.Parser().parsestr(z.read(meta).decode())


def check_closure(wheels: list[Path], install: set[str], image: set[str],
                  python_version: str) -> list[str]:
    """Dependencies of the ``install`` wheels that are neither a wheel here nor in the image."""
    have = {wheel_name(w) for w in wheels} | image
    env = marker_env(python_version)
    missing = []
    for w in wheels:
        if wheel_name(w) not in install:
            continue
        for line in wheel_metadata(w).get_all("Requires-Dist") or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue  # an extra, or another platform / Python
            if canonical(req.name) not in have:
                missing.append(f"{w.name} needs {line}")
    return missing


def recompress(wheel: Path) -> Path:
    """``wheel`` as ``<wheel>.xz`` beside it: its members stored uncompressed, then xz'd.

    ``gpu_session.sh`` decompresses it back to an installable wheel (a zip of stored members is
    a valid wheel; RECORD hashes the members' contents, which do not change).
    """
    target = wheel.with_name(wheel.name + ".xz")
    buf = io.BytesIO()
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            member = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            member.external_attr = info.external_attr
            zout.writestr(member, zin.read(info), compress_type=zipfile.ZIP_STORED)
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(lzma.compress(buf.getvalue(), preset=9))
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python-version", default="3.12", help="target CPython (default 3.12, "
                    "the device image's)")
    ap.add_argument("--out", type=Path, default=Path(".wheelhouse"))
    ap.add_argument("--requirements", type=Path, default=HERE / "requirements-device.txt")
    ap.add_argument("--image-packages", type=Path, default=HERE / "image-packages.txt")
    ap.add_argument("--xz-above", type=float, default=20.0,
                    help="store wheels larger than this many MiB as .whl.xz")
    ap.add_argument("--max-mib", type=float, default=56.0,
                    help="fail when the wheelhouse is larger (the carry limit is 64 MiB with "
                    "the repository)")
    args = ap.parse_args(argv)
    pv = args.python_version
    if not re.fullmatch(r"3\.\d+", pv):
        ap.error(f"--python-version must look like 3.12, got {pv!r}")
    reqs = read_requirements(args.requirements, pv)
    specs = [s for sec in SECTIONS for s in reqs[sec]]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    wanted = {canonical(re.split(r"[=<>!~ ;]", s)[0]): s for s in specs}

    # Stale files first: another version, a package no longer listed, another Python's build.
    for p in sorted(out.iterdir()):
        if p.name.endswith((".whl", ".whl.xz")) and not fits(p, wanted, pv):
            print(f"wheelhouse: removing stale {p.name}")
            p.unlink()
    present = {wheel_name(p) for p in out.iterdir() if p.name.endswith((".whl", ".whl.xz"))}
    todo = [s for n, s in wanted.items() if n not in present]
    if todo:
        with tempfile.TemporaryDirectory(prefix="wheelhouse-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--python-version", pv, "--implementation", "cp", "--dest", tmp,
                   "--disable-pip-version-check", "--quiet"]
            for plat in PLATFORMS:
                cmd += ["--platform", plat]
            print(f"wheelhouse: downloading {len(todo)} wheel(s) for CPython {pv}", flush=True)
            subprocess.run(cmd + todo, check=True)
            for w in sorted(Path(tmp).glob("*.whl")):
                if w.stat().st_size > args.xz_above * MiB:
                    print(f"wheelhouse: recompressing {w.name} ({w.stat().st_size / MiB:.1f} "
                          "MiB) as .whl.xz", flush=True)
                    shutil.move(recompress(w), out / (w.name + ".xz"))
                else:
                    shutil.move(w, out / w.name)

    files = sorted(p for p in out.iterdir() if p.name.endswith((".whl", ".whl.xz")))
    absent = sorted(set(wanted) - {wheel_name(p) for p in files})
    if absent:
        raise SystemExit(f"wheelhouse: no wheel for {absent}")
    image = {canonical(line.strip()) for line in args.image_packages.read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    install = {canonical(re.split(r"[=<>!~ ;]", s)[0]) for s in reqs["install"]}
    missing = check_closure(files, install, image, pv)
    if missing:
        raise SystemExit("wheelhouse: dependencies neither in the wheelhouse nor in the image:\n  "
                         + "\n  ".join(missing))

    (out / "requirements-install.txt").write_text("\n".join(reqs["install"]) + "\n")
    (out / "requirements-nodeps.txt").write_text("\n".join(reqs["nodeps"]) + "\n")
    (out / "requirements-fallback.txt").write_text("\n".join(reqs["fallback"]) + "\n")
    total = sum(p.stat().st_size for p in files)
    lines = [f"python {pv}", f"platform {PLATFORMS[0]} (and older manylinux)",
             *(f"{p.stat().st_size:>10}  {p.name}" for p in files),
             f"{total:>10}  total ({total / MiB:.1f} MiB)"]
    (out / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[2:]))
    if total > args.max_mib * MiB:
        raise SystemExit(f"wheelhouse: {total / MiB:.1f} MiB is over --max-mib {args.max_mib}")
    print(f"wheelhouse: {len(files)} files, {total / MiB:.1f} MiB in {out} (CPython {pv})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
