"""Summarise `superserve bench` results over trace seeds: one row per (rate, noise, policy) with the mean
(and min) over seeds, then the issue-13 goals checked per (rate, noise), then SlackFit's headline numbers
against the fixed subnets the files hold (client/frontier.py; only the full frontier, ``triton-fixed:pareto``
or ``superserve bench-sweep``, makes them the issue-16 ratios; ``superserve report`` renders those).

    .venv/bin/python scripts/bench_table.py results/issue13/bench13-*.json
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np

from superserve.client import frontier


def load(paths):
    cells = defaultdict(lambda: defaultdict(list))  # (rate, noise) -> policy -> [summary per seed]
    for p in paths:
        r = json.load(open(p))
        if "policies" not in r:  # a saved trace, not a results file
            continue
        key = (r["rate_x"], r.get("noise", {}).get("fraction_of_core", 0.0))
        for pol, s in r["policies"].items():
            cells[key][pol].append(dict(s, seed=r["trace"]["seed"]))
        if "slackfit" in r["policies"] and any(p.startswith("triton-fixed:") for p in r["policies"]):
            HEADLINES[key].append(frontier.headline(r, "slackfit"))
    return cells


HEADLINES = defaultdict(list)  # (rate, noise) -> slackfit's frontier.headline per results file


def mean(xs, k):
    v = [x[k] for x in xs if x.get(k) is not None]
    return float(np.mean(v)) if v else float("nan")


def main(paths) -> int:
    cells = load(paths)
    print("| rate | noise | policy | seeds | attainment (mean, min) | served acc | real acc | p50 ms | p99 ms | "
          "batches over plan | Triton idle ms/batch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    goals = []
    for (rate, noise), pols in sorted(cells.items()):
        for pol, xs in pols.items():
            b = [x["batches"] for x in xs if x.get("batches")]
            over = f"{np.mean([y['over_plan_share'] for y in b]):.3f}" if b else ""
            idle_ms = [y["worker_idle_ms_per_batch"] for y in b if y["worker_idle_ms_per_batch"] is not None]
            idle = f"{np.mean(idle_ms):.1f}" if b else ""
            print(f"| {rate}x | {noise} | {pol} | {len(xs)} | {mean(xs, 'slo_attainment'):.4f}, "
                  f"{min(x['slo_attainment'] for x in xs):.4f} | {mean(xs, 'mean_served_accuracy'):.4f} | "
                  f"{mean(xs, 'real_accuracy'):.4f} | {mean(xs, 'p50_ms'):.1f} | {mean(xs, 'p99_ms'):.1f} | "
                  f"{over} | {idle} |")
        goals.append(check(rate, noise, pols))
    print()
    for g in goals:
        print(g)
    print()
    for (rate, noise), hs in sorted(HEADLINES.items()):
        agg = frontier.aggregate(hs)
        txt = "; ".join(f"{m} {_ms(agg[m])}" for m in ("gain_at_target", "real_gain_at_target",
                                                      "gain_at_equal_attainment", "attainment_ratio"))
        print(f"{rate}x noise {noise}: slackfit against the {min(h['fixed_runs'] for h in hs)}-"
              f"{max(h['fixed_runs'] for h in hs)} fixed subnets in the files: {txt}")
    return 0


def _ms(m) -> str:
    if not m["n"]:
        return "n/a"
    sd = f" ± {m['sd']:.4f}" if m["sd"] is not None else ""
    return f"{m['mean']:+.4f}{sd} ({m['n']}/{m['of']} seeds)"


def check(rate, noise, pols) -> str:
    sf = pols.get("slackfit")
    if not sf:
        return f"{rate}x noise {noise}: no slackfit run"
    att, real, served = mean(sf, "slo_attainment"), mean(sf, "real_accuracy"), mean(sf, "mean_served_accuracy")
    fixed = {p: xs for p, xs in pols.items() if p.startswith("triton-fixed")}
    ok99 = {p: xs for p, xs in fixed.items() if mean(xs, "slo_attainment") >= 0.99}
    out = [f"{rate}x noise {noise}: slackfit attainment {att:.4f}, real {real:.4f}, served {served:.4f}"]
    if ok99:
        best = max(ok99, key=lambda p: mean(ok99[p], "real_accuracy"))
        fa, fr = mean(ok99[best], "slo_attainment"), mean(ok99[best], "real_accuracy")
        out.append(f"best fixed reaching 0.99: {best} ({fa:.4f}, real {fr:.4f}): attainment gap "
                   f"{(fa - att) * 100:+.2f} points (goal <= 0.5), real accuracy {(real - fr) * 100:+.2f} points "
                   "(goal >= 2)")
    else:
        out.append("no fixed subnet reaches 0.99")
    if rate >= 1.5 and fixed:
        eq = min(fixed, key=lambda p: abs(mean(fixed[p], "mean_served_accuracy") - served))
        ea = mean(fixed[eq], "slo_attainment")
        out.append(f"fixed of nearest served accuracy {eq} ({mean(fixed[eq], 'mean_served_accuracy'):.4f}): "
                   f"attainment {ea:.4f}, slackfit/fixed {att / ea if ea else float('inf'):.2f}x (goal >= 2)")
    if rate <= 1.0:
        out.append(f"attainment >= 0.99: {'met' if att >= 0.99 else 'MISSED'}")
    return "; ".join(out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
