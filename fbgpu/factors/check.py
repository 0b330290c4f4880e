"""``fbgpu factors check``: vet user factors on a small synthetic market before trusting them.

For each user factor of the loaded modules, on a synthetic market of ``n_days`` days
(:func:`check_modules`):

* **parity**: the CPU backend against the GPU code path on the CPU stand-in device (the GPU
  segment kernels built for the host, CuPy-style arrays that raise on any implicit host
  crossing), and against a real GPU when one is usable. Pass: same NaN positions and
  ``|a - b| <= 1e-9 * max(1, |a|)``. A host round trip in the factor fails here, and so does
  an implicit host->device upload (``ctx.xp.asarray`` of a numpy array: the stand-in refuses
  it), reported with the factor's call (file, line, source) and what to use instead.
* **determinism**: two CPU runs are bitwise equal.
* **NaN rules**: one stock cut to a single tick per source (one traded minute; no
  cancellations) and one stock made constant (every price and size equal). The factor must not
  raise, must give NaN or a finite value there (never +-inf), and must not change any *other*
  stock's value (a factor is a function of its own stock-day).
* **look-ahead**: perturbing the last day's inputs changes no earlier day, and computing the
  days in reverse order changes nothing (no state carried across days).
* **throughput**: rows of the family's source per second for the factor alone, next to the
  median of the built-ins of its family computed the same way (a factor 20x slower than the
  built-ins is flagged: a Python loop over stocks is the usual cause). Informational.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fbgpu.data.store import DayTicks, MinuteDay, Store
from fbgpu.engine.backend import get_backend
from fbgpu.engine.segments import segment_ops
from fbgpu.factors.compute import (
    DayInputs,
    compute_loaded_day,
    day_to_backend,
    input_dates,
    load_day,
    run_staging,
)
from fbgpu.factors.registry import FACTORS, builtin_names
from fbgpu.factors.user import load_modules, origin_of

log = logging.getLogger(__name__)

#: Relative tolerance of the CPU-vs-GPU parity check (float64; different summation orders).
PARITY_RTOL = 1e-9
#: A user factor this many times slower than its family's median built-in is flagged.
SLOW_FACTOR = 20.0


@dataclass
class FactorCheck:
    """The checks of one factor (see the module docstring); ``failures`` empty = passed."""

    name: str
    family: str
    module: str
    parity: str = ""
    deterministic: bool = False
    one_tick_value: float = float("nan")
    constant_value: float = float("nan")
    isolated: bool = False
    no_lookahead: bool = False
    rows_per_s: float = float("nan")
    builtin_rows_per_s: float = float("nan")
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class CheckReport:
    """What :func:`check_modules` found, one :class:`FactorCheck` per user factor."""

    rows: list[FactorCheck]
    n_days: int
    n_stocks: int

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    def table(self) -> str:
        """A plain-text table (one line per factor), then failures and warnings."""
        head = (f"{'factor':28s} {'family':7s} {'parity':22s} {'determ':6s} {'1-tick':>9s} "
                f"{'constant':>9s} {'isolated':8s} {'lookahead':9s} {'rows/s':>9s} "
                f"{'builtin':>9s}  result")
        lines = [f"factors check: {len(self.rows)} user factor(s) on a synthetic market of "
                 f"{self.n_stocks} stocks x {self.n_days} days", head]
        for r in self.rows:
            lines.append(
                f"{r.name:28s} {r.family:7s} {r.parity[:22]:22s} {_yes(r.deterministic):6s} "
                f"{r.one_tick_value:9.3g} {r.constant_value:9.3g} {_yes(r.isolated):8s} "
                f"{_yes(r.no_lookahead):9s} {r.rows_per_s:9.3g} {r.builtin_rows_per_s:9.3g}  "
                f"{'PASS' if r.passed else 'FAIL'}")
        for r in self.rows:
            lines += [f"  FAIL {r.name}: {m}" for m in r.failures]
            lines += [f"  warn {r.name}: {m}" for m in r.warnings]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"passed": self.passed, "n_days": self.n_days,
                           "n_stocks": self.n_stocks,
                           "factors": [dataclasses.asdict(r) | {"passed": r.passed}
                                       for r in self.rows]}, indent=1, default=_num)


def _num(v: Any) -> Any:
    return None if isinstance(v, float) and not np.isfinite(v) else v


def _yes(b: bool) -> str:
    return "yes" if b else "NO"


def check_market(root: str, n_days: int = 3, n_stocks: int = 16, seed: int = 0) -> Store:
    """A small synthetic market (the ``tiny`` preset, ``n_stocks`` x ``n_days``) in ``root``."""
    from fbgpu.data.synth import PRESETS, SynthConfig, generate_market

    cfg = SynthConfig(**{**PRESETS["tiny"].model_dump(), "n_days": n_days,
                         "n_stocks": n_stocks})
    store = Store(root)
    generate_market(store, cfg, seed=seed, progress=False)
    return store


def check_modules(modules: Sequence[str], n_days: int = 3, backend: str = "cpu",
                  store: Store | None = None) -> CheckReport:
    """Load ``modules`` and check each of their factors (module docstring). ``store``: an
    existing store to check on instead of a fresh synthetic market."""
    mods = load_modules(modules)
    names = [n for m in mods for n in m.names]
    if store is not None:
        return _check(store, names, backend, n_days)
    with tempfile.TemporaryDirectory(prefix="fbgpu-check-") as tmp:
        return _check(check_market(tmp, n_days), names, backend, n_days)


def _check(store: Store, names: list[str], backend: str, n_days: int) -> CheckReport:
    dates = input_dates(store, None, None)[:n_days]
    builtins = builtin_names()
    all_names = [*builtins, *[n for n in names if n not in builtins]]
    days = [load_day(store, d, all_names) for d in dates]
    cpu = segment_ops(get_backend(backend))

    def run(day: DayInputs, n: str, ops: Any = cpu) -> np.ndarray:
        out = compute_loaded_day(day, [n], ops).values[:, 0]
        return out.get() if hasattr(out, "get") else np.asarray(out)

    rows = []
    builtin_rates: dict[str, float] = {}
    for n in names:
        spec = FACTORS[n]
        r = FactorCheck(n, spec.family, origin_of(spec.module))
        rows.append(r)
        try:
            ref = [run(d, n) for d in days]
        except Exception as e:
            r.failures.append(f"raises on the synthetic market: {type(e).__name__}: {e}")
            continue
        _determinism(r, days, ref, lambda d, n=n: run(d, n))
        _parity(r, days, ref, n)
        _nan_rules(r, days[-1], ref[-1], lambda d, n=n: run(d, n))
        _lookahead(r, days, ref, lambda d, n=n: run(d, n))
        _throughput(r, days, n, builtins, lambda d, m: run(d, m), builtin_rates)
    n_stocks = max((len(d.universe) for d in days), default=0)
    return CheckReport(rows, len(days), n_stocks)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equal (NaN payloads aside)."""
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def _determinism(r: FactorCheck, days: list[DayInputs], ref: list[np.ndarray],
                 run: Callable[[DayInputs], np.ndarray]) -> None:
    r.deterministic = all(_same(run(d), v) for d, v in zip(days, ref, strict=True))
    if not r.deterministic:
        r.failures.append("two runs on the same inputs differ")


def _parity(r: FactorCheck, days: list[DayInputs], ref: list[np.ndarray], n: str) -> None:
    """CPU vs the GPU path on the stand-in device (and on a real GPU when usable)."""
    from fbgpu.engine.cuda_c import KernelBuildError, emulated_kernels
    from fbgpu.engine.standin import HostCrossingError, ImplicitUploadError, standin_backend

    targets: list[tuple[str, Any]] = []
    parts = []
    try:
        emulated_kernels()  # built once (g++); without a compiler the simulator cannot run
        targets.append(("simulator", standin_backend()))
    except (KernelBuildError, OSError) as e:
        r.warnings.append(f"GPU simulator not run (its kernels need a C++ compiler): {e}")
        parts.append("simulator: skipped")
    with contextlib.suppress(Exception):  # no usable GPU here: the simulator stands in
        targets.append(("gpu", get_backend("gpu")))
    for label, b in targets:
        try:
            ops = segment_ops(b)
            staging = run_staging(b)  # the days' uploads reuse one pool
            worst = 0.0
            for day, want in zip(days, ref, strict=True):
                out = compute_loaded_day(day_to_backend(day, b, staging), [n], ops).values[:, 0]
                got = b.to_host(out)
                worst = max(worst, _rel_diff(r, label, want, got))
        except Exception as e:
            upload = _cause(e, ImplicitUploadError)
            if upload is not None:
                r.failures.append(f"{label}: {implicit_upload_finding(n, upload)}")
                parts.append(f"{label}: implicit upload")
                continue
            crossing = _cause(e, HostCrossingError)
            if crossing is not None:
                r.failures.append(f"{label}: a host round trip inside the factor: {crossing}")
                parts.append(f"{label}: host crossing")
                continue
            r.failures.append(f"{label}: raises on the GPU code path: {type(e).__name__}: {e}")
            parts.append(f"{label}: raises")
            continue
        parts.append(f"{label} {worst:.1e}")
    r.parity = "; ".join(parts)


def implicit_upload_finding(name: str, err: BaseException) -> str:
    """The check's finding for factor ``name`` whose compute made the implicit upload
    ``err`` (:class:`fbgpu.engine.standin.ImplicitUploadError`): the call, then what to use
    instead."""
    return (f"implicit host->device upload in factor {name}: {_call_site(name, err)} hands "
            "xp.asarray a host (numpy) array; on a GPU that is a pageable copy that waits for "
            "the stream, on every call. Use ctx.xp to build the array on the device instead "
            "(ctx.xp.linspace / arange / full / zeros ...), or upload a small host constant "
            "explicitly with to_device(ctx.xp, a) from fbgpu.factors.api")


def _call_site(name: str, err: BaseException) -> str:
    """Where factor ``name``'s code made the call that raised ``err``: ``file:line `source```
    of the innermost frame in the factor function's file (a helper of the same module
    included), else the innermost frame outside fbgpu; ``"a call"`` when none is known."""
    import fbgpu

    code = getattr(FACTORS[name].compute, "__code__", None)
    frames = traceback.extract_tb(err.__traceback__)
    pkg = str(fbgpu.__path__[0])
    mine = ([f for f in frames if code is not None and f.filename == code.co_filename]
            or [f for f in frames if not f.filename.startswith(pkg)])
    if not mine:
        return "a call"
    f = mine[-1]
    where = f"{f.filename}:{f.lineno}"
    return f"{where} `{f.line.strip()}`" if f.line else where


def _cause(e: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The first exception of type ``kind`` in ``e``'s chain of causes."""
    while e is not None:
        if isinstance(e, kind):
            return e
        e = e.__cause__ or e.__context__
    return None


def _rel_diff(r: FactorCheck, label: str, want: np.ndarray, got: np.ndarray) -> float:
    nan_w, nan_g = np.isnan(want), np.isnan(got)
    if not np.array_equal(nan_w, nan_g):
        r.failures.append(f"{label}: NaN at different stocks than the CPU "
                          f"({int((nan_w != nan_g).sum())} stock(s))")
        return float("inf")
    ok = ~nan_w
    if not ok.any():
        return 0.0
    w, g = want[ok], got[ok]
    if not (np.isfinite(w) == np.isfinite(g)).all() or not np.array_equal(w[~np.isfinite(w)],
                                                                         g[~np.isfinite(g)]):
        r.failures.append(f"{label}: infinities differ from the CPU")
        return float("inf")
    fin = np.isfinite(w)
    rel = float(np.max(np.abs(w[fin] - g[fin]) / np.maximum(1.0, np.abs(w[fin])), initial=0.0))
    if rel > PARITY_RTOL:
        r.failures.append(f"{label}: differs from the CPU by {rel:.2e} (relative) > "
                          f"{PARITY_RTOL:g}")
    return rel


# ----------------------------------------------------------------------------- NaN rules
def _ticks_edit(t: DayTicks | None, stock: str,
                edit: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> DayTicks | None:
    """``t`` with the rows of ``stock`` replaced by ``edit(its columns)`` (any length)."""
    if t is None:
        return None
    i = int(np.searchsorted(t.symbols, stock))
    if i >= len(t.symbols) or t.symbols[i] != stock:
        return t
    a, b = int(t.offsets[i]), int(t.offsets[i + 1])
    new = edit({k: v[a:b].copy() for k, v in t.columns.items()})
    m = len(next(iter(new.values()))) if new else 0
    cols = {k: np.concatenate([v[:a], new[k], v[b:]]) for k, v in t.columns.items()}
    offsets = t.offsets.copy()
    offsets[i + 1:] += m - (b - a)
    return DayTicks(t.date, t.symbols, offsets, cols)


def _first_row(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v[:1] for k, v in c.items()}


def _no_rows(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v[:0] for k, v in c.items()}


def _constant(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(c)
    for k in ("price", "volume"):
        if k in c and len(c[k]):
            out[k] = np.full_like(c[k], c[k][0])
    if "amount" in c and len(c["amount"]):
        out["amount"] = (out["price"] * out["volume"]).astype(c["amount"].dtype) \
            if "price" in out and "volume" in out else np.full_like(c["amount"], c["amount"][0])
    return out


def _minute_edit(m: MinuteDay | None, stock: str, kind: str) -> MinuteDay | None:
    if m is None:
        return None
    i = int(np.searchsorted(m.symbols, stock))
    if i >= len(m.symbols) or m.symbols[i] != stock:
        return m
    f = {k: v.copy() for k, v in m.fields.items()}
    p0 = f["open"][i, 0]
    for k in ("open", "high", "low", "close"):
        f[k][i, :] = p0
    if kind == "one_tick":
        for k in ("volume", "amount", "num_trades"):
            f[k][i, 1:] = 0
    else:
        for k in ("volume", "amount", "num_trades"):
            f[k][i, :] = f[k][i, 0]
    return MinuteDay(m.date, m.symbols, f)


def edited_day(day: DayInputs, stock: str, kind: str) -> DayInputs:
    """``day`` with ``stock`` cut to one tick per source (``kind="one_tick"``: one traded
    minute, no cancellations) or made constant (``kind="constant"``)."""
    tick = _first_row if kind == "one_tick" else _constant
    cancel = _no_rows if kind == "one_tick" else _constant
    return dataclasses.replace(
        day, minute=_minute_edit(day.minute, stock, kind),
        trades=_ticks_edit(day.trades, stock, tick), orders=_ticks_edit(day.orders, stock, tick),
        cancels=_ticks_edit(day.cancels, stock, cancel))


def _nan_rules(r: FactorCheck, day: DayInputs, ref: np.ndarray,
               run: Callable[[DayInputs], np.ndarray]) -> None:
    if len(day.universe) < 3:
        r.warnings.append("too few stocks for the NaN-rule checks")
        return
    a, b = str(day.universe[0]), str(day.universe[1])
    r.isolated = True
    for stock, kind in ((a, "one_tick"), (b, "constant")):
        try:
            v = run(edited_day(day, stock, kind))
        except Exception as e:
            r.failures.append(f"raises on a {kind.replace('_', '-')} stock: "
                              f"{type(e).__name__}: {e}")
            r.isolated = False
            continue
        i = int(np.searchsorted(day.universe, stock))
        val = float(v[i])
        if kind == "one_tick":
            r.one_tick_value = val
        else:
            r.constant_value = val
        if np.isinf(val):
            r.failures.append(f"{val} on a {kind.replace('_', '-')} stock: give NaN when "
                              "undefined")
        others = np.ones(len(v), dtype=bool)
        others[i] = False
        if not _same(v[others], ref[others]):
            r.isolated = False
            r.failures.append(f"editing stock {stock} changed other stocks' values: a factor "
                              "must depend only on its own stock-day")


# ----------------------------------------------------------------------------- look-ahead
def _perturbed(day: DayInputs) -> DayInputs:
    """``day`` with every price x1.1 and every size x2 (a different future)."""
    def ticks(t: DayTicks | None) -> DayTicks | None:
        if t is None:
            return None
        cols = dict(t.columns)
        for k, f in (("price", 1.1), ("amount", 2.2), ("volume", 2)):
            if k in cols:
                cols[k] = (cols[k] * f).astype(cols[k].dtype)
        return DayTicks(t.date, t.symbols, t.offsets, cols)

    minute = None
    if day.minute is not None:
        f = {k: (v * (1.1 if k in ("open", "high", "low", "close") else 2)).astype(v.dtype)
             for k, v in day.minute.fields.items()}
        minute = MinuteDay(day.minute.date, day.minute.symbols, f)
    return dataclasses.replace(day, minute=minute, trades=ticks(day.trades),
                               orders=ticks(day.orders), cancels=ticks(day.cancels))


def _lookahead(r: FactorCheck, days: list[DayInputs], ref: list[np.ndarray],
               run: Callable[[DayInputs], np.ndarray]) -> None:
    future = [*days[:-1], _perturbed(days[-1])]
    forward = [run(d) for d in future]
    ok = all(_same(a, b) for a, b in zip(forward[:-1], ref[:-1], strict=True))
    if not ok:
        r.failures.append("changing the last day's inputs changed earlier days (look-ahead)")
    backward = [run(d) for d in reversed(days)][::-1]
    if not all(_same(a, b) for a, b in zip(backward, ref, strict=True)):
        ok = False
        r.failures.append("computing the days in reverse order changed values (state carried "
                          "across days)")
    r.no_lookahead = ok


# ----------------------------------------------------------------------------- throughput
def _source_rows(day: DayInputs, family: str) -> int:
    if family == "minute":
        return 0 if day.minute is None else day.minute.n_stocks * 240
    t = day.trades if family == "trade" else day.orders
    extra = day.cancels.n_rows if family == "order" and day.cancels is not None else 0
    return (t.n_rows if t is not None else 0) + extra


def _rate(days: list[DayInputs], family: str, fn: Callable[[DayInputs], Any]) -> float:
    rows = sum(_source_rows(d, family) for d in days)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for d in days:
            fn(d)
        best = min(best, time.perf_counter() - t0)
    return rows / best if best > 0 else float("nan")


def _throughput(r: FactorCheck, days: list[DayInputs], n: str, builtins: list[str],
                run: Callable[[DayInputs, str], np.ndarray], cache: dict[str, float]) -> None:
    r.rows_per_s = _rate(days, r.family, lambda d: run(d, n))
    if r.family not in cache:
        peers = [m for m in builtins if FACTORS[m].family == r.family]
        rates = [_rate(days, r.family, lambda d, m=m: run(d, m)) for m in peers]
        cache[r.family] = float(np.median(rates)) if rates else float("nan")
    r.builtin_rows_per_s = cache[r.family]
    if r.rows_per_s * SLOW_FACTOR < r.builtin_rows_per_s:
        r.warnings.append(f"{r.builtin_rows_per_s / r.rows_per_s:.0f}x slower than the "
                          "built-ins of its family: a Python loop over stocks or rows?")

