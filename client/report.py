"""Per-second series and PNG plots of a benchmark run (matplotlib, headless), and the frontier
drawing the sweep report shares (``draw_frontier``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from superserve.client import frontier
from superserve.client.loadgen import Record
from superserve.scheduler.core import policy_names

ADAPTIVE_STYLE = {"slackfit": ("tab:red", "*"), "cascade": ("tab:purple", "D"), "infaas": ("tab:orange", "s"),
                  "clipper": ("tab:brown", "v"), "slackfit-classic": ("tab:pink", "P"),
                  "slackfit+escalate": ("tab:olive", "X")}


def series(records: Sequence[Record], duration_s: float, window_s: float = 1.0) -> dict:
    """Per window of send time: requests sent, SLO attainment, mean served accuracy (in-time answers)."""
    n = max(1, int(np.ceil(duration_s / window_s)))
    sent, ok, acc = np.zeros(n), np.zeros(n), np.zeros(n)
    for r in records:
        i = min(n - 1, int(r.send_s / window_s))
        sent[i] += 1
        if r.outcome == "ok":
            ok[i] += 1
            acc[i] += r.accuracy or 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        att, served = ok / sent, acc / ok
    clean = lambda a: [None if not np.isfinite(v) else round(float(v), 4) for v in a]  # noqa: E731
    return {"window_s": window_s, "sent": sent.astype(int).tolist(), "attainment": clean(att),
            "served_accuracy": clean(served)}


def arrival_series(trace, window_s: float) -> list[float]:
    _, rates = trace.rates(window_s)
    return [round(float(r), 2) for r in rates]


def plots(result: dict, records: dict[str, Sequence[Record]], prefix: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pols = list(result["policies"])
    out = []
    # 1. attainment and served accuracy per policy
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    att = [result["policies"][p]["slo_attainment"] or 0 for p in pols]
    acc = [result["policies"][p]["mean_served_accuracy"] or 0 for p in pols]
    real = [result["policies"][p]["real_accuracy"] or 0 for p in pols]
    y = np.arange(len(pols))
    ax[0].barh(y, att, color="tab:blue")
    ax[0].set(yticks=y, yticklabels=pols, xlim=(0, 1), xlabel="SLO attainment")
    ax[1].barh(y - 0.2, acc, 0.4, label="served (profile)", color="tab:green")
    ax[1].barh(y + 0.2, real, 0.4, label="real, on labels, per request sent", color="tab:gray")
    ax[1].set(yticks=y, yticklabels=[], xlim=(0.5, 1), xlabel="accuracy")
    ax[1].legend(loc="lower right", fontsize=7)
    tr = result["trace"]
    fig.suptitle(f"{tr['kind']} trace, {tr['rate_rps']:.0f} req/s ({result['rate_x']}x capacity), slo_ms {result['slo_ms']}")
    fig.tight_layout()
    out.append(_save(fig, prefix, "summary"))
    # 2. arrival rate and served accuracy over time
    fig, ax = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    arr = result["arrivals_per_s"]
    ax[0].plot(np.arange(len(arr)), arr, color="black")
    ax[0].set(ylabel="arrivals / s")
    for p in pols:
        s = result["series"][p]
        t = np.arange(len(s["served_accuracy"])) * s["window_s"]
        ax[1].plot(t, [np.nan if v is None else v for v in s["served_accuracy"]], label=p, lw=1)
    ax[1].set(xlabel="time (s)", ylabel="served accuracy (in time)")
    ax[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out.append(_save(fig, prefix, "timeline"))
    # 3. latency CDF of answered requests
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for p in pols:
        lat = np.sort([r.latency_ms for r in records[p] if r.outcome in ("ok", "late")])
        if len(lat):
            ax.plot(lat, np.arange(1, len(lat) + 1) / len(records[p]), label=p, lw=1)
    ax.set(xscale="log", xlabel="latency (ms, client)", ylabel="share of requests sent answered within",
           ylim=(0, 1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.append(_save(fig, prefix, "latency_cdf"))
    # 4. the frontier of fixed baselines, adaptive policies as points
    fixed = frontier.fixed_points(result)
    if fixed:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        draw_frontier(ax, [{"name": p.name, "accuracy": p.accuracy, "attainment": p.attainment} for p in fixed],
                      {p: {"accuracy": result["policies"][p]["mean_served_accuracy"],
                           "attainment": result["policies"][p]["slo_attainment"]}
                       for p in pols if frontier.is_adaptive(p) and result["policies"][p]["mean_served_accuracy"]})
        ax.set_title(f"{tr['kind']}, {result['rate_x']}x capacity, slo_ms {result['slo_ms']}", fontsize=9)
        fig.tight_layout()
        out.append(_save(fig, prefix, "frontier"))
    return out


def draw_frontier(ax, fixed: list[dict], adaptive: dict[str, dict]) -> None:
    """Fixed subnets (``accuracy``, ``attainment``, optional ``min``/``max`` over seeds) as grey dots
    with the envelope through them, adaptive policies (optional ``acc_sd``/``att_sd``) as coloured
    markers; attainment against served accuracy, as in SuperServe's figures."""
    if fixed:
        acc = np.array([f["accuracy"] for f in fixed])
        att = np.array([f["attainment"] for f in fixed])
        lo = np.array([f.get("min", a) for f, a in zip(fixed, att)])
        hi = np.array([f.get("max", a) for f, a in zip(fixed, att)])
        ax.errorbar(acc, att, yerr=[att - lo, hi - att], fmt="o", color="grey", ms=4, lw=0.8, capsize=2,
                    label="Triton batcher, one fixed subnet each")
        env = frontier.envelope([frontier.Point(f["name"], f["accuracy"], f["attainment"]) for f in fixed])
        ax.plot([p.accuracy for p in env], [p.attainment for p in env], color="black", lw=1, label="fixed frontier")
    for name, a in adaptive.items():
        color, marker = ADAPTIVE_STYLE.get(policy_names.kind_of(name), ("tab:blue", "o"))
        ax.errorbar([a["accuracy"]], [a["attainment"]], xerr=a.get("acc_sd") or None, yerr=a.get("att_sd") or None,
                    fmt=marker, color=color, ms=9, capsize=2, label=name)
    ax.axhline(frontier.TARGET, color="grey", ls=":", lw=0.8)
    ax.set(xlabel="served accuracy (profile)", ylabel="SLO attainment (client)")
    ax.legend(fontsize=7, loc="lower left")


def _save(fig, prefix: Path, what: str) -> Path:
    import matplotlib.pyplot as plt

    path = Path(f"{prefix}-{what}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
