# fbgpu: the two commands a user needs are `make demo` and `make test`.
# Both build the environment from nothing (a venv in .venv). The Docker images run the same
# install step (`make install`, see docker/), so what CI tests is what the image contains.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# FBGPU_EXTRAS: "dev" (CPU, default), "dev,gpu" for a CUDA 12 machine, "dev,gpu-cu13" for a CUDA
# 13 one. `auto` adds the GPU extra when nvidia-smi sees a GPU: gpu-cu13 when its driver supports
# CUDA 13 or newer, gpu otherwise.
FBGPU_EXTRAS ?= auto
EXTRAS := $(shell if [ "$(FBGPU_EXTRAS)" = "auto" ]; then \
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  v=$$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -n1); \
	  if [ "$${v:-0}" -ge 13 ]; then echo dev,gpu-cu13; else echo dev,gpu; fi; \
	else echo dev; fi; \
	else echo $(FBGPU_EXTRAS); fi)
STORE  ?= ./fbgpu-demo
PYTEST_ARGS ?=
# gpu-wheelhouse: wheels for a lent GPU machine without network (docs/benchmarks.md, "On a lent
# GPU machine"). WHEELHOUSE_PYTHON=3.11 builds one for a rehearsal on a 3.11 interpreter.
WHEELHOUSE        ?= .wheelhouse
WHEELHOUSE_PYTHON ?= 3.12

.PHONY: install test demo bench lint clean gpu-wheelhouse

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The second line builds the ahead-of-time CPU kernels once (fbgpu/engine/cpu_aot.py; ~20 s, cached
# by kernel source, numba version and CPU; a machine without a C compiler falls back to numba's JIT).
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/python -m fbgpu.engine.cpu_aot

test: install
	$(BIN)/python -m ruff check fbgpu tests benchmarks
	$(BIN)/python -m pytest -n 2 --timeout 900 $(PYTEST_ARGS)

demo: install
	$(BIN)/fbgpu demo --store $(STORE)

bench: install
	$(BIN)/fbgpu bench --store $(STORE)-bench

gpu-wheelhouse: $(BIN)/python
	$(BIN)/python benchmarks/device/wheelhouse.py --python-version $(WHEELHOUSE_PYTHON) \
		--out $(WHEELHOUSE)

lint: install
	$(BIN)/python -m ruff check fbgpu tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
