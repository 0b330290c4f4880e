"""Markdown tables of ``lf_real.py`` / ``hf_synth.py`` results (the tables in docs/models.md).

    cd benchmarks/experiments
    python lf_real_table.py results/lf_real.jsonl results/lf_real_screen.jsonl
    python lf_real_table.py --seeds results/lf_real_3seeds.jsonl results/lf_real_history2010.jsonl
    python lf_real_table.py --hf results/hf_synth.jsonl
    python lf_real_table.py --vs "gru_logdiff (lf_real_3seeds)" results/lf_real_3seeds.jsonl \
        results/lf_real_suspects.jsonl

Default: one row per result line. ``--seeds``: one row per GRU experiment (its seeds' RankICs,
their mean and spread, the ensemble's RankIC/IC_IR/t/years, its correlation with the 20-day low
volatility and the RankIC of the equal blend of both). ``--hf``: the HF learners per tag.
``--vs BASE``: one row per experiment of the suspects table (docs/models.md): its per-seed
RankICs beside those of experiment ``BASE`` ("name (file)", as the rows are labelled) on the same
seeds, and the mean same-seed difference ``mean_s (IC_exp,s - IC_BASE,s)`` (percentage points)
with the number of seeds behind it.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any

YEARS = ("2020", "2021", "2022")


def _load(paths: list[str]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for p in paths:
        with open(p) as fh:
            out += [(p.rsplit("/", 1)[-1], json.loads(line)) for line in fh if line.strip()]
    return out


def rows_table(paths: list[str]) -> None:
    """One row per result line: name, RankIC, IC_IR, t, per-year RankIC, protocol."""
    print("| file | signal | weekly RankIC | IC_IR | t | 2020 | 2021 | 2022 | protocol |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f, r in _load(paths):
        y = r.get("by_year", {})
        proto = ("single window" if r.get("single_window") else
                 "yearly" if "kind" in r or "windows" in r else "")
        if "max_epochs" in r:
            proto += f", <= {r['max_epochs']} epochs, patience {r['patience']}"
        print(f"| {f} | {r['name']} | {r['rank_ic']:+.2%} | {r['ic_ir']:.2f} | {r['t']:.1f} | "
              + " | ".join(f"{y.get(k, float('nan')):+.2%}" for k in YEARS) + f" | {proto} |")


def seeds_table(paths: list[str]) -> None:
    """One row per GRU experiment: per-seed RankICs, spread, ensemble, overlap with low vol."""
    seeds: dict[str, list[float]] = defaultdict(list)
    ens: dict[str, dict[str, Any]] = {}
    last: dict[str, dict[str, Any]] = {}
    for f, r in _load(paths):
        exp = f"{r.get('exp', r['name'])} ({f.removesuffix('.jsonl')})"
        if r["name"].endswith("/ensemble"):
            ens[exp] = r
        elif "seed" in r:
            seeds[exp].append(r["rank_ic"])
            last[exp] = r
    print("| experiment | model | seeds | per-seed RankIC | seed mean (min..max) | ensemble "
          "RankIC | IC_IR | t | 2020 | 2021 | 2022 | corr. low_vol20 | blend with low_vol20 |"
          " best epochs | minutes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for exp in dict.fromkeys([*ens, *seeds]):
        s = seeds[exp]
        # a run stopped after its first seed has no ensemble record: show the seed's
        r = ens.get(exp) or {"rank_ic": s[0], **last[exp]}
        y = r.get("by_year", {})
        corr = r.get("corr_trivial", {}).get("low_vol20")
        blend = r.get("blend_low_vol20_rank_ic")
        epochs = sorted({e for w in r.get("windows", []) for e in w["best_epoch"]})
        spread = f"{sum(s) / len(s):+.2%} ({min(s):+.2%}..{max(s):+.2%})" if s else ""
        print(f"| {exp} | {r.get('kind', '')} | {len(s) or r.get('n_seeds', '')} | "
              + " / ".join(f"{v:+.2%}" for v in s)
              + f" | {spread} | "
              f"{r['rank_ic']:+.2%} | {r['ic_ir']:.2f} | {r['t']:.1f} | "
              + " | ".join(f"{y.get(k, float('nan')):+.2%}" for k in YEARS)
              + f" | {'' if corr is None else f'{corr:.2f}'} | "
              f"{'' if blend is None else f'{blend:+.2%}'} | {epochs} | "
              f"{r.get('seconds', float('nan')) / 60:.0f} |")


def vs_table(base: str, paths: list[str]) -> None:
    """Per experiment: its seeds' RankICs vs ``base``'s on the same seeds, mean difference."""
    per: dict[str, dict[int, float]] = defaultdict(dict)
    epochs: dict[str, dict[int, list[int]]] = defaultdict(dict)
    for f, r in _load(paths):
        exp = f"{r.get('exp', r['name'])} ({f.removesuffix('.jsonl')})"
        if "seed" in r and not r["name"].endswith("/ensemble"):
            per[exp][r["seed"]] = r["rank_ic"]
        for w in r.get("windows", []) if r["name"].endswith("/ensemble") else []:
            epochs[exp][w["seed"]] = w["best_epoch"]
    if base not in per:
        raise SystemExit(f"--vs {base!r}: no such experiment; have {sorted(per)}")
    ref = per[base]
    print(f"| experiment | seeds | RankIC per seed | {base} same seeds | mean difference "
          "(points) | best epochs |")
    print("|---|---|---|---|---|---|")
    for exp, ics in per.items():
        seeds = sorted(ics)
        both = [s for s in seeds if s in ref]
        diff = (f"{sum(ics[s] - ref[s] for s in both) / len(both) * 100:+.2f} ({len(both)})"
                if both and exp != base else "")
        ep = ", ".join(str(epochs[exp].get(s, "?")) for s in seeds)
        print(f"| {exp} | {', '.join(map(str, seeds))} | "
              + " / ".join(f"{ics[s]:+.2%}" for s in seeds) + " | "
              + " / ".join(f"{ref[s]:+.2%}" for s in both) + f" | {diff} | {ep} |")


def hf_table(paths: list[str]) -> None:
    """HF learners per tag: per-seed RankICs and the ensemble, vs the composites."""
    by: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"seeds": []})
    for _, r in _load(paths):
        learner = r["name"].split("/")[0]
        e = by[(r.get("tag", ""), learner)]
        if r["name"].endswith("/ensemble") or r.get("kind") == "composite":
            e["ens"] = r
        else:
            e["seeds"].append(r["rank_ic"])
    print("| settings | learner | per-seed RankIC | ensemble RankIC | IC_IR | t | best epochs |")
    print("|---|---|---|---|---|---|---|")
    for (tag, learner), e in by.items():
        r = e.get("ens")
        if r is None:
            continue
        epochs = sorted({w["best_epoch"] for w in r.get("windows", [])})
        print(f"| {tag} | {learner} | " + " / ".join(f"{v:+.2%}" for v in e["seeds"])
              + f" | {r['rank_ic']:+.2%} | {r['ic_ir']:.2f} | {r['t']:.1f} | {epochs} |")


def main(argv: list[str]) -> None:
    """``[--seeds | --hf | --vs BASE] FILE...``."""
    if argv and argv[0] == "--vs":
        vs_table(argv[1], argv[2:])
    elif argv and argv[0] == "--seeds":
        seeds_table(argv[1:])
    elif argv and argv[0] == "--hf":
        hf_table(argv[1:])
    else:
        rows_table(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
