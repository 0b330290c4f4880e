"""Exit statuses of the real ``fbgpu`` command line, run as subprocesses (issue 13).

``CliRunner`` invokes the typer app, not :func:`fbgpu.cli.main`, so it never saw that ``main``
turned every failure into exit 0 and recorded the failed step as finished. These tests run
``python -m fbgpu`` (and the ``fbgpu`` console script when installed) and check the status, where
the messages go, the store and the run record.

Statuses (fbgpu/errors.py, README.md "Exit status"): 0 success, 1 usage or config, 2 input
rejected (store byte-identical), 3 a step failed while running (recorded as failed), 4 the store
is locked by another writer, 130 interrupted.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fbgpu.data.runlog import read_runlog, record_step
from fbgpu.data.store import Store

HEAD = "SecurityID,TransactTime,ApplSeqNum,BidApplSeqNum,OfferApplSeqNum,LastPx,LastQty,ExecType"
ROW1 = "000001,20240102093000010,12,11,4,10.01,200,F"
ROW2 = "000001,20240102093001000,14,6,13,10.00,300,F"
ENV = {**os.environ, "FBGPU_PROGRESS": "0", "COLUMNS": "200", "NO_COLOR": "1",
       "TERM": "dumb"}


def fbgpu(*args: str, cwd: Path | None = None,
          exe: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command line in a fresh interpreter, as a user would."""
    cmd = [*(exe or [sys.executable, "-m", "fbgpu"]), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300,
                          check=False)


def digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (run.json included) and its SHA-256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def csv(path: Path, *rows: str) -> Path:
    path.write_text("\n".join([HEAD, *rows]) + "\n")
    return path


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store holding one successful szse-trade ingest (the run's stdout/stderr saved too)."""
    root = tmp_path_factory.mktemp("cli_exit")
    good = csv(root / "good.csv", ROW1, ROW2)
    store = root / "store"
    res = fbgpu("ingest", "--format", "szse-trade", "--in", str(good), "--store", str(store))
    (root / "good.rc").write_text(str(res.returncode))
    (root / "good.err").write_text(res.stderr + res.stdout)
    return root, store


def test_help_exits_0() -> None:
    res = fbgpu("--help")
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout and "ingest" in res.stdout
    assert res.stderr == ""


@pytest.mark.parametrize("argv", [["--bogus"], ["ingest", "--bogus"]])
def test_unknown_option_exits_1_with_usage_on_stderr(argv: list[str]) -> None:
    res = fbgpu(*argv)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Usage:" in res.stderr and "No such option: --bogus" in res.stderr
    assert "Error" not in res.stdout


def test_missing_required_option_exits_1() -> None:
    res = fbgpu("ingest", "--format", "szse-trade")
    assert res.returncode == 1
    assert "Missing option '--in'" in res.stderr


def test_no_command_prints_help_and_exits_1() -> None:
    res = fbgpu()
    assert res.returncode == 1
    assert "Usage" in res.stdout + res.stderr


def test_successful_ingest_exits_0_and_is_recorded_finished(ingested: tuple[Path, Path]) -> None:
    root, store = ingested
    assert (root / "good.rc").read_text() == "0", (root / "good.err").read_text()
    assert "done ingest szse-trade: 2 rows read, 2 written" in (root / "good.err").read_text()
    entry = read_runlog(Store(store))["steps"]["ingest"]
    assert entry["status"] == "ok" and "finished" in entry


def test_malformed_ingest_exits_2_names_file_row_column_and_leaves_store(
        ingested: tuple[Path, Path]) -> None:
    root, store = ingested
    bad = csv(root / "bad.csv", ROW1, ROW2.replace("10.00", "10.0x"))
    before = digest(store)
    assert "run.json" in before and any(k.startswith("trades/") for k in before)
    res = fbgpu("ingest", "--format", "szse-trade", "--in", str(bad), "--store", str(store))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "bad.csv" in res.stderr and "row 2" in res.stderr and "LastPx" in res.stderr
    assert "the store was not changed" in res.stderr
    assert "done" not in res.stdout + res.stderr
    # byte for byte, run.json included: the rejected step is not recorded as finished
    assert digest(store) == before


def test_bad_mapping_exits_1_and_leaves_store(ingested: tuple[Path, Path]) -> None:
    """A mapping error is a config error (1), not bad data (2); nothing is written."""
    root, store = ingested
    mapping = root / "two_char.toml"
    mapping.write_text('delimiter = ";;"\n')
    before = digest(store)
    res = fbgpu("ingest", "--format", "szse-trade", "--in", str(root / "good.csv"),
                "--mapping", str(mapping), "--store", str(store))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "delimiter" in res.stderr and "the store was not changed" in res.stderr
    assert digest(store) == before


def test_unknown_format_and_bad_config_exit_1(ingested: tuple[Path, Path]) -> None:
    root, store = ingested
    before = digest(store)
    res = fbgpu("ingest", "--format", "nope", "--in", str(root / "good.csv"),
                "--store", str(store))
    assert res.returncode == 1 and "unknown format 'nope'" in res.stderr
    cfg = root / "broken.toml"
    cfg.write_text("[evaluate\n")
    res = fbgpu("evaluate", "--store", str(store), "--config", str(cfg))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "broken.toml" in res.stderr
    assert digest(store) == before


def test_gpu_requested_without_gpu_exits_1(ingested: tuple[Path, Path]) -> None:
    from fbgpu.engine.backend import get_backend

    try:
        if get_backend("gpu").name == "gpu":
            pytest.skip("a GPU is usable here")
    except Exception:
        pass
    _, store = ingested
    before = digest(store)
    res = fbgpu("factors", "--store", str(store), "--backend", "gpu", "--no-progress")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "GPU" in res.stderr
    assert digest(store) == before


def test_store_without_the_needed_table_is_rejected_with_2(tmp_path: Path) -> None:
    """Training on a store without daily bars rejects its input (2) and writes nothing."""
    store = Store(tmp_path / "store")
    ok = record_step(store, "synth", 1.0, backend="cpu", summary="earlier success")
    before = digest(store.root)
    res = fbgpu("train", "--store", str(store.root), "--backend", "cpu")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "fbgpu: error:" in res.stderr and "daily" in res.stderr
    assert "the store was not changed" in res.stderr
    assert digest(store.root) == before
    assert read_runlog(store)["steps"] == {"synth": ok}


def test_failed_step_exits_3_and_is_recorded_failed(tmp_path: Path) -> None:
    """A step that fails while running (a user factor raises inside the computation) exits 3
    with a one-line error; run.json records it as failed with its error and keeps the other
    steps. A corrupt partition, by contrast, is rejected input (2) naming the file."""
    store = Store(tmp_path / "store")
    res = fbgpu("synth", "--store", str(store.root), "--preset", "tiny", "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    ok = read_runlog(store)["steps"]["synth"]
    module = tmp_path / "raiser.py"
    module.write_text('import fbgpu\n\n@fbgpu.factor("always_raises", "order", 1)\n'
                      'def f(ctx):\n    """x"""\n    raise ZeroDivisionError("nope")\n')
    res = fbgpu("factors", "--store", str(store.root), "--backend", "cpu", "--no-progress",
                "--factors-module", str(module))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "fbgpu: error:" in res.stderr and "always_raises" in res.stderr
    assert "Traceback" not in res.stderr
    log = read_runlog(store)
    assert log["steps"]["synth"] == ok
    failed = log["steps"]["factors"]
    assert failed["status"] == "failed" and "finished" not in failed
    assert failed["exit_code"] == 3 and "ZeroDivisionError" in failed["error"]
    assert [e["status"] for e in log["history"]][-1] == "failed"

    victim = sorted((store.root / "daily").rglob("*.parquet"))[0]
    victim.write_bytes(b"PAR1 this is not parquet PAR1")
    # a training configuration the 60-day market can serve, so that train reads the market
    short = tmp_path / "short.toml"
    short.write_text("[train]\nhf_window = 5\nlf_daily_len = 5\nmin_train_dates = 2\n"
                     "sample_every = 1\nretrain_months = [2]\npurge = false\n")
    before = digest(store.root)
    res = fbgpu("train", "--store", str(store.root), "--backend", "cpu", "--config", str(short))
    assert res.returncode == 2, res.stdout + res.stderr
    assert victim.name in res.stderr and "the store was not changed" in res.stderr
    assert digest(store.root) == before


def test_console_script_gives_the_same_statuses() -> None:
    script = Path(sys.executable).with_name("fbgpu")
    if not script.exists():
        pytest.skip("the fbgpu console script is not installed next to this interpreter")
    assert fbgpu("--help", exe=[str(script)]).returncode == 0
    res = fbgpu("--bogus", exe=[str(script)])
    assert res.returncode == 1 and "No such option" in res.stderr


def test_pipeline_stage_failure_is_recorded_failed(tmp_path: Path) -> None:
    """``fbgpu demo``'s stages: a stage that raises is recorded as failed (never finished) and the
    error propagates; the earlier stages' entries stay."""
    from fbgpu.pipeline import _run_stage

    store = Store(tmp_path)
    _run_stage(store, "synth", lambda: "market ok", "cpu")

    def boom() -> None:
        raise ValueError("no usable dates")

    with pytest.raises(ValueError, match="no usable dates"):
        _run_stage(store, "factors", boom, "cpu")
    log = json.loads((tmp_path / "run.json").read_text())
    assert log["steps"]["synth"]["status"] == "ok" and log["steps"]["synth"]["summary"] == \
        "market ok"
    assert log["steps"]["factors"]["status"] == "failed"
    assert "finished" not in log["steps"]["factors"]
    assert log["steps"]["factors"]["error"] == "ValueError: no usable dates"


def test_report_shows_a_failed_step_as_failed(tmp_path: Path) -> None:
    from fbgpu.report import build_report

    store = Store(tmp_path)
    record_step(store, "synth", 1.0, summary="market ok")
    record_step(store, "train", 2.0, status="failed", error="StoreError: no daily table")
    page = build_report(store).read_text()
    run = page[page.index("<h2>Run</h2>"):]
    assert "<th>status</th>" in run and "<th>finished</th>" not in run
    assert "<td>failed</td>" in run and "StoreError: no daily table" in run


def _run_entry(body: str) -> subprocess.CompletedProcess[str]:
    """``fbgpu.cli.run`` in a fresh interpreter, with ``main`` replaced by ``body``'s ``fake``."""
    code = ("import atexit, sys\nfrom fbgpu import cli\n"
            "atexit.register(lambda: print('atexit handler ran', flush=True))\n"
            f"{body}\ncli.main = fake\nprint('before', end='')\ncli.run()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                          timeout=120, check=False)


@pytest.mark.parametrize("status", [0, 2, 4])
def test_entry_point_exits_with_mains_status_after_python_cleanup(status: int) -> None:
    """``run`` leaves by ``os._exit`` (no native static destructors, which can abort a finished
    command with SIGABRT), yet keeps main's status, unflushed stdout and the atexit handlers."""
    res = _run_entry(f"def fake():\n    return {status}")
    assert res.returncode == status, res.stderr
    assert res.stdout.startswith("before")
    assert "atexit handler ran" in res.stdout


def test_entry_point_turns_an_escaped_exception_into_3_with_traceback() -> None:
    res = _run_entry("def fake():\n    raise RuntimeError('escaped from main')")
    assert res.returncode == 3
    assert "RuntimeError: escaped from main" in res.stderr
    assert "Traceback" in res.stderr


def test_factors_and_evaluate_reject_a_damaged_or_missing_input_with_2(tmp_path: Path) -> None:
    """`fbgpu factors` with an input partition whose manifest is damaged, and `fbgpu evaluate`
    on a store without a factors table: rejected input (2, naming the partition or table, no
    usage banner), the store byte-identical. Both used to exit 1 as if an option were wrong."""
    store = Store(tmp_path / "store")
    res = fbgpu("synth", "--store", str(store.root), "--preset", "tiny", "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    res = fbgpu("evaluate", "--store", str(store.root), "--backend", "cpu")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "fbgpu: error:" in res.stderr and "factors" in res.stderr
    assert "Usage:" not in res.stderr and "the store was not changed" in res.stderr

    # with a factors table, a --factors name it lacks is a usage error (1), named, nothing read
    res = fbgpu("factors", "--store", str(store.root), "--backend", "cpu", "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    res = fbgpu("evaluate", "--store", str(store.root), "--backend", "cpu",
                "--factors", "nosuch", "--no-figures")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "unknown factor(s) 'nosuch'" in res.stderr and "Traceback" not in res.stderr

    bad = store.dates("trades")[1]
    manifest = store.partition_dir("trades", bad) / "_manifest.json"
    manifest.write_text("{ not json")
    before = digest(store.root)
    res = fbgpu("factors", "--store", str(store.root), "--backend", "cpu", "--no-progress")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"trades/{bad}" in res.stderr and "damaged" in res.stderr
    assert "Usage:" not in res.stderr and "the store was not changed" in res.stderr
    assert digest(store.root) == before
    manifest.write_bytes(b"\xff\xfe not utf-8")  # undecodable bytes: the same verdict
    before = digest(store.root)
    res = fbgpu("factors", "--store", str(store.root), "--backend", "cpu", "--no-progress")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"trades/{bad}" in res.stderr and "damaged" in res.stderr
    assert digest(store.root) == before


def test_factors_failing_after_earlier_dates_were_written_exits_3_and_says_so(
        tmp_path: Path) -> None:
    """A damaged data file on the third date (its manifest intact, so the plan accepts it):
    the first two dates are computed and written before the read fails. That is no longer
    'rejected, store unchanged' (2) but a step that failed while running (3), and the error
    names the date and what was written; a re-run after the repair computes only the rest."""
    store = Store(tmp_path / "store")
    res = fbgpu("synth", "--store", str(store.root), "--preset", "tiny", "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    dates = store.dates("trades")
    bad = dates[2]
    victims = sorted(store.partition_dir("trades", bad).rglob("part-*"))
    assert victims
    saved = {v: v.read_bytes() for v in victims}
    for v in victims:
        v.write_bytes(b"not a partition")
    res = fbgpu("factors", "--store", str(store.root), "--backend", "cpu", "--no-progress")
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"factors for {bad} failed after 2 earlier date(s)" in res.stderr
    assert f"{dates[0]} .. {dates[1]}" in res.stderr
    assert "the store was not changed" not in res.stderr
    assert store.dates("factors") == dates[:2]
    assert read_runlog(store)["steps"]["factors"]["exit_code"] == 3
    for v, b in saved.items():
        v.write_bytes(b)
    res = fbgpu("factors", "--store", str(store.root), "--backend", "cpu", "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    assert store.dates("factors") == dates


@pytest.mark.parametrize("argv,hint", [
    (["--dates-per-task", "2"], "needs --cluster"),
    (["--workers", "2"], "needs --cluster"),
    (["--cluster", "local", "--memory-gb", "1"], "not used by a --cluster run"),
])
def test_factors_refuses_an_option_of_the_other_route(tmp_path: Path, argv: list[str],
                                                      hint: str) -> None:
    """Options that only one route (Dask or a single process) reads are refused as usage
    errors (1) before anything runs, instead of being silently ignored."""
    (tmp_path / "store").mkdir()
    res = fbgpu("factors", "--store", str(tmp_path / "store"), *argv)
    assert res.returncode == 1, res.stdout + res.stderr
    assert hint in res.stderr


def test_factors_refuses_a_budget_below_the_footprint_as_a_process(tiny_store: Store,
                                                                   tmp_path: Path) -> None:
    """``fbgpu factors --memory-gb`` below what the process and one stock-day need exits 1,
    names the footprint and, for a Parquet day, the row-group reading allowance apart, gives
    the least budget that works, and writes nothing."""
    import shutil

    root = tmp_path / "pq"
    for t in ("trades", "orders", "minute"):
        shutil.copytree(tiny_store.root / t, root / t)
    Store(root).convert("parquet")
    d = str(tiny_store.dates("trades")[0])
    before = digest(root)
    res = fbgpu("factors", "--store", str(root), "--start", d, "--end", d, "--backend", "cpu",
                "--memory-gb", "0.001", "--no-progress")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "memory budget 1.0 MB is too small" in res.stderr
    assert "fixed footprint is" in res.stderr and "reading a chunk of its Parquet partitions" \
        in res.stderr and "give at least" in res.stderr
    assert not Store(root).has("factors", d)
    assert {k: v for k, v in digest(root).items() if k != "run.json"} == {
        k: v for k, v in before.items() if k != "run.json"}


def test_demo_on_a_market_too_short_for_its_models_is_refused_before_any_stage(
        tmp_path: Path) -> None:
    """``fbgpu demo --preset tiny`` (60 trading days): the train stage could never find a
    retrain window, so the demo says so at once, with status 1 and what to do instead, and
    writes nothing (it used to fail with status 3 after generating the market and running the
    factors and the evaluation). An unknown preset is the same usage error."""
    store = tmp_path / "demo"
    store.mkdir()
    before = digest(store)
    res = fbgpu("demo", "--preset", "tiny", "--store", str(store), "--backend", "cpu")
    assert res.returncode == 1, res.stderr
    assert ("the train stage cannot run on preset 'tiny': no retrain window: 60 trading days"
            in res.stderr)
    assert "use the 'demo' preset" in res.stderr and "Traceback" not in res.stderr
    assert digest(store) == before and not any(p.is_dir() for p in store.iterdir())
    res = fbgpu("demo", "--preset", "nope", "--store", str(store), "--backend", "cpu")
    assert res.returncode == 1 and "unknown synthetic-market preset 'nope'" in res.stderr
    assert digest(store) == before


def test_train_on_a_market_too_short_is_rejected_with_the_store_unchanged(
        tiny_store: Store, tmp_path: Path) -> None:
    """``fbgpu train`` on a 60-day market (the report's training needs 100 sample dates before
    a retrain date): status 2 before anything is read or written (run.json included), the
    message naming the days and the [train] keys; it used to load the inputs and fail with 3."""
    import shutil

    store = tmp_path / "short"
    shutil.copytree(tiny_store.root / "daily", store / "daily")
    before = digest(store)
    res = fbgpu("train", "--store", str(store), "--backend", "cpu")
    assert res.returncode == 2, res.stderr
    assert "no retrain window: 60 trading days" in res.stderr
    assert "min_train_dates=100" in res.stderr and "[train] min_train_dates" in res.stderr
    assert "the store was not changed" in res.stderr
    assert digest(store) == before
