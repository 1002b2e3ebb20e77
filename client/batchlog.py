"""The sidecar's per-batch log (``superserve serve --batch-log FILE``), summarised for bench results:
how far observed batch latency strays from what the policy planned, and how long the Triton
worker sat idle between batches while requests were waiting.

Idle time is estimated from the sidecar's side: Triton ran batch k+1 for ``infer_ms`` (measured in
the backend) and its answer arrived at ``done``, so it started about ``done - infer_ms``; the gap
from batch k's answer to that start is time Triton had nothing to run (the reply path of k and
the request path of k+1 cancel out to first order). Only gaps where the next batch's first
request had already arrived count (work was waiting): the rest is an idle worker at low load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def count(path: str | None) -> int:
    if not path or not Path(path).exists():
        return 0
    with open(path) as f:
        return sum(1 for _ in f)


def read(path: str | None, skip: int = 0) -> list[dict]:
    if not path or not Path(path).exists():
        return []
    with open(path) as f:
        return [json.loads(line) for i, line in enumerate(f) if i >= skip and line.strip()]


def _q(a, qs=(50, 90, 99)) -> dict:
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in qs} if len(a) else {}


def idle_gaps(batches: list[dict]) -> tuple[list[float], float]:
    """Triton idle time (ms) before each batch that had work waiting, per worker, and the time span
    those batches cover (ms)."""
    gaps, span = [], 0.0
    by_worker: dict[str, list[dict]] = {}
    for b in batches:
        by_worker.setdefault(b["worker"], []).append(b)
    for bs in by_worker.values():
        bs.sort(key=lambda b: b["done"])
        for prev, b in zip(bs, bs[1:]):
            if b["first_arrival"] > prev["done"] or b.get("infer_ms") is None:
                continue  # nothing was waiting when the previous batch ended
            gaps.append(max(0.0, b["done"] - b["infer_ms"] - prev["done"]))
            span += b["done"] - prev["done"]
    return gaps, span


def summarize(batches: list[dict]) -> dict:
    if not batches:
        return {}
    obs = np.array([b["done"] - b["started"] for b in batches])
    planned = np.array([b["planned_ms"] for b in batches])
    profiled = np.array([b["profiled_ms"] for b in batches])
    ratio = obs / planned
    gaps, span = idle_gaps(batches)
    slack = np.array([b["min_deadline"] - b["done"] for b in batches])
    return {"n": len(batches), "mean_rows": round(float(np.mean([b["rows"] for b in batches])), 2),
            "pipelined_share": round(float(np.mean([b["started"] > b["dispatched"] + 1e-6 for b in batches])), 3),
            "observed_over_planned": _q(ratio), "over_plan_share": round(float(np.mean(ratio > 1)), 4),
            "observed_over_profiled": _q(obs / profiled),
            "head_slack_left_ms": _q(slack, (1, 10, 50)),
            "worker_idle_ms_per_batch": round(float(np.mean(gaps)), 3) if gaps else None,
            "worker_idle_share": round(sum(gaps) / span, 4) if span else None,
            "final_factor": batches[-1].get("factor"),
            "factor": _q([b.get("factor") or 1.0 for b in batches], (1, 50, 99))}
