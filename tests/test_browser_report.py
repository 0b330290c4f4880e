"""The report rendered in a real headless browser (Debian's ``chromium``; `.ci/run` installs it).

A probe script is appended to a copy of the report; after load it records, into the DOM that
``chromium --headless --dump-dom`` prints: every element id, images that failed to load, the page's
horizontal overflow (scrollWidth - clientWidth) and elements wider than the viewport outside a
scroll box, and every table header text. Skips with a clear message when no browser is found.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from fbgpu.report import build_report
from fbgpu.report.claims import IC_CLAIMS
from fbgpu.report.html import EXHIBIT_NUMBERS

PROBE = """<script>
window.addEventListener('load', () => {
  const W = document.documentElement.clientWidth;
  const wide = [];
  for (const e of document.body.querySelectorAll('*')) {
    if (e.closest('.scroll') && !e.classList.contains('scroll')) continue;
    const r = e.getBoundingClientRect();
    if (r.right > W + 1) wide.push(e.tagName + '#' + e.id + '.' + e.className);
  }
  const out = {
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    broken: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    overflow: document.documentElement.scrollWidth - W,
    wide: wide,
    headers: [...document.querySelectorAll('th')].map(e => e.textContent),
    claims: document.getElementById('paper-vs-run') ?
      document.getElementById('paper-vs-run').parentElement.innerText : '',
  };
  const pre = document.createElement('pre');
  pre.id = 'probe-result';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if (p := shutil.which(name)) is not None:
            return p
    return None


def _store(root: Path) -> Path:
    """A store whose reports hold model exhibits (wide + long tables, figures) of a small run."""
    rng = np.random.default_rng(1)
    n = 30
    dates = pd.date_range("2022-01-03", periods=n, freq="7D").strftime("%Y-%m-%d")
    ev, md = root / "reports" / "evaluate", root / "reports" / "models"
    ev.mkdir(parents=True)
    md.mkdir(parents=True)
    cols = sorted({c for a, b, _ in IC_CLAIMS for c in (a, b)} - {"best single factor"})
    ic = pd.DataFrame({c: rng.normal(0.03, 0.08, n) for c in cols}, index=dates)
    ic.index.name = "date"
    ic.to_csv(md / "rank_ic.csv")
    table = pd.DataFrame({c: [0.05, 0.08] for c in ("RankIC mean", "RankIC std", "IC>0",
                                                    "TOP ann. excess", "TOP turnover")},
                         index=["HF deep-learning", "HF equal-weight"])
    table.to_csv(md / "exhibit45_hf.csv")  # unnamed index column, as exhibits.py writes it
    wide = pd.DataFrame(rng.normal(size=(80, 40)), columns=[f"column_{i:02d}" for i in range(40)])
    wide.to_csv(ev / "rebalances_wide.csv", index=False)
    fig, ax = plt.subplots(figsize=(14, 5))
    ax.plot(ic.cumsum().to_numpy())
    fig.savefig(md / "cumulative_rank_ic.png", dpi=100)
    plt.close(fig)
    # one output for every numbered exhibit (figures wide, tables as the steps write them)
    for (section, stem), _ in EXHIBIT_NUMBERS.items():
        d = root / "reports" / ("models" if section == "overview" else section)
        d.mkdir(parents=True, exist_ok=True)
        if stem.startswith(("nav_", "top_nav_", "cumulative_", "corr_heatmap_")):
            if not (d / f"{stem}.png").exists():
                shutil.copy(md / "cumulative_rank_ic.png", d / f"{stem}.png")
        elif not (d / f"{stem}.csv").exists():
            table.to_csv(d / f"{stem}.csv")
    return root


def test_report_renders_in_headless_browser(tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium on PATH: `.ci/run` installs Debian's chromium when it is root "
                    "with network; install it (apt-get install chromium) to run this test")
    out = build_report(_store(tmp_path / "store"))
    probe = out.with_name("report_probe.html")
    probe.write_text(out.read_text().replace("</body>", PROBE + "</body>"))
    r = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
         "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', r.stdout, re.S)
    assert m, f"browser printed no probe result (rc {r.returncode}): {r.stderr[-2000:]}"
    res = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&")
                     .replace("&lt;", "<").replace("&gt;", ">"))
    want = {f"exhibit-{n}" for n in EXHIBIT_NUMBERS.values()}
    assert want - set(res["ids"]) == set(), sorted(want - set(res["ids"]))
    assert {"paper-vs-run", "contents"} <= set(res["ids"])
    assert res["broken"] == [], res["broken"]
    assert res["overflow"] <= 0 and res["wide"] == [], res["wide"][:10]
    assert not any(h.startswith("Unnamed") for h in res["headers"])
    for a, b, _ in IC_CLAIMS:
        label = "best single factor" if b == "best single factor" else b
        if label != "best single factor":  # no single-factor step in this store
            assert f"{a} beats {label}" in res["claims"]
