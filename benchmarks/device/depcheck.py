"""Dependencies of the wheelhouse's packages, as installed on the lent GPU machine.

``gpu_session.sh`` installs the wheelhouse with ``pip install --no-deps --target SITE`` and runs
the image's own interpreter with ``PYTHONPATH=<repo>:SITE``, so pip resolves nothing: this script
checks, for every distribution in SITE (except the ``--no-deps`` test packages of
``requirements-nodeps.txt``), that each of its requirements is met by the version the interpreter
sees first (SITE's, else the image's).

    python depcheck.py SITE WHEELHOUSE              # report unmet requirements (exit 0)
    python depcheck.py SITE WHEELHOUSE --fallbacks  # print the [fallback] pins that fix some

A ``[fallback]`` pin (``requirements-fallback.txt`` of the wheelhouse) is printed when a
requirement on that package is unmet by the image's version and met by the pin.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:  # pip's own copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import Version


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """``name -> version`` of a ``name==version`` requirements file (absent: empty)."""
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().split("\n"):
        if "==" in line:
            name, version = line.split(";")[0].strip().split("==")
            out[canonical(name)] = version.strip()
    return out


def unmet(site: Path, skip: set[str]) -> list[tuple[str, Requirement, str | None]]:
    """(distribution, requirement, version seen or None) for each unmet requirement."""
    out = []
    for dist in md.distributions(path=[str(site)]):
        name = canonical(dist.metadata["Name"])
        if name in skip:
            continue
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                seen: str | None = md.version(req.name)
            except md.PackageNotFoundError:
                seen = None
            if seen is None or not req.specifier.contains(Version(seen), prereleases=True):
                out.append((name, req, seen))
    return out


def main(argv: list[str]) -> int:
    site, wheelhouse = Path(argv[0]), Path(argv[1])
    nodeps = set(pins(wheelhouse / "requirements-nodeps.txt"))
    problems = unmet(site, nodeps)
    if "--fallbacks" in argv[2:]:
        fallback = pins(wheelhouse / "requirements-fallback.txt")
        chosen = {canonical(req.name) for _, req, _ in problems
                  if canonical(req.name) in fallback
                  and req.specifier.contains(Version(fallback[canonical(req.name)]), True)}
        for name in sorted(chosen):
            print(f"{name}=={fallback[name]}")
        return 0
    if not problems:
        print(f"every requirement of the {site} packages is met (the --no-deps test packages "
              f"{', '.join(sorted(nodeps))} are not checked)")
    for name, req, seen in problems:
        print(f"UNMET: {name} requires {req}; found {seen or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
