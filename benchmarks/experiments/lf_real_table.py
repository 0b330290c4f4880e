"""Markdown table of ``lf_real.py`` results (the table in docs/models.md).

    python benchmarks/experiments/lf_real_table.py benchmarks/experiments/results/*.jsonl
"""

from __future__ import annotations

import json
import sys


def main(paths: list[str]) -> None:
    """Print one row per result line: name, RankIC, IC_IR, t, per-year RankIC, protocol."""
    print("| file | signal | weekly RankIC | IC_IR | t | 2020 | 2021 | 2022 | protocol |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in paths:
        with open(p) as fh:
            rows = [json.loads(line) for line in fh]
        for r in rows:
            y = r.get("by_year", {})
            proto = ("single window" if r.get("single_window") else
                     "yearly" if "kind" in r or "windows" in r else "")
            if "max_epochs" in r:
                proto += f", <= {r['max_epochs']} epochs, patience {r['patience']}"
            print(f"| {p.rsplit('/', 1)[-1]} | {r['name']} | {r['rank_ic']:+.2%} | "
                  f"{r['ic_ir']:.2f} | {r['t']:.1f} | "
                  + " | ".join(f"{y.get(k, float('nan')):+.2%}" for k in ("2020", "2021", "2022"))
                  + f" | {proto} |")


if __name__ == "__main__":
    main(sys.argv[1:])
