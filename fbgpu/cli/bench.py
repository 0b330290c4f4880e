"""``fbgpu bench``: run the benchmark suite (``benchmarks/suite.py``) and write its results.

The suite lives in the repository's ``benchmarks/`` directory, next to the ``fbgpu`` package (the
package is installed editable, and the Docker images copy ``benchmarks/`` too); it is imported
from there so that the benchmarks stay outside the installed library.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import typer

import fbgpu
from fbgpu.cli.common import BACKEND_OPTION, CONFIG_OPTION, STORE_OPTION, done


def benchmarks_dir() -> Path:
    """``<repository>/benchmarks`` next to an editable ``fbgpu`` package, else the copy a wheel
    ships as ``fbgpu/_bench`` (setup.py)."""
    package = Path(fbgpu.__file__).resolve().parent
    checkout = package.parent / "benchmarks"
    return checkout if (checkout / "suite.py").is_file() else package / "_bench"


def load_suite() -> ModuleType:
    """Import ``benchmarks/suite.py``; a clear error when the checkout has no benchmarks."""
    path = benchmarks_dir() / "suite.py"
    if not path.exists():
        raise FileNotFoundError(
            f"the benchmark suite {path} is missing: `fbgpu bench` needs the repository's "
            "benchmarks/ directory next to the fbgpu package (an editable install, or the "
            "Docker image) or a wheel's fbgpu/_bench"
        )
    if "fbgpu_bench_suite" in sys.modules:
        return sys.modules["fbgpu_bench_suite"]
    spec = importlib.util.spec_from_file_location("fbgpu_bench_suite", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fbgpu_bench_suite"] = module  # dataclasses resolve their module by name
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules["fbgpu_bench_suite"]
        raise
    return module


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to ``app``."""

    @app.command("bench")
    def bench(
        store: Path = STORE_OPTION,
        quick: bool = typer.Option(False, "--quick", help="Tiny sizes, one repeat, no Dask: "
                                   "a smoke test (CI, Docker health check)."),
        backend: str = BACKEND_OPTION,
        out: Path | None = typer.Option(None, "--out", help="Directory for bench.json, bench.md "
                                        "and the PNGs (default: <store>/reports/bench)."),
        repeats: int = typer.Option(3, "--repeats", help="Timed runs per measurement "
                                    "(median and min/max are reported; --quick uses 1)."),
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """Benchmark factor throughput (cpu, gpu, pandas, polars), scaling, GRU epochs, OSQP
        rebalances and Dask scale-out; print a table and write JSON, markdown, CSV and PNGs.

        Markets are generated once and cached under <store>/bench-markets/; the report section
        goes to <store>/reports/bench/. Sizes: docs/benchmarks.md (the optional TOML "bench"
        table overrides them).
        """
        if backend.lower() not in ("cpu", "gpu", "auto"):
            raise typer.BadParameter(f"--backend {backend!r} is not one of cpu, gpu, auto",
                                     param_hint="--backend")
        if repeats < 1:
            raise typer.BadParameter(f"--repeats must be >= 1, got {repeats}",
                                     param_hint="--repeats")
        if config is not None and not config.is_file():
            raise typer.BadParameter(f"--config file {config} not found", param_hint="--config")
        if store.exists() and not store.is_dir():
            raise typer.BadParameter(f"--store {store} is not a directory", param_hint="--store")
        suite = load_suite()
        try:
            suite.load_sizes(quick, config)
        except (ValueError, TypeError) as e:  # a bad [bench] table, before any work
            raise typer.BadParameter(str(e), param_hint="--config") from e
        out_dir = out if out is not None else store / "reports" / "bench"
        result = suite.run_suite(out_dir, quick=quick, backend=backend, repeats=repeats,
                                 store=store, config=config)
        sys.stdout.write(suite.render_markdown(result))
        done(f"{suite.summary_line(result)}; results in {out_dir}")
