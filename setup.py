"""Packaging beyond what pyproject.toml can say: the top-level ``kernels/`` (CUDA C sources) and
``benchmarks/`` (the suite ``fbgpu bench`` runs) ship inside the wheel as ``fbgpu/_kernels`` and
``fbgpu/_bench``, so a wheel install has its GPU kernels and its benchmark suite. An editable
install (``make install``) reads both from the checkout. Metadata lives in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["fbgpu", "fbgpu.*"]), "fbgpu.report.templates",
              "fbgpu._kernels", "fbgpu._bench", "fbgpu._bench.device"],
    package_dir={"fbgpu._kernels": "kernels", "fbgpu._bench": "benchmarks",
                 "fbgpu._bench.device": "benchmarks/device"},
    package_data={
        "fbgpu": ["py.typed"],
        "fbgpu.report.templates": ["*.html"],
        "fbgpu._kernels": ["*.cu", "*.h", "*.cpp", "*.c", "*.md"],
        "fbgpu._bench": ["*.md"],
        "fbgpu._bench.device": ["*"],
    },
)
