#!/usr/bin/env bash
# fbgpu on a lent GPU machine, offline: the whole test suite and the benchmark suite.
# (docs/benchmarks.md, "On a lent GPU machine".)
#
#   bash benchmarks/device/gpu_session.sh env|test|bench|engine|device [ARGS...]
#
# Run with $OUT naming the folder whose files come back (the device tool sets it). Every
# subcommand first installs, or reuses when current, the wheels of .wheelhouse/ (`make
# gpu-wheelhouse`, carried with the repository) into a folder of their own, offline and with
# --no-deps (depcheck.py checks their requirements against the image), and runs the image's own
# python3 with PYTHONPATH=<repository>:<that folder>: fbgpu is the repository, as in an editable
# install, the wheelhouse's packages come next, and everything else is the image's (its numpy,
# pandas, torch, cupy-cuda13x stand in for the pinned ones). Not a venv: the image's python3 is
# itself a venv, whose packages a `venv --system-site-packages` on it does not see, and CUDA's
# library lookup (cuda.pathfinder: NVRTC, NVVM, ...) searches site.getsitepackages() only, which
# must stay the image's. Nothing is downloaded, and the GPU is only queried (nvidia-smi -L,
# --query-gpu), never configured.
#
#   env           versions, GPU, NVVM, backend, unmet requirements         -> $OUT/env.txt
#   test [ARGS]   pytest, the whole suite, GPU tests included; ARGS go to pytest
#                 -> $OUT/env.txt, test-summary.txt, junit.xml, test.log
#                 Tests that need the device (skipped without one): test_engine_gpu_parity.py,
#                 test_fused_gpu.py and test_panel_gpu_parity.py (on cupy instead of the host
#                 emulation: CuPy vs CPU, hypothesis, full-day; the fused family passes vs the
#                 CPU's and vs the GPU primitives), test_engine_guard.py (torch sync guard, the demo's
#                 device stages under it, cupy and torch sharing one memory pool, the pinned
#                 persistence copy), test_models_device.py (DLPack hand-off, training on the
#                 device), test_backend.py.
#   bench [ARGS]  fbgpu bench --backend auto; ARGS go to fbgpu bench (e.g. --quick)
#                 -> $OUT/env.txt, bench.json, bench.md, bench.log, bench-report.tar.gz
#   engine [ARGS] benchmarks/bench_gpu_engine.py: the factor engine on the full-day preset and a
#                 >= 150M-tick day, GPU vs CPU (every core), parity, determinism, the fused
#                 family passes on and off (FBGPU_FUSED) per family
#                 -> $OUT/env.txt, gpu-engine.json, engine.log
#   device [ARGS] the one prepared run of a short device session: env, then pytest on the GPU
#                 test files only (GPU_TESTS below; at most DEVICE_TEST_BUDGET s), then engine
#                 with ARGS, all within TIME_BUDGET; exit status 0 only when both passed
#                 -> $OUT/env.txt, test-summary.txt, junit.xml, test.log, gpu-engine.json,
#                    engine.log
#
# Knobs (environment, defaults in brackets):
#   DEVICE_PYTHON [python3]  the image's interpreter
#   WHEELHOUSE [.wheelhouse]  FBGPU_DEVICE_SITE [/tmp/fbgpu-device-site]
#   TIME_BUDGET [570]  seconds from the start after which the test or bench run is interrupted,
#                      so that its results are still written before the device's 600 s limit
#   TEST_WORKERS [8]  TEST_TIMEOUT [300, per test]  TEST_THREADS [2, numba/OpenMP per worker]
#   BENCH_REPEATS [3]  BENCH_CONFIG [benchmarks/device/bench-device.toml]
#   BENCH_STORE [/tmp/fbgpu-bench]  ENGINE_STORE [/tmp/fbgpu-engine]
#   DEVICE_TEST_BUDGET [200]  seconds of the device subcommand's pytest run
set -euo pipefail

# The test files that exercise the device (cupy parity of the primitives and of the fused family
# passes, the sync guard, the shared memory pool, DLPack, the backend) plus the compile and
# stand-in checks they build on: what `device` runs, and `test` with no FILES runs them among
# the whole suite.
GPU_TESTS=(tests/test_engine_gpu_parity.py tests/test_fused_gpu.py tests/test_engine_compile.py
    tests/test_engine_standin.py tests/test_engine_guard.py tests/test_panel_gpu_parity.py
    tests/test_models_device.py tests/test_backend.py tests/test_factors_invariance.py
    tests/test_device_io.py)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
: "${OUT:?set OUT to the folder that receives the results}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

DEVICE_PYTHON=${DEVICE_PYTHON:-python3}
WHEELHOUSE=${WHEELHOUSE:-$ROOT/.wheelhouse}
SITE=${FBGPU_DEVICE_SITE:-/tmp/fbgpu-device-site}
PY=
TIME_BUDGET=${TIME_BUDGET:-570}
TEST_WORKERS=${TEST_WORKERS:-8}
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
TEST_THREADS=${TEST_THREADS:-2}
BENCH_REPEATS=${BENCH_REPEATS:-3}
BENCH_CONFIG=${BENCH_CONFIG-benchmarks/device/bench-device.toml}
BENCH_STORE=${BENCH_STORE:-/tmp/fbgpu-bench}
ENGINE_STORE=${ENGINE_STORE:-/tmp/fbgpu-engine}
DEVICE_TEST_BUDGET=${DEVICE_TEST_BUDGET:-200}

# pip sees the wheelhouse and nothing else, whatever this machine's pip configuration says.
for v in "${!PIP_@}"; do unset "$v"; done
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export PYTHONUNBUFFERED=1 FBGPU_PROGRESS=0 MPLBACKEND=Agg
# numba.cuda finds NVVM/NVRTC through CUDA_HOME when no wheel provides them.
if [[ -z ${CUDA_HOME:-}${CUDA_PATH:-} && -d /usr/local/cuda/nvvm ]]; then
    export CUDA_HOME=/usr/local/cuda
fi

log() { printf '[gpu_session %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

setup_site() {
    local manifest=$WHEELHOUSE/MANIFEST.txt pyv whv stamp t0=$SECONDS
    [[ -f $manifest ]] || die "no wheelhouse at $WHEELHOUSE: run \`make gpu-wheelhouse\` on a" \
        "machine with network and carry .wheelhouse"
    PY=$(command -v "$DEVICE_PYTHON") || die "DEVICE_PYTHON=$DEVICE_PYTHON not found"
    pyv=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    whv=$(sed -n 's/^python //p' "$manifest")
    [[ $pyv == "$whv" ]] || die "the wheelhouse is for Python $whv but $PY is $pyv:" \
        "make gpu-wheelhouse WHEELHOUSE_PYTHON=$pyv"
    export PYTHONPATH=$ROOT:$SITE PATH=$SITE/bin:$PATH
    stamp=$({ echo "$PY"; cat "$manifest" benchmarks/device/sitecustomize.py; } | sha256sum |
        cut -c1-16)
    if [[ $(cat "$SITE/.fbgpu-stamp" 2>/dev/null) == "$stamp" ]]; then
        log "$SITE is current"
        return 0
    fi
    log "installing the wheelhouse into $SITE for $PY (Python $pyv)"
    rm -rf "$SITE" "$SITE.wheels"
    mkdir -p "$SITE.wheels"
    # Wheels stored recompressed (.whl.xz, see wheelhouse.py) back to wheels.
    local f
    for f in "$WHEELHOUSE"/*.whl.xz; do
        [[ -e $f ]] || continue
        "$PY" -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 24)' "$f" "$SITE.wheels/$(basename "${f%.xz}")"
    done
    local pip=("$PY" -m pip install --no-index --no-deps --target "$SITE" --find-links
        "$WHEELHOUSE" --find-links "$SITE.wheels" --no-cache-dir --no-compile
        --no-warn-script-location --progress-bar off -q)
    "${pip[@]}" -r "$WHEELHOUSE/requirements-install.txt" \
        -r "$WHEELHOUSE/requirements-nodeps.txt"
    local fallback
    fallback=$("$PY" benchmarks/device/depcheck.py "$SITE" "$WHEELHOUSE" --fallbacks)
    if [[ -n $fallback ]]; then
        log "the image's versions are too old, installing: $(echo "$fallback" | tr '\n' ' ')"
        # shellcheck disable=SC2086  # one pin per word
        "${pip[@]}" $fallback
    fi
    rm -rf "$SITE.wheels"
    # numba-cuda vs numpy 2.5 (see the file); FBGPU_DEVICE_SHIM=0 turns it off.
    cp benchmarks/device/sitecustomize.py "$SITE/"
    # fbgpu itself is the repository (first on PYTHONPATH), as an editable install would be; its
    # console script runs it on the image's interpreter.
    mkdir -p "$SITE/bin"
    printf '#!%s\nimport sys\nfrom fbgpu.cli import main\nsys.exit(main())\n' "$PY" \
        >"$SITE/bin/fbgpu"
    chmod +x "$SITE/bin/fbgpu"
    echo "$stamp" >"$SITE/.fbgpu-stamp"
    log "installed in $((SECONDS - t0)) s"
}

env_report() {
    {
        echo "# gpu_session.sh env, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -srm)"
        echo "cores: $(nproc), memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 2^20}' \
            /proc/meminfo), CUDA_HOME=${CUDA_HOME:-unset}, interpreter: $DEVICE_PYTHON"
        echo "## nvidia-smi -L"
        if command -v nvidia-smi >/dev/null; then
            nvidia-smi -L 2>&1 || true
            nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv \
                2>&1 || true
        else
            echo "(no nvidia-smi)"
        fi
        echo "## packages (PYTHONPATH=$PYTHONPATH, then the image's)"
        "$PY" - <<'PY' 2>&1 || true
import importlib, importlib.metadata as md, platform, re, sys, warnings
warnings.simplefilter("ignore")
print(f"python {platform.python_version()} ({sys.executable})")
names = ["numpy", "numba", "numba-cuda", "llvmlite", "cupy-cuda13x", "cupy-cuda12x", "cupy",
         "torch", "pandas", "pyarrow", "scipy", "polars", "polars-runtime-32", "osqp",
         "pydantic", "typer", "rich", "matplotlib", "jinja2", "dask", "distributed",
         "pytest", "pytest-xdist", "pytest-timeout", "hypothesis", "alphalens-reloaded",
         "typing-extensions", "cuda-bindings", "cuda-pathfinder", "nvidia-cuda-nvrtc"]
for n in names:
    try:
        dist = md.distribution(n)
        print(f"  {n:20s} {dist.version:14s} {dist.locate_file('')}")
    except md.PackageNotFoundError:
        print(f"  {n:20s} -")
try:
    import cupy as cp
    rt, drv = cp.cuda.runtime.runtimeGetVersion(), cp.cuda.runtime.driverGetVersion()
    name = cp.cuda.runtime.getDeviceProperties(0)["name"]
    print(f"cupy {cp.__version__}: CUDA runtime {rt}, driver {drv}, device 0 {name!r}")
except Exception as e:
    print(f"cupy: {type(e).__name__}: {e}")
try:
    import torch
    ok = torch.cuda.is_available()
    dev = torch.cuda.get_device_name(0) if ok else "-"
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}): cuda available {ok}, {dev}")
except Exception as e:
    print(f"torch: {type(e).__name__}: {e}")
import numpy, os
shim = os.environ.get("FBGPU_DEVICE_SHIM_APPLIED")
print(f"numpy {numpy.__version__}: " + (f"shim applied ({shim}, sitecustomize.py)" if shim
      else "no shim applied"))
try:
    import time
    from fbgpu.engine.cuda_c import device_kernels, nvrtc_ptx
    t = time.perf_counter()
    k = device_kernels()
    print(f"kernels/ built by NVRTC for this device in {time.perf_counter() - t:.2f} s "
          f"({len(k._functions)} kernels)")
    print(f"NVRTC PTX for sm_90: {'.target sm_90' in nvrtc_ptx('sm_90')}")
except Exception as e:
    print(f"fbgpu kernels: {type(e).__name__}: {e}")
try:
    from fbgpu.engine.backend import get_backend
    b = get_backend("auto")
    print(f"fbgpu backend auto -> {b.name}: {b.device}" + (f" ({b.note})" if b.note else ""))
    if b.is_gpu:
        slug = re.sub(r"[^a-z0-9]+", "-", b.info["gpu_name"].lower()).strip("-")
        print(f"results file: benchmarks/results/{slug}.json")
except Exception as e:
    print(f"fbgpu: {type(e).__name__}: {e}")
PY
        echo "## requirements of the installed wheels (depcheck.py)"
        "$PY" benchmarks/device/depcheck.py "$SITE" "$WHEELHOUSE" 2>&1 || true
        echo "## fbgpu's pins (pyproject.toml) not met by the image (expected; informational)"
        "$PY" - <<'PY' 2>&1 || true
import importlib.metadata as md, re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for d in deps:
    name, pin = re.split(r"==", d)
    try:
        seen = md.version(name)
    except md.PackageNotFoundError:
        seen = "-"
    if seen != pin:
        print(f"  {name:12s} pinned {pin:10s} here {seen}")
PY
    } >"$OUT/env.txt"
    cat "$OUT/env.txt"
}

# Seconds left for the main run: TIME_BUDGET from the start, less a margin for the reports.
time_left() {
    local left=$((TIME_BUDGET - SECONDS - 20))
    ((left > 30)) || die "TIME_BUDGET=$TIME_BUDGET leaves no time for the run"
    echo "$left"
}

test_summary() {
    local rc=$1 stopped=$2
    "$PY" - "$OUT/junit.xml" "$rc" "$stopped" <<'PY' | tee "$OUT/test-summary.txt"
import collections, sys, xml.etree.ElementTree as ET
path, rc, stopped = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
print(f"pytest exit status {rc}" + (" (stopped at TIME_BUDGET: incomplete)" if stopped else ""))
try:
    root = ET.parse(path).getroot()
except (OSError, ET.ParseError) as e:
    sys.exit(f"no junit xml: {e}")
cases = root.iter("testcase")
outcome, bad, skips = collections.Counter(), [], collections.Counter()
for c in cases:
    name = f"{c.get('classname')}::{c.get('name')}"
    kids = {k.tag: k for k in c}
    if "failure" in kids or "error" in kids:
        tag = "failure" if "failure" in kids else "error"
        outcome[tag] += 1
        msg = (kids[tag].get("message") or "").strip().splitlines()[:1]
        last = [ln for ln in (kids[tag].text or "").splitlines() if ln.startswith("E ")][-1:]
        if last and (not msg or last[0][1:].strip() not in msg[0]):
            msg.append(last[0][1:].strip())  # e.g. what a collection failure was
        bad.append(f"  {tag.upper():7s} {name}: {' | '.join(msg)[:300]}")
    elif "skipped" in kids:
        outcome["skipped"] += 1
        skips[(kids["skipped"].get("message") or "").strip()[:200]] += 1
    else:
        outcome["passed"] += 1
print(", ".join(f"{n} {k}" for k, n in sorted(outcome.items())) or "no tests")
if bad:
    print("failed:", *bad, sep="\n")
if skips:
    print("skipped (count, reason):")
    for reason, n in skips.most_common():
        print(f"  {n:4d}  {reason}")
PY
}

cmd_env() {
    setup_site
    env_report
}

# pytest for at most $1 seconds on the remaining arguments; summary into $OUT.
run_pytest() {
    local limit=$1 rc=0 stopped=0
    shift
    log "pytest -n $TEST_WORKERS (at most ${limit} s) $*"
    rm -f "$OUT/junit.xml"
    NUMBA_NUM_THREADS=$TEST_THREADS OMP_NUM_THREADS=$TEST_THREADS \
        timeout -s INT -k 20 "$limit" "$PY" -m pytest -n "$TEST_WORKERS" \
        --timeout "$TEST_TIMEOUT" -p no:cacheprovider --junitxml "$OUT/junit.xml" "$@" \
        2>&1 | tee "$OUT/test.log" || rc=$?
    ((rc != 124 && rc != 137)) || stopped=1
    test_summary "$rc" "$stopped" || true
    log "test done: exit status $rc; results in $OUT"
    return "$rc"
}

cmd_test() {
    setup_site
    env_report
    local left
    left=$(time_left)
    run_pytest "$left" "$@"
}

cmd_bench() {
    setup_site
    env_report
    local left rc=0 out=$BENCH_STORE/out
    local args=(bench --store "$BENCH_STORE" --out "$out" --backend auto
        --repeats "$BENCH_REPEATS")
    [[ -z $BENCH_CONFIG ]] || args+=(--config "$BENCH_CONFIG")
    left=$(time_left)
    log "fbgpu ${args[*]} $* (at most ${left} s)"
    rm -f "$out/bench.json" "$out/bench.md"
    timeout -s INT -k 20 "$left" fbgpu "${args[@]}" "$@" 2>&1 |
        tee "$OUT/bench.log" || rc=$?
    if [[ -f $out/bench.json ]]; then
        cp "$out/bench.json" "$out/bench.md" "$OUT/"
        tar -czf "$OUT/bench-report.tar.gz" -C "$BENCH_STORE/reports" bench
    else
        log "no bench.json: the run failed or was stopped at TIME_BUDGET=$TIME_BUDGET s" \
            "(try BENCH_REPEATS=1)"
    fi
    log "bench done: exit status $rc; results in $OUT"
    return "$rc"
}

# benchmarks/bench_gpu_engine.py for at most $1 seconds with the remaining arguments.
run_engine() {
    local limit=$1 rc=0
    shift
    log "benchmarks/bench_gpu_engine.py (at most ${limit} s) $*"
    timeout -s INT -k 20 "$limit" "$PY" benchmarks/bench_gpu_engine.py --store "$ENGINE_STORE" \
        --out "$OUT/gpu-engine.json" "$@" 2>&1 | tee "$OUT/engine.log" || rc=$?
    log "engine done: exit status $rc; results in $OUT"
    return "$rc"
}

cmd_engine() {
    setup_site
    env_report
    local left
    left=$(time_left)
    run_engine "$left" "$@"
}

cmd_device() {
    setup_site
    env_report
    local left limit trc=0 erc=0
    left=$(time_left)
    limit=$((DEVICE_TEST_BUDGET < left ? DEVICE_TEST_BUDGET : left))
    run_pytest "$limit" "${GPU_TESTS[@]}" || trc=$?
    left=$(time_left)
    run_engine "$left" "$@" || erc=$?
    log "device done: pytest exit status $trc, engine exit status $erc"
    ((trc == 0 && erc == 0))
}

case ${1:-} in
env | test | bench | engine | device)
    sub=$1
    shift
    "cmd_$sub" "$@"
    ;;
*)
    echo "usage: OUT=DIR $0 env|test|bench|engine|device [ARGS...]   (see the comment at the top)" >&2
    exit 2
    ;;
esac
