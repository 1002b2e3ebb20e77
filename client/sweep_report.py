"""``superserve report``: the sweep's summary table and plots, always regenerated from results files.

Reads every ``superserve bench`` results file in a folder (one per cell: trace seed, load, burstiness,
SLO, noise), groups the cells that differ only in their trace seed into a *point*, computes each
adaptive policy's headline numbers per seed against that seed's fixed frontier (client/frontier.py)
and their spread over seeds, and writes:

- ``<dir>/summary.json``: per point and policy, every metric's mean, sd, min, max and how many seeds
  defined it, the frontier (each fixed subnet's attainment over seeds), and a verdict;
- ``<dir>/frontier_per_load.png``, ``ratio_vs_load.png``, ``ratio_vs_burstiness.png`` and
  ``ratio_vs_slo_noise.png``;
- the table in README.md between ``<!-- sweep-summary:begin -->`` and ``<!-- sweep-summary:end -->``
  (never edit it by hand: rerun ``superserve report``).

Verdict per point (SlackFit's, or any adaptive policy's): **wins** when the attainment ratio at equal
accuracy is above 1 or the accuracy gain at equal attainment above 0 by more than their spread over
seeds (mean - sd), and neither is below by more than its spread; **loses** when one is below (mean +
sd < 1, resp. < 0) or the policy stays under every fixed subnet's attainment; **ties** otherwise.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from superserve.client import frontier
from superserve.scheduler import paths

BEGIN, END = "<!-- sweep-summary:begin -->", "<!-- sweep-summary:end -->"
MARGIN_ATT = 0.005
"""Differences in attainment ratio below half a point, and in accuracy below 0.1 point, count as a tie
even with a single seed (no spread to compare with)."""
MARGIN_ACC = 0.001


def load(folder: Path) -> list[dict]:
    out = []
    for p in sorted(Path(folder).glob("*.json")):
        if p.name.endswith((".trace.json", ".records.json")) or p.name in ("summary.json", "capacity.json"):
            continue
        try:
            r = json.loads(p.read_text())
        except ValueError:
            print(f"report: {p} does not parse (a run cut short?); skipped")
            continue
        if isinstance(r, dict) and "policies" in r:
            r["_file"] = p.name
            out.append(r)
    return out


def burst_label(r: dict) -> str:
    t = r["trace"]
    return f"cv{t['cv2']:g}" if t["kind"] == "bursty" else t["kind"]


def point_of(r: dict) -> tuple:
    """(trace, rate_x, slo, noise): the sweep's own labels if it wrote them, else from the file."""
    if "sweep" in r:
        return tuple(r["sweep"]["point"])
    return (burst_label(r), r["rate_x"], f"{r['slo_ms']}", r.get("noise", {}).get("fraction_of_core", 0.0))


def verdict(agg: dict) -> str:
    ratio, gain = agg["attainment_ratio"], agg["gain_at_equal_attainment"]
    if not gain["n"]:
        # The gain at equal attainment is undefined only where the policy is more punctual than every fixed subnet
        # that ran (frontier.accuracy_at): compare accuracy at the 0.99 target there instead.
        gain = agg["gain_at_target"]

    def above(m, ref, margin):
        return m["n"] and m["mean"] - (m["sd"] or 0) > ref + margin

    def below(m, ref, margin):
        return m["n"] and m["mean"] + (m["sd"] or 0) < ref - margin

    if below(ratio, 1, MARGIN_ATT) or below(gain, 0, MARGIN_ACC):
        return "loses"
    if above(ratio, 1, MARGIN_ATT) or above(gain, 0, MARGIN_ACC):
        return "wins"
    return "ties"


def summarize(results: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[point_of(r)].append(r)
    rows = []
    for point, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["trace"]["seed"])
        pols = sorted({p for r in rs for p in r["policies"] if frontier.is_adaptive(p)})
        fr = frontier.frontier_mean(rs)
        for pol in pols:
            per = [frontier.headline(r, pol) for r in rs if pol in r["policies"]]
            agg = frontier.aggregate(per)
            best = sorted({h["best_fixed_at_target"] for h in per if h["best_fixed_at_target"]})
            rows.append({"point": list(point), "policy": pol, "seeds": [r["trace"]["seed"] for r in rs
                                                                       if pol in r["policies"]],
                         "files": [r["_file"] for r in rs if pol in r["policies"]],
                         "commits": sorted({r["commit"][:12] for r in rs}),
                         "hardware": sorted({r["hardware"] for r in rs}), "slo_ms": rs[0]["slo_ms"],
                         "rate_rps": round(sum(r["trace"]["rate_rps"] for r in rs) / len(rs), 1),
                         "duration_s": rs[0]["trace"]["duration_s"],
                         "fixed_runs": [h["fixed_runs"] for h in per], "best_fixed_at_target": best,
                         "metrics": agg, "per_seed": per, "frontier": fr, "verdict": verdict(agg)})
    return sorted(rows, key=lambda x: (x["policy"] != "slackfit", x["policy"], _order(x["point"])))


def _order(point):
    trace, rate, slo, noise = point
    m = re.match(r"cv([\d.]+)", trace)
    return (0 if m else 1, float(m.group(1)) if m else 0, trace, rate, float(re.sub(r"[^\d.]", "", slo) or 0), noise)


def write_summary(folder: Path) -> Path:
    rows = summarize(load(folder))
    path = Path(folder) / "summary.json"
    path.write_text(json.dumps({"generated_by": "superserve report", "target": frontier.TARGET, "points": rows},
                               indent=1) + "\n")
    return path


def _pm(m: dict, nd: int = 3, scale: float = 1.0, signed: bool = False) -> str:
    if not m["n"]:
        return "n/a"
    f = f"{{:{'+' if signed else ''}.{nd}f}}"
    s = f.format(m["mean"] * scale)
    if m["sd"] is not None:
        s += f" ± {m['sd'] * scale:.{nd}f}"
    if m["n"] < m["of"]:
        s += f" ({m['n']}/{m['of']})"
    return s


def table(rows: list[dict]) -> str:
    """Markdown: one row per (point, adaptive policy); accuracy gains in points (x100)."""
    head = ("| trace | load | SLO | noise | policy | seeds | attainment | served acc | real acc | best fixed at 0.99 "
            "| acc gain at 0.99 (pts) | real gain (pts) | share of range | acc gain at equal attainment (pts) "
            "| attainment ratio at equal acc | fixed runs | verdict |")
    out = [head, "|" + "---|" * 17]
    for x in rows:
        m = x["metrics"]
        trace, rate, slo, noise = x["point"]
        slo_txt = f"{slo} ({float(x['slo_ms']):g} ms)" if str(slo).endswith("x") else f"{float(x['slo_ms']):g} ms"
        best = ", ".join(b.replace("triton-fixed:", "") for b in x["best_fixed_at_target"]) or "none"
        out.append(f"| {trace} | {rate:g}x | {slo_txt} | {noise:g} | {x['policy']} | {len(x['seeds'])} "
                   f"| {_pm(m['attainment'])} | {_pm(m['served_accuracy'], 4)} | {_pm(m['real_accuracy'], 4)} | {best} "
                   f"| {_pm(m['gain_at_target'], 2, 100, True)} | {_pm(m['real_gain_at_target'], 2, 100, True)} "
                   f"| {_pm(m['gain_at_target_share_of_range'], 2, 1, True)} "
                   f"| {_pm(m['gain_at_equal_attainment'], 2, 100, True)} | {_pm(m['attainment_ratio'], 3)} "
                   f"| {min(x['fixed_runs'])}-{max(x['fixed_runs'])} | **{x['verdict']}** |")
    return "\n".join(out)


def update_readme(readme: Path, text: str, source: str) -> bool:
    """Replace what is between the markers; False (README untouched) if they are missing."""
    body = readme.read_text()
    if BEGIN not in body or END not in body:
        return False
    head, rest = body.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    block = (f"{BEGIN}\n<!-- generated by `superserve report --results {source}`; do not edit by hand -->\n"
             f"{text}\n{END}")
    readme.write_text(head + block + tail)
    return True


def _series(rows, policy, vary: int, fixed_at: tuple):
    """(x labels, metric spreads) along axis ``vary`` with the others at ``fixed_at``."""
    pts = [x for x in rows
           if x["policy"] == policy and all(x["point"][i] == fixed_at[i] for i in range(4) if i != vary)]
    return sorted(pts, key=lambda x: _order(x["point"]))


def plots(rows: list[dict], folder: Path, policy: str = "slackfit") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from superserve.client.report import draw_frontier

    mine = [x for x in rows if x["policy"] == policy]
    if not mine:
        return []
    centre = centre_of([tuple(x["point"]) for x in mine])
    out = []
    # 1. the frontier at each load (other axes at the centre), every adaptive policy as a point
    loads = sorted({x["point"][1] for x in rows if _same(x["point"], centre, 1)})
    fig, axs = plt.subplots(1, len(loads), figsize=(4.6 * len(loads), 4), squeeze=False)
    for ax, load in zip(axs[0], loads):
        here = [x for x in rows if _same(x["point"], centre, 1) and x["point"][1] == load]
        fr = here[0]["frontier"] if here else []
        draw_frontier(ax, fr, {x["policy"]: {"accuracy": x["metrics"]["served_accuracy"]["mean"],
                                             "attainment": x["metrics"]["attainment"]["mean"],
                                             "acc_sd": x["metrics"]["served_accuracy"]["sd"],
                                             "att_sd": x["metrics"]["attainment"]["sd"]}
                               for x in here if x["metrics"]["served_accuracy"]["n"]})
        ax.set_title(f"{load:g}x capacity ({centre[0]}, slo {centre[2]}, noise {centre[3]:g})", fontsize=9)
    fig.tight_layout()
    out.append(_save(fig, folder / "frontier_per_load.png"))
    # 2.-4. the ratios along one axis at a time
    for name, axes in (("ratio_vs_load", (1,)), ("ratio_vs_burstiness", (0,)), ("ratio_vs_slo_noise", (2, 3))):
        fig, axs = plt.subplots(len(axes), 2, figsize=(10, 3.6 * len(axes)), squeeze=False)
        for row, vary in enumerate(axes):
            pts = _series(rows, policy, vary, centre)
            labels = [_label(x["point"][vary]) for x in pts]
            for col, (metric, ylabel, ref) in enumerate((
                    ("attainment_ratio", f"{policy} attainment / fixed frontier's\nat equal served accuracy", 1.0),
                    ("gain_at_equal_attainment", "served accuracy gain (points)\nat equal attainment", 0.0))):
                ax = axs[row][col]
                sc = 100 if metric.startswith("gain") else 1
                xs = [i for i, x in enumerate(pts) if x["metrics"][metric]["n"]]
                ax.errorbar(xs, [pts[i]["metrics"][metric]["mean"] * sc for i in xs],
                            yerr=[(pts[i]["metrics"][metric]["sd"] or 0) * sc for i in xs], fmt="o-", capsize=3)
                for i in xs:  # each seed
                    seeds = pts[i]["per_seed"]
                    ys = [(h[metric] or float("nan")) * sc for h in seeds]
                    ax.plot([i] * len(seeds), ys, ".", color="grey", ms=4)
                if metric == "gain_at_equal_attainment":
                    ys = [i for i, x in enumerate(pts) if x["metrics"]["gain_at_target"]["n"]]
                    ax.errorbar(ys, [pts[i]["metrics"]["gain_at_target"]["mean"] * 100 for i in ys],
                                yerr=[(pts[i]["metrics"]["gain_at_target"]["sd"] or 0) * 100 for i in ys],
                                fmt="s--", capsize=3, label="at 0.99 vs best fixed reaching 0.99")
                    if ys:
                        ax.legend(fontsize=7)
                ax.axhline(ref * sc if metric.startswith("gain") else ref, color="grey", ls=":", lw=0.8)
                ax.set(xticks=range(len(pts)), xticklabels=labels, ylabel=ylabel,
                       xlabel=("trace", "load (x capacity)", "SLO", "co-tenant noise (core)")[vary])
        fig.suptitle(f"{policy} against the frontier of fixed subnets; mean ± sd over seeds (grey: each seed); "
                     f"other axes at {centre}", fontsize=9)
        fig.tight_layout()
        out.append(_save(fig, folder / f"{name}.png"))
    return out


def centre_of(points: list[tuple]) -> tuple:
    """The point most others differ from in exactly one axis (a star design's centre; in a grid, the
    first such point), which the ratio plots vary one axis around."""
    def neighbours(p):
        return sum(sum(a != b for a, b in zip(p, q)) == 1 for q in points)
    return max(points, key=neighbours)


def _same(point, centre, except_axis: int) -> bool:
    return all(point[i] == centre[i] for i in range(4) if i != except_axis)


def _label(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(args) -> int:
    folder = Path(args.results) if args.results else paths.repo_root() / "results" / "sweep"
    results = load(folder)
    if not results:
        print(f"report: no results files in {folder}")
        return 1
    rows = summarize(results)
    path = write_summary(folder)
    text = table(rows)
    print(text)
    print(f"\nwrote {path}")
    for png in plots(rows, folder):
        print(f"plot {png}")
    if not args.no_readme:
        readme = Path(args.readme) if args.readme else paths.repo_root() / "README.md"
        try:
            source = str(folder.resolve().relative_to(paths.repo_root()))
        except ValueError:
            source = str(folder)
        if update_readme(readme, text, source):
            print(f"README table updated: {readme}")
        else:
            print(f"report: {readme} has no {BEGIN} ... {END} markers; table not written there")
    return 0


def add_parser(sub) -> None:
    r = sub.add_parser("report", help="the sweep's summary table (into README between markers) and plots, "
                       "regenerated from the results files")
    r.add_argument("--results", help="folder of superserve bench results files (default results/sweep/)")
    r.add_argument("--readme", help="file with the table markers (default README.md)")
    r.add_argument("--no-readme", action="store_true", help="print and plot only")
    r.set_defaults(func=main)
