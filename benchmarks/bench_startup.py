"""Where one whole ``fbgpu factors`` process spends its time: a phase profile (issue #16).

Usage::

    python benchmarks/bench_startup.py --store DIR [--date YYYY-MM-DD] [--repeats 3]
        [--variant LABEL[:NAME=VALUE,...]]... [--label TEXT]
        [--out benchmarks/results/process/startup.json]

Each repeat runs, as fresh subprocesses (after one untimed warm-up per variant: page cache,
numba cache and bytecode warm), interleaved so that load from other processes hits all alike;
each ``--variant`` is a run with those environment variables (an A/B, e.g. ``off:FBGPU_PRELOAD=0``):

* ``python -c pass``: the interpreter's own start (``site``, the editable-install finder);
* the instrumented run: this file with ``--child``, which installs timing hooks and then runs
  ``fbgpu`` exactly as ``python -m fbgpu factors --store S --start D --end D --backend cpu
  --no-progress`` does (``runpy`` of the ``fbgpu`` package: same imports, same threads, same
  ``os._exit``); the day's ``factors`` partition is deleted, untimed, before each run.

A variant with ``FBGPU_BENCH_SRC=DIR`` runs the ``fbgpu`` package in ``DIR`` (e.g. ``git archive
COMMIT fbgpu kernels | tar -x -C DIR``) instead of the installed one: before/after of a change
set in the same interleaved rounds (its numba cache is compiled by the warm-up).

The hooks change no code path; they only read clocks at phase boundaries (main thread):

=================  ===========================================================================
``interpreter``    spawn -> first line of the child (parent's and child's ``CLOCK_MONOTONIC``)
``hooks``          installing the hooks (excluded from the other phases; reported)
``imports``        ``import fbgpu.cli`` + registering the commands + argument parsing and the
                   store lock: everything until the ``factors`` command body starts
``command``        the command body until ``run_factors`` starts: its imports (store, factors,
                   pydantic config), config, user modules
``plan``           ``run_factors`` until the day's compute starts: backend, fingerprints, plan
``load_day``       reading the day (memory-mapped Arrow: finding the stock runs)
``compute``        ``compute_loaded_day``; split below into numba's one-time context set-up,
                   each kernel's first-call load from numba's cache, and the rest (the kernels
                   running, page faults of the mapped columns, numpy array code)
``finish``         compute end -> ``run_factors`` returns (waits for the write-behind thread)
``summary``        ``run_factors`` returned -> ``main`` returns (summary line, ``run.json``)
``exit``           ``main`` returned -> the parent's ``wait4`` (gc, ``atexit``, ``os._exit``,
                   the kernel tearing down the address space)
=================  ===========================================================================

Within ``compute``: ``numba_context`` is numba's first ``target_context.refresh()`` (it imports
numba's typing and lowering registries, and with them ``scipy.linalg``: ``numba.np.arraymath``
checks for BLAS at import), ``kernel_load`` the time inside ``Dispatcher._compile_for_args``
(cache index lookup, object code linked into LLVM's JIT) per dispatcher, and ``kernel_run``
the remaining time inside the dispatchers' first and later calls. Off the main thread:
``write`` (the ``factors`` partition, on the write-behind thread) and the preload thread's
``import fbgpu.engine.cpu_kernels`` (start/end on the main thread's clock, and whether the main
thread waited for it).

Every child runs with Python's bytecode cache on (``bench_process.child_env``), as an
installed package would, even where ``PYTHONDONTWRITEBYTECODE`` is set (this VM sets it).

Each phase has wall seconds (``time.perf_counter``), CPU seconds of the whole process
(``time.process_time``: every thread, so a background thread's work lands in the phase during
which it ran), user/system split and minor page faults (``getrusage``); the parent adds the
child's totals from ``wait4``. Also recorded: ``-X importtime`` of one separate run, summed by
top-level package (self time), and the load average before and after. Timings are never
asserted anywhere; the JSON is the record.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

# The parent's other imports (argparse, subprocess, ...) are inside its functions: the child
# runs this file too, and its interpreter phase should hold only what ``python -m`` does.

HERE = Path(__file__).resolve().parent
log = logging.getLogger("bench_startup")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """:func:`bench_process.child_env`: the children's environment, bytecode cache on."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from bench_process import child_env as env_of

    return env_of(extra)

#: The order of the main thread's phases in the report.
PHASES = ("interpreter", "hooks", "imports", "command", "plan", "load_day", "compute", "finish",
          "summary", "exit")


# --------------------------------------------------------------------------- the child


def _clock() -> dict[str, float]:
    """Wall, process CPU, user, system seconds and minor faults now."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": time.perf_counter(), "cpu": time.process_time(), "user": r.ru_utime,
            "sys": r.ru_stime, "minflt": float(r.ru_minflt)}


def _child(argv: list[str]) -> None:  # pragma: no cover - runs in a subprocess
    """Install the hooks, then run ``fbgpu`` as ``python -m fbgpu`` would; the marks are
    written as JSON to the file named by ``argv[0]`` from an ``atexit`` handler (``fbgpu``'s
    ``run`` calls the handlers before ``os._exit``)."""
    import atexit
    import functools
    import importlib.abc
    import importlib.machinery
    import runpy
    import threading

    start = _clock()
    src = os.environ.get("FBGPU_BENCH_SRC")
    if src:  # another commit's package (a git archive): ahead of the editable install
        sys.meta_path[:] = [f for f in sys.meta_path
                            if not str(getattr(f, "__module__", "")).startswith("__editable__")]
        sys.path.insert(0, src)
    out_path = argv[0]
    marks: dict[str, dict[str, float]] = {"start": start}
    kernels: list[dict[str, Any]] = []
    extra: dict[str, Any] = {"threads": {}}
    main_ident = threading.get_ident()

    def mark(name: str) -> None:
        if threading.get_ident() == main_ident and name not in marks:
            marks[name] = _clock()

    def wrap_module(name: str, module: Any) -> None:
        """Patch the functions whose entry/exit are phase boundaries, once loaded."""
        if name == "fbgpu.cli.factors":
            pre = module._preload_cpu_engine

            @functools.wraps(pre)
            def preload(backend: str) -> None:
                mark("command")  # the command body starts here
                pre(backend)

            module._preload_cpu_engine = preload
        elif name == "fbgpu.factors.compute":
            for fn, (begin, end) in {"run_factors": ("plan", "summary"),
                                     "load_day": ("load_day", "compute"),
                                     "compute_loaded_day": ("compute", "finish")}.items():
                orig = getattr(module, fn)

                def wrapped(*a: Any, _o: Any = orig, _b: str = begin, _e: str = end,
                            **k: Any) -> Any:
                    mark(_b)
                    try:
                        return _o(*a, **k)
                    finally:
                        mark(_e)

                setattr(module, fn, functools.wraps(orig)(wrapped))
            pw = module._partition_writer

            def partition_writer(*a: Any, **k: Any) -> Any:
                job = pw(*a, **k)

                def write(host: Any) -> None:
                    w0, c0 = time.perf_counter(), time.thread_time()
                    try:
                        job(host)
                    finally:
                        extra["write"] = {"wall_s": time.perf_counter() - w0,
                                          "thread_cpu_s": time.thread_time() - c0}
                return write

            module._partition_writer = partition_writer
        elif name == "numba.core.dispatcher":
            cfa = module.Dispatcher._compile_for_args

            def compile_for_args(self: Any, *a: Any, **k: Any) -> Any:
                c0 = _clock()
                try:
                    return cfa(self, *a, **k)
                finally:
                    c1 = _clock()
                    kernels.append({"kernel": self.py_func.__name__, "start": c0["wall"],
                                    "wall_s": c1["wall"] - c0["wall"],
                                    "cpu_s": c1["cpu"] - c0["cpu"],
                                    "thread": threading.current_thread().name})

            module.Dispatcher._compile_for_args = compile_for_args
        elif name == "numba.core.cpu":
            lar = module.CPUContext.load_additional_registries
            done: list[bool] = []

            def load_additional_registries(self: Any) -> None:
                if done:
                    return lar(self)
                done.append(True)
                c0 = _clock()
                try:
                    return lar(self)
                finally:
                    c1 = _clock()
                    extra["numba_context"] = {"start": c0["wall"], "wall_s": c1["wall"]
                                              - c0["wall"], "cpu_s": c1["cpu"] - c0["cpu"],
                                              "thread": threading.current_thread().name}

            module.CPUContext.load_additional_registries = load_additional_registries
        elif name == "fbgpu.engine.cpu_kernels":
            extra["threads"]["cpu_kernels_imported"] = {
                "end": time.perf_counter(), "thread": threading.current_thread().name}

    watched = {"fbgpu.cli.factors", "fbgpu.factors.compute", "numba.core.dispatcher",
               "numba.core.cpu", "fbgpu.engine.cpu_kernels"}

    class Finder(importlib.abc.MetaPathFinder):
        """Delegates to the path finder; runs :func:`wrap_module` after a watched module's
        code ran (the module is complete, its importers have not used it yet)."""

        def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
            if name not in watched:
                return None
            if name == "fbgpu.engine.cpu_kernels":
                extra["threads"]["cpu_kernels_import_start"] = {
                    "start": time.perf_counter(), "thread": threading.current_thread().name}
            spec = importlib.machinery.PathFinder.find_spec(name, path, target)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            exec_module = loader.exec_module

            def exec_and_wrap(module: Any) -> None:
                exec_module(module)
                wrap_module(name, module)

            loader.exec_module = exec_and_wrap  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, Finder())

    def dump() -> None:
        marks["exit"] = _clock()
        Path(out_path).write_text(json.dumps({"marks": marks, "kernels": kernels,
                                              "extra": extra,
                                              "modules": len(sys.modules),
                                              "scipy_linalg_imported":
                                                  "scipy.linalg" in sys.modules,
                                              "numba_imported": "numba" in sys.modules}))

    atexit.register(dump)
    marks["hooks"] = _clock()
    sys.argv = ["fbgpu", *argv[1:]]
    runpy.run_module("fbgpu", run_name="__main__", alter_sys=True)


# --------------------------------------------------------------------------- the parent


def _child_run(store: Path, date: dt.date, env: dict[str, str] | None = None
               ) -> dict[str, Any]:
    """One instrumented ``fbgpu factors`` process (``env`` added to the environment): its
    marks and the parent's ``wait4``."""
    import shutil
    import subprocess
    import tempfile

    from fbgpu.data.store import Store

    shutil.rmtree(Store(store).partition_dir("factors", date), ignore_errors=True)
    d = date.isoformat()
    with tempfile.TemporaryDirectory() as tmp:
        marks_path = Path(tmp) / "marks.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(marks_path),
               "factors", "--store", str(store), "--start", d, "--end", d, "--backend", "cpu",
               "--no-progress"]
        with tempfile.TemporaryFile("w+") as fo:
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, stdout=fo, stderr=subprocess.STDOUT, env=child_env(env))
            _, status, usage = os.wait4(p.pid, 0)
            t1 = time.perf_counter()
            code = os.waitstatus_to_exitcode(status)
            fo.seek(0)
            text = fo.read()
        if code != 0 or "1 dates computed" not in text:
            raise RuntimeError(f"fbgpu factors exited {code}: {text[-2000:]}")
        data = json.loads(marks_path.read_text())
    data["parent"] = {"spawn": t0, "end": t1, "user": usage.ru_utime, "sys": usage.ru_stime,
                      "minflt": float(usage.ru_minflt), "maxrss_mb": usage.ru_maxrss / 1024.0}
    return data


def phases_of(run: dict[str, Any]) -> dict[str, Any]:
    """Per phase: wall, CPU (all threads), user, system seconds and minor faults; plus the
    compute split, the kernels' first-call loads, the write and the preload thread."""
    m = run["marks"]
    par = run["parent"]
    zero = {"wall": par["spawn"], "cpu": 0.0, "user": 0.0, "sys": 0.0, "minflt": 0.0}
    end = {"wall": par["end"], "cpu": par["user"] + par["sys"], "user": par["user"],
           "sys": par["sys"], "minflt": par["minflt"]}
    # mark name -> the phase that starts there ("start" ends the interpreter's phase)
    bounds = [("interpreter", zero), ("hooks", m["start"]), ("imports", m["hooks"]),
              ("command", m["command"]), ("plan", m["plan"]), ("load_day", m["load_day"]),
              ("compute", m["compute"]), ("finish", m["finish"]), ("summary", m["summary"]),
              ("exit", m["exit"]), ("", end)]
    out: dict[str, Any] = {}
    for (name, a), (_, b) in itertools.pairwise(bounds):
        out[name] = {k + "_s" if k != "minflt" else k: b[k] - a[k]
                     for k in ("wall", "cpu", "user", "sys", "minflt")}
    total = {k + "_s" if k != "minflt" else k: end[k] - zero[k]
             for k in ("wall", "cpu", "user", "sys", "minflt")}
    kern = run["kernels"]
    ctx = run["extra"].get("numba_context", {"wall_s": 0.0, "cpu_s": 0.0, "thread": None})
    on_main = ctx.get("thread") == "MainThread"
    ctx_wall = ctx["wall_s"] if on_main else 0.0
    ctx_cpu = ctx["cpu_s"] if on_main else 0.0
    main_loads = [k for k in kern if k["thread"] == "MainThread"]
    load_wall = sum(k["wall_s"] for k in main_loads)
    load_cpu = sum(k["cpu_s"] for k in main_loads)
    split = {"numba_context_s": ctx_wall, "numba_context_cpu_s": ctx_cpu,
             "kernel_load_s": load_wall - ctx_wall, "kernel_load_cpu_s": load_cpu - ctx_cpu,
             "kernel_run_and_rest_s": out["compute"]["wall_s"] - load_wall,
             "kernel_run_and_rest_cpu_s": out["compute"]["cpu_s"] - load_cpu}
    pre = run["extra"]["threads"]
    preload = None
    if "cpu_kernels_import_start" in pre and "cpu_kernels_imported" in pre:
        s, e = pre["cpu_kernels_import_start"], pre["cpu_kernels_imported"]
        preload = {"thread": s["thread"], "start_after_spawn_s": s["start"] - par["spawn"],
                   "end_after_spawn_s": e["end"] - par["spawn"], "wall_s": e["end"] - s["start"],
                   "compute_starts_after_spawn_s": m["compute"]["wall"] - par["spawn"]}
    write = run["extra"].get("write")
    return {"phases": out, "total": total, "compute_split": split,
            "numba_context": {**ctx, "start": None} if ctx else None,
            "kernels": [{k: v for k, v in x.items() if k != "start"} for x in kern],
            "write": write,
            "preload": preload, "peak_rss_mb": par["maxrss_mb"], "modules": run["modules"],
            "scipy_linalg_imported": run["scipy_linalg_imported"],
            "numba_imported": run.get("numba_imported")}


def interpreter_start() -> dict[str, float]:
    """Wall and CPU seconds of ``python -c pass`` (``wait4``)."""
    import subprocess

    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", "pass"], env=child_env())
    _, _, usage = os.wait4(p.pid, 0)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": usage.ru_utime + usage.ru_stime}


def importtime_by_package(store: Path, date: dt.date) -> dict[str, float]:
    """``-X importtime`` of one ``fbgpu factors`` run (preload thread off, so every import but
    the factor writer's ``pyarrow.parquet``, on its own thread once compute is done, is on the
    main thread and nested in one tree), self microseconds summed per top-level package, as
    seconds, largest first. The accounting is process-wide: two threads importing at once
    would show as a negative self time (``load_day`` imports its readers' module before they
    start for that reason)."""
    import shutil
    import subprocess

    from fbgpu.data.store import Store

    shutil.rmtree(Store(store).partition_dir("factors", date), ignore_errors=True)
    d = date.isoformat()
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "fbgpu", "factors", "--store",
                        str(store), "--start", d, "--end", d, "--backend", "cpu",
                        "--no-progress"], capture_output=True, text=True,
                       env=child_env({"FBGPU_PRELOAD": "0"}))
    by: dict[str, float] = {}
    for line in p.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = (x.strip() for x in line.split(":", 1)[1].split("|"))
        top = name.split(".")[0]
        by[top] = by.get(top, 0.0) + float(self_us) / 1e6
    return dict(sorted(by.items(), key=lambda kv: -kv[1]))


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Min and median over repeats of each phase's wall and CPU seconds."""
    import statistics

    def stat(values: list[float]) -> dict[str, float]:
        return {"min": min(values), "median": statistics.median(values)}

    out: dict[str, Any] = {}
    for ph in PHASES:
        out[ph] = {k: stat([r["phases"][ph][k] for r in runs])
                   for k in ("wall_s", "cpu_s", "user_s", "sys_s", "minflt")}
    out["total"] = {k: stat([r["total"][k] for r in runs])
                    for k in ("wall_s", "cpu_s", "user_s", "sys_s", "minflt")}
    out["compute_split"] = {k: stat([r["compute_split"][k] for r in runs])
                            for k in runs[0]["compute_split"]}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _child(argv[1:])
        return {}
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--date", type=dt.date.fromisoformat, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variant", action="append", default=None,
                    help="LABEL or LABEL:NAME=VALUE,NAME=VALUE: a run with these environment "
                    "variables (repeatable; the variants are interleaved). Default: one "
                    "variant 'default' with the environment as it is")
    ap.add_argument("--label", default="", help="what this run measures (stored in the JSON)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from fbgpu.data.store import Store

    date = args.date or Store(args.store).dates("trades")[0]
    variants: dict[str, dict[str, str]] = {}
    for spec in args.variant or ["default"]:
        name, _, assigns = spec.partition(":")
        variants[name] = dict(a.split("=", 1) for a in assigns.split(",") if a)
    load_before = os.getloadavg()
    for env in variants.values():  # warm-up: page cache, numba cache, .pyc
        _child_run(args.store, date, env)
    interpreter_start()
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    interp, loads = [], []
    for _ in range(args.repeats):
        interp.append(interpreter_start())
        for v, env in variants.items():
            r = phases_of(_child_run(args.store, date, env))
            runs[v].append(r)
            loads.append(os.getloadavg()[0])
            log.info("%s: total %.3f s wall, %.3f CPU s (load %.1f): %s", v,
                     r["total"]["wall_s"], r["total"]["cpu_s"], loads[-1],
                     "  ".join(f"{k} {x['cpu_s']:.3f}" for k, x in r["phases"].items()))
    res = {"label": args.label, "store": str(args.store), "date": date.isoformat(),
           "repeats": args.repeats, "cpus": os.cpu_count(), "python": sys.version.split()[0],
           "loadavg_before": list(load_before), "loadavg_1min_during": loads,
           "loadavg_after": list(os.getloadavg()),
           "measured_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "python_c_pass": {"wall_s_min": min(x["wall_s"] for x in interp),
                             "cpu_s_min": min(x["cpu_s"] for x in interp)},
           "variants": variants, "bytecode_cache": child_env()["PYTHONPYCACHEPREFIX"],
           "summary": {v: _summary(rr) for v, rr in runs.items()}, "runs": runs,
           "importtime_self_s_by_package": importtime_by_package(args.store, date)}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))
        log.info("wrote %s", args.out)
    for key, s in res["summary"].items():
        log.info("%s (min / median over %d runs; load %.1f-%.1f)", key, args.repeats,
                 min(loads), max(loads))
        for ph in (*PHASES, "total"):
            log.info("  %-12s wall %.3f / %.3f  cpu %.3f / %.3f  sys %.3f  minflt %.0f", ph,
                     s[ph]["wall_s"]["min"], s[ph]["wall_s"]["median"], s[ph]["cpu_s"]["min"],
                     s[ph]["cpu_s"]["median"], s[ph]["sys_s"]["min"], s[ph]["minflt"]["min"])
        for k, x in s["compute_split"].items():
            log.info("    compute: %-24s %.3f / %.3f", k, x["min"], x["median"])
    top = list(res["importtime_self_s_by_package"].items())[:12]
    log.info("import self time by package: %s", ", ".join(f"{k} {v:.3f}" for k, v in top))
    return res


if __name__ == "__main__":
    main()
