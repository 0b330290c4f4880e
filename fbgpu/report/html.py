"""Render what a store holds into one self-contained HTML report (figures embedded).

Protocol with the pipeline steps: each step writes its outputs under ``<store>/reports/<step>/``:
tables as ``*.csv`` (with a ``*.json`` twin), figures as ``*.png``, and optionally an
``index.json`` of the form ``{"title": str, "text": str, "items": [{"file": "x.csv",
"caption": "..."}, ...]}`` fixing order and captions. Without an index every CSV and PNG is shown,
sorted by name. Sections appear in pipeline order; a step that has not run is simply absent.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from fbgpu import __version__
from fbgpu.data.runlog import read_runlog
from fbgpu.data.store import Store, atomic_write_bytes
from fbgpu.evaluate.truth import ATTAIN_BARS, ATTAIN_PANEL, ATTAIN_RAW, ORACLE, ORACLE_Z
from fbgpu.report.claims import T_THRESHOLD, paper_vs_run

log = logging.getLogger(__name__)

#: Report sections in pipeline order: (directory under reports/, default title).
SECTIONS: list[tuple[str, str]] = [
    ("synth", "Synthetic market"),
    ("ingest", "Ingest and validation"),
    ("factors", "High-frequency factors"),
    ("evaluate", "Single-factor tests"),
    ("models", "Deep-learning factors and full-band fusion"),
    ("backtest", "Index enhancement"),
    ("bench", "Benchmarks"),
]


#: The research report's exhibit number of each step output, by (section, file stem). The
#: "overview" section repeats the fusion factor's table, group NAV and cumulative RankIC as the
#: report's summary page (exhibits 3-5).
EXHIBIT_NUMBERS: dict[tuple[str, str], int] = {
    ("overview", "exhibit3_fused"): 3,
    ("overview", "nav_fused"): 4,
    ("overview", "cumulative_rank_ic_fused"): 5,
    ("evaluate", "single_factor_minute"): 7,
    ("evaluate", "corr_heatmap_minute"): 23,
    ("evaluate", "corr_minute"): 24,
    ("evaluate", "single_factor_trade"): 26,
    ("evaluate", "corr_heatmap_trade"): 35,
    ("evaluate", "single_factor_order"): 37,
    ("evaluate", "corr_heatmap_order"): 42,
    ("models", "exhibit45_hf"): 45,
    ("models", "nav_hf_gru"): 46,
    ("models", "top_nav_hf_gru"): 47,
    ("models", "cumulative_rank_ic_hf"): 48,
    ("models", "style_correlation_hf"): 49,
    ("models", "exhibit52_lf"): 52,
    ("models", "nav_lf_mtl"): 53,
    ("models", "top_nav_lf_mtl"): 54,
    ("models", "cumulative_rank_ic_lf"): 55,
    ("models", "style_correlation_lf"): 56,
    ("models", "exhibit57_fusion"): 57,
    ("models", "nav_fused"): 58,
    ("models", "top_nav_fused"): 59,
    ("models", "cumulative_rank_ic_fused"): 60,
    ("models", "style_correlation_fused"): 61,
    ("backtest", "cumulative_excess_csi500"): 63,
    ("backtest", "performance_csi500"): 64,
    ("backtest", "yearly_csi500"): 65,
    ("backtest", "cumulative_excess_csi1000"): 66,
    ("backtest", "performance_csi1000"): 67,
    ("backtest", "yearly_csi1000"): 68,
}

#: The summary page (section "overview"): files under reports/models/ and their captions.
OVERVIEW: list[tuple[str, str]] = [
    ("exhibit3_fused.csv", "Full-band fusion factor: RankIC and TOP-portfolio summary "
                           "(10 groups, weekly, out of sample)"),
    ("nav_fused.png", "Full-band fusion factor: group net value relative to the pool"),
    ("cumulative_rank_ic_fused.png", "Full-band fusion factor: cumulative RankIC"),
]

#: Rows shown on the page before a table is summarised (the full table is the linked CSV).
MAX_ROWS = 20

#: Column-name fragments whose values are fractions shown as percentages.
PERCENT_HINTS = ("IC>0", "win", "excess", "turnover", "return", "volatility", "drawdown",
                 "tracking error", "RankIC mean", "RankIC std", "share of oracle",
                 "active industry")

#: Column-name fragments whose values are fractions shown in basis points (1 bp = 0.0001), as
#: the report quotes trading costs.
BP_HINTS = ("cost",)


@dataclass
class Item:
    kind: str  # "table" | "figure" | "text"
    caption: str
    html: str
    anchor: str = ""


@dataclass
class Section:
    key: str
    title: str
    text: str = ""
    items: list[Item] = field(default_factory=list)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return ""
        if v.is_integer() and abs(v) < 1e15:  # a count read back as float (NaN in its column)
            return f"{int(v):,}" if abs(v) >= 1000 else str(int(v))
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.2f}"
        return f"{v:.4f}"
    return html.escape(str(v))


def _is_percent(column: str) -> bool:
    return any(h.lower() in column.lower() for h in PERCENT_HINTS)


def _is_bp(column: str) -> bool:
    return any(h.lower() in column.lower() for h in BP_HINTS)


def _is_stat(column: str) -> bool:
    """t-statistics and information ratios (``t``, ``IC_IR``, ``TOP IR``...): two decimals."""
    return column == "t" or column.endswith("IR") or column.endswith("ratio")


def _fmt_stat(v: Any) -> str:
    if isinstance(v, float | int) and not isinstance(v, bool):
        return "" if v != v else f"{float(v):.2f}"
    return _fmt(v)


def _fmt_bp(v: Any) -> str:
    """A fraction in basis points with one decimal (0.0006 -> 6.0 bp)."""
    if isinstance(v, float | int) and not isinstance(v, bool):
        return "" if v != v else f"{1e4 * float(v):.1f} bp"
    return _fmt(v)


def _header(c: object) -> str:
    """Column header text; pandas' ``Unnamed: N`` (an unnamed CSV index) becomes empty."""
    s = str(c)
    return "" if s.startswith("Unnamed:") else html.escape(s)


def table_html(df: pd.DataFrame, max_rows: int = MAX_ROWS, link: str | None = None) -> str:
    """An HTML table of ``df``: fractions in percent columns (:data:`PERCENT_HINTS`) as ``x.xx%``,
    in cost columns (:data:`BP_HINTS`) as ``x.x bp``, other numbers compact; at most
    ``max_rows`` rows, the rest summarised with a link to the CSV.
    Wrapped in a horizontally scrolling box so no table is wider than the page."""
    more = len(df) - max_rows
    df = df.head(max_rows)
    fmts = [_fmt_bp if _is_bp(str(c)) else _fmt_pct if _is_percent(str(c))
            else _fmt_stat if _is_stat(str(c)) else _fmt for c in df.columns]
    head = "".join(f"<th>{_header(c)}</th>" for c in df.columns)
    rows = "".join(
        "<tr>" + "".join(
            f"<td>{f(v)}</td>" for v, f in zip(r, fmts, strict=True))
        + "</tr>"
        for r in df.itertuples(index=False)
    )
    where = f"<a href='{html.escape(link)}'>{html.escape(link)}</a>" if link else "the CSV"
    tail = f"<p class='note'>... {more} more rows in {where}.</p>" if more > 0 else ""
    if link and more <= 0:
        tail = f"<p class='note'>Data: {where}.</p>"
    return (f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>"
            f"</table></div>{tail}")


def _fmt_pct(v: Any) -> str:
    """A fraction as a percentage with two decimals (0.0123 -> 1.23%)."""
    if isinstance(v, float | int) and not isinstance(v, bool):
        return "" if v != v else f"{100 * float(v):.2f}%"
    return _fmt(v)


def _figure_html(path: Path) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{b64}'/>"


def _caption(path: Path) -> str:
    return path.stem.replace("_", " ")


def _item(path: Path, caption: str | None = None, report_dir: Path | None = None,
          section: str | None = None) -> Item | None:
    cap = caption or _caption(path)
    key = (section or path.parent.name, path.stem)
    num = EXHIBIT_NUMBERS.get(key)
    anchor = f"exhibit-{num}" if num is not None else f"{key[0]}-{key[1]}"
    if num is not None:
        cap = f"Exhibit {num}: {cap}"
    if path.suffix == ".png":
        return Item("figure", cap, _figure_html(path), anchor)
    if path.suffix == ".csv":
        try:
            df = pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
            log.warning("report: cannot read %s: %s", path, e)
            return None
        link = path.relative_to(report_dir).as_posix() if report_dir else None
        return Item("table", cap, table_html(df, link=link), anchor)
    if path.suffix in (".md", ".txt"):
        return Item("text", cap, f"<pre>{html.escape(path.read_text())}</pre>")
    return None


def collect_section(report_dir: Path, key: str, title: str) -> Section | None:
    """The section of step ``key`` from ``report_dir/key`` (None when the step left nothing)."""
    d = report_dir / key
    if not d.is_dir():
        return None
    sec = Section(key, title)
    index = d / "index.json"
    if index.exists():
        spec = json.loads(index.read_text())
        sec.title = spec.get("title", title)
        sec.text = spec.get("text", "")
        for it in spec.get("items", []):
            p = d / it["file"]
            if p.exists() and (item := _item(p, it.get("caption"), report_dir)) is not None:
                sec.items.append(item)
    else:
        for p in sorted(d.rglob("*")):
            if p.suffix in (".csv", ".png") and (item := _item(p, None, report_dir)) is not None:
                sec.items.append(item)
    return sec if sec.items or sec.text else None


def overview_section(report_dir: Path) -> Section | None:
    """The summary page (exhibits 3-5) from the models step's fusion outputs, if present."""
    sec = Section("overview", "Summary: the full-band fusion factor")
    for name, cap in OVERVIEW:
        p = report_dir / "models" / name
        if p.exists() and (item := _item(p, cap, report_dir, "overview")) is not None:
            sec.items.append(item)
    return sec if sec.items else None


def truth_summary(report_dir: Path) -> str:
    """On a synthetic store: one sentence on how much of the oracle RankIC the models recover
    (``reports/models/planted_truth.csv``, :mod:`fbgpu.evaluate.truth`); "" otherwise."""
    p = report_dir / "models" / "planted_truth.csv"
    if not p.exists():
        return ""
    t = pd.read_csv(p, index_col=0)
    if "RankIC mean" not in t or not len(t):
        return ""
    if ORACLE not in t.index:
        return ""
    o = t.loc[ORACLE]
    z = float(t.loc[ORACLE_Z, "RankIC mean"]) if ORACLE_Z in t.index else float("nan")
    parts = []
    for label in ("full-band fusion", "HF deep-learning", "LF multi-task"):
        if label in t.index:
            r = t.loc[label]
            parts.append(f"{label} {100 * r['RankIC mean']:.2f}% (t = {r['t']:.1f}), "
                         f"{100 * r['share of oracle IC']:.0f}% of the oracle and "
                         f"{100 * r['RankIC mean'] / z:.0f}% of its informed-flow part")
    if not parts:
        return ""
    ceilings = [f"{what} {100 * t.loc[label, 'RankIC mean']:.2f}% "
                f"({100 * t.loc[label, 'share of oracle IC']:.0f}% of the oracle)"
                for label, what in ((ATTAIN_PANEL, "the 20-day smoothed factor panel (40 days)"),
                                    (ATTAIN_RAW, "the raw daily factors (10 days) and returns"),
                                    (ATTAIN_BARS, "past daily returns (the LF bars' part)"))
                if label in t.index]
    attain = ("" if not ceilings else
              " The data show the planted states only with noise: the best linear fit of the "
              "planted expected return, in sample, on " + "; on ".join(ceilings)
              + " (attainable ceilings, docs/synth.md).")
    return (f"Ground truth: an oracle that knows the planted states ranks stocks by the planted "
            f"expected return and reaches a weekly RankIC of {100 * o['RankIC mean']:.2f}% "
            f"(t = {o['t']:.1f}, {int(o['dates'])} test dates); its informed-flow part alone, "
            f"the part the tick data can reveal, reaches {100 * z:.2f}%.{attain} The models "
            "recover: " + "; ".join(parts) + ".")


def backtest_tearsheets(store: Store, report_dir: Path) -> list[Item]:
    """Per index with a backtest: the tear-sheet figure (net value vs the benchmark, excess
    drawdown, holdings, active size and industry exposures;
    :func:`fbgpu.portfolio.figures.tearsheet_figure`) and the exposures table
    (:func:`fbgpu.portfolio.exposures.exposure_table`), written next to the backtest's outputs.
    Built here because they read the backtest's ``weights`` table, which the step leaves in
    the store."""
    from fbgpu.portfolio.exposures import exposure_table
    from fbgpu.portfolio.figures import tearsheet_figure

    out: list[Item] = []
    for daily_p in sorted((report_dir / "backtest").glob("daily_returns_*.csv")):
        index = daily_p.stem.removeprefix("daily_returns_")
        try:
            daily = pd.read_csv(daily_p)
            table, mean_ind = exposure_table(store, index)
        except (OSError, KeyError, ValueError, pd.errors.ParserError) as e:
            log.warning("report: no tear sheet for %s: %s", index, e)
            continue
        fig = tearsheet_figure(daily, table, mean_ind, index,
                               report_dir / "backtest" / f"tearsheet_{index}.png")
        if (item := _item(fig, f"{index} enhancement: net value vs the benchmark, excess "
                          "drawdown, holdings, active size and industry exposures",
                          report_dir)) is not None:
            out.append(item)
        if len(table):
            table.to_csv(report_dir / "backtest" / f"exposures_{index}.csv", index=False)
            if (item := _item(report_dir / "backtest" / f"exposures_{index}.csv",
                              f"{index}: holdings and active exposures per rebalance",
                              report_dir)) is not None:
                out.append(item)
    return out


def _dedupe_anchors(sections: list[Section]) -> None:
    """Give the first item with an anchor id that id; later duplicates get ``-2``, ``-3``..."""
    seen: dict[str, int] = {}
    for sec in sections:
        for it in sec.items:
            k = seen.get(it.anchor, 0)
            seen[it.anchor] = k + 1
            if k:
                it.anchor = f"{it.anchor}-{k + 1}"


def _claims_summary(claims: pd.DataFrame) -> str:
    """One sentence counting the verdicts of the paper-vs-run table."""
    if not len(claims):
        return ("No model or backtest output in this store, so none of the paper's headline "
                "claims can be checked.")
    c = claims["verdict"].value_counts()
    return (f"Of {len(claims)} headline claims this run can test, {c.get('reproduced', 0)} "
            f"are reproduced, {c.get('contradicted', 0)} are contradicted and "
            f"{c.get('inconclusive', 0)} are inconclusive (|t| < {T_THRESHOLD:g}).")


def data_summary(store: Store) -> pd.DataFrame:
    """Per table: partitions, first/last date, rows (from manifests), symbols on the last date."""
    rows = []
    for table in store.tables():
        dates = store.dates(table)
        if not dates:
            m = store.manifest(table, None)
            rows.append({"table": table, "partitions": 1, "first date": "", "last date": "",
                         "rows": m.rows if m else None, "symbols (last date)": None})
            continue
        n_rows = 0
        for d in dates:
            m = store.manifest(table, d)
            n_rows += m.rows if m else 0
        try:
            last = store.read(table, dates[-1], ["symbol"]).column("symbol")
            n_sym = len(set(last.to_pylist()))
        except Exception:
            n_sym = None
        rows.append({"table": table, "partitions": len(dates), "first date": str(dates[0]),
                     "last date": str(dates[-1]), "rows": n_rows, "symbols (last date)": n_sym})
    return pd.DataFrame(rows)


def build_report(store: Store | str | Path, out: Path | None = None) -> Path:
    """Write ``<store>/reports/report.html`` (and the data summary as CSV/JSON); return its path."""
    store = store if isinstance(store, Store) else Store(store)
    report_dir = store.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    synth_meta = None
    sp = Path(store.root) / "synth.json"
    if sp.exists():
        synth_meta = json.loads(sp.read_text())

    summary = data_summary(store)
    summary.to_csv(report_dir / "data_summary.csv", index=False)
    summary.to_json(report_dir / "data_summary.json", orient="records", indent=1)

    sections = [s for key, title in SECTIONS
                if (s := collect_section(report_dir, key, title)) is not None]
    if (ov := overview_section(report_dir)) is not None:
        sections.insert(0, ov)
    for sec in sections:
        if sec.key == "backtest":
            sec.items += backtest_tearsheets(store, report_dir)
    _dedupe_anchors(sections)
    from fbgpu.factors.compute import factor_catalog

    catalog = pd.DataFrame(factor_catalog(store))
    if len(catalog):  # the 27 built-ins, then the user factors stored with their formulas
        catalog = catalog[["name", "family", "direction", "user", "module", "formula"]]
        catalog.to_csv(report_dir / "factor_catalog.csv", index=False)
    claims = paper_vs_run(report_dir)
    claims.to_csv(report_dir / "paper_vs_run.csv", index=False)
    runlog = read_runlog(store)
    steps = pd.DataFrame(  # a failed step shows its failure time and error, never "finished"
        [{"step": e.get("step", ""), "status": e.get("status", "ok"),
          "ended": e.get("finished") or e.get("failed", ""),
          **{k: e.get(k, "") for k in ("seconds", "backend", "device")},
          "summary": e.get("error") or e.get("summary", "")}
         for e in runlog.get("steps", {}).values()]
    )
    configs = {name: e.get("config", {}) for name, e in runlog.get("steps", {}).items()}
    env = Environment(loader=PackageLoader("fbgpu.report", "templates"),
                      autoescape=select_autoescape(["html"]))
    page = env.get_template("report.html").render(
        title="fbgpu full-band report",
        generated=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        version=__version__,
        store=str(store.root),
        synth=synth_meta,
        data_table=table_html(summary) if len(summary) else "<p>The store is empty.</p>",
        factors_table=(table_html(catalog, max_rows=len(catalog), link="factor_catalog.csv")
                       if len(catalog) else ""),
        sections=sections,
        claims_table=(table_html(claims, max_rows=len(claims), link="paper_vs_run.csv")
                      if len(claims) else ""),
        claims_summary=_claims_summary(claims),
        truth_summary=truth_summary(report_dir),
        steps_table=table_html(steps) if len(steps) else "<p>No step has recorded a run.</p>",
        configs=json.dumps(configs, indent=1, default=str),
        platform=f"Python {platform.python_version()} on {platform.platform()}",
    )
    out = out or report_dir / "report.html"
    atomic_write_bytes(out, page.encode())
    log.info("report written to %s", out)
    return out
