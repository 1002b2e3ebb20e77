"""``superserve plan``: offline cascade planning and gear plans (CascadeServe) for the supernet.

1. Enumerate cascades: 1-3 Pareto subnets in increasing accuracy, a confidence threshold per
   escalating stage from a discrete grid. On the *validation* record (never the test split) each
   cascade has an accuracy and a reach per stage (the share of requests that run it), so its
   expected cost per request at batch b is sum_k reach_k * latency_k(b) / b from the profile.
   Keep the cascades no other beats on both accuracy and cost (at batch 1 or at the largest batch).
2. Gear plan: split [0, peak rate] into ranges; for each, simulate (sim.py, the live policy code)
   Poisson arrivals at the range's upper rate and take the most accurate cascade and batch trigger
   whose simulated p95 latency meets the SLO without falling back off its stages. Rates no cascade
   can serve are reported as infeasible.
"""
from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from superserve.supernet.progress import Progress

from ..core.admission import DEFAULT_SLO_MS
from ..core.gears import Gear, GearPlan, Stage
from ..core.lifecycle import LifecycleConfig
from ..core.profile import Profile
from ..core.summary import summarize
from .sim import DROPPED_MS, SimConfig, SimRequest, simulate

if TYPE_CHECKING:
    from superserve.supernet.validation import ValidationRecord

log = logging.getLogger(__name__)
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99)


@dataclass(frozen=True)
class Cascade:
    stages: tuple[Stage, ...]
    accuracy: float
    """On the validation record."""
    reach: tuple[float, ...]
    """Share of requests that run each stage (reach[0] = 1)."""

    def cost_ms(self, profile: Profile, batch: int = 1) -> float:
        """Expected worker time per request when every stage runs at ``batch``."""
        return sum(r * profile.subnet(s.subnet).at(batch) / batch for r, s in zip(self.reach, self.stages))

    @property
    def name(self) -> str:
        return Gear(0, 0, self.stages, 1).name

    def as_dict(self, profile: Profile) -> dict[str, Any]:
        return {"stages": [{"subnet": s.subnet, "threshold": s.threshold} for s in self.stages],
                "accuracy": round(self.accuracy, 4), "reach": [round(r, 4) for r in self.reach],
                "cost_ms_b1": round(self.cost_ms(profile, 1), 3),
                "cost_ms_bmax": round(self.cost_ms(profile, profile.max_batch), 4)}


def enumerate_cascades(record: ValidationRecord, subnets: list[str], thresholds: Sequence[float] = THRESHOLDS,
                       max_stages: int = 3,
                       measure: str = "max_softmax") -> list[Cascade]:
    """Every cascade of 1..max_stages of ``subnets`` (least accurate first) with thresholds from the grid."""
    if not 1 <= max_stages <= 3:
        raise ValueError(f"max_stages must be 1, 2 or 3, got {max_stages}")
    T = np.asarray(sorted(round(float(t), 4) for t in thresholds))
    corr = {s: record.correct(s) for s in subnets}
    esc = {s: record.confidence(s, measure)[None, :] < T[:, None] for s in subnets}  # [T, N]
    out = [Cascade((Stage(s, None),), float(corr[s].mean()), (1.0,)) for s in subnets]
    for a, b in itertools.combinations(subnets, 2) if max_stages >= 2 else ():
        acc = np.where(esc[a], corr[b], corr[a]).mean(1)
        reach = esc[a].mean(1)
        out += [Cascade((Stage(a, float(t)), Stage(b, None)), float(acc[i]), (1.0, float(reach[i])))
                for i, t in enumerate(T)]
    for a, b, c in itertools.combinations(subnets, 3) if max_stages >= 3 else ():
        e1, e12 = esc[a][:, None, :], esc[a][:, None, :] & esc[b][None, :, :]  # [T1, T2, N]
        acc = np.where(e1, np.where(esc[b][None], corr[c], corr[b]), corr[a]).mean(-1)
        r1, r2 = esc[a].mean(1), e12.mean(-1)
        out += [Cascade((Stage(a, float(t1)), Stage(b, float(t2)), Stage(c, None)), float(acc[i, j]),
                        (1.0, float(r1[i]), float(r2[i, j])))
                for i, t1 in enumerate(T) for j, t2 in enumerate(T)]
    return out


def evaluate(c: Cascade, record: ValidationRecord, measure: str = "max_softmax") -> tuple[float, tuple[float, ...]]:
    """Accuracy and reach of one cascade on another record (e.g. the test split, for reporting)."""
    active = np.ones(len(record.labels), dtype=bool)
    correct = np.zeros(len(record.labels), dtype=bool)
    reach = []
    for s in c.stages:
        reach.append(float(active.mean()))
        stop = active if s.threshold is None else active & (record.confidence(s.subnet, measure) >= s.threshold)
        correct |= stop & record.correct(s.subnet)
        active &= ~stop
    return float(correct.mean()), tuple(reach)


def pareto(cascades: list[Cascade], profile: Profile) -> list[Cascade]:
    """Cascades not dominated in (accuracy, cost) at batch 1 or at the largest batch; most accurate first."""
    keep = set()
    for b in (1, profile.max_batch):
        best_acc = -1.0
        for i in sorted(range(len(cascades)), key=lambda i: (cascades[i].cost_ms(profile, b), -cascades[i].accuracy)):
            if cascades[i].accuracy > best_acc:
                best_acc = cascades[i].accuracy
                keep.add(i)
    return sorted((cascades[i] for i in keep), key=lambda c: (-c.accuracy, c.cost_ms(profile, 1)))


def peak_rps(profile: Profile, workers: int = 1) -> float:
    """The most any subnet can serve: the fastest subnet's best batch throughput."""
    return workers * max(b * 1000.0 / s.at(b) for s in profile.subnets for b in profile.batch_sizes)


@dataclass(frozen=True)
class PlanConfig:
    slo_ms: float = DEFAULT_SLO_MS
    """The latency target planned for: the one requests without their own get (core/admission.py)."""
    margin_ms: float = LifecycleConfig().margin_ms
    """As the live scheduler's reply margin (its default, LifecycleConfig's): the simulated batches must end this
    much before the deadline."""
    workers: int = 1
    n_gears: int = 8
    peak_rps: float | None = None
    """Default: peak_rps(profile)."""
    batch_triggers: tuple[int, ...] = (8, 16, 32, 64)
    quantile: float = 95.0
    max_fallback: float = 0.05
    """A cascade whose simulated requests leave its stages (deadline fallbacks) more often than this is not planned."""
    sim_seconds: float = 4.0
    max_sim_requests: int = 3000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.slo_ms <= self.margin_ms:
            raise ValueError(f"slo_ms ({self.slo_ms}) must exceed margin_ms ({self.margin_ms})")
        if self.n_gears < 1 or self.workers < 1:
            raise ValueError(f"n_gears and workers must be >= 1, got {self.n_gears}, {self.workers}")


def simulate_gear(c: Cascade, max_batch: int, rate_rps: float, profile: Profile, record: ValidationRecord,
                  cfg: PlanConfig, measure: str) -> dict[str, Any]:
    """One cascade held at one gear under Poisson arrivals at ``rate_rps``."""
    from ..policies.cascade import CascadePolicy

    rng = np.random.default_rng(cfg.seed)
    n = int(min(cfg.max_sim_requests, max(300, rate_rps * cfg.sim_seconds)))
    arrivals = np.cumsum(rng.exponential(1000.0 / max(rate_rps, 1e-9), n))
    samples = rng.integers(0, len(record.labels), n)
    reqs = [SimRequest(float(t), cfg.slo_ms, int(s)) for t, s in zip(arrivals, samples)]
    policy = CascadePolicy(GearPlan((Gear(0.0, float("inf"), c.stages, max_batch),), measure))
    outs = simulate(policy, profile, reqs, record, SimConfig(workers=cfg.workers, margin_ms=cfg.margin_ms))
    lat = np.array([min(o.latency_ms, DROPPED_MS) for o in outs])
    planned = {s.subnet for s in c.stages}
    off = sum(o.done_ms is not None and not set(o.subnets) <= planned for o in outs)
    s = summarize(outs)
    q = float(np.percentile(lat, cfg.quantile))
    return dict(s, quantile_ms=round(q, 3) if q < DROPPED_MS else None, fallback_share=round(off / n, 4))


def plan_gears(cascades: list[Cascade], profile: Profile, record: ValidationRecord, cfg: PlanConfig,
               measure: str = "max_softmax") -> tuple[list[dict[str, Any]], list[dict[str, Any]], float | None]:
    """Gears over [0, peak]: for each rate range the most accurate (cascade, batch trigger) that meets
    the SLO at the range's upper rate. Returns (gears, simulations run, first infeasible rate or None)."""
    peak = cfg.peak_rps or peak_rps(profile, cfg.workers)
    edges = [peak * (i + 1) / cfg.n_gears for i in range(cfg.n_gears)]
    gears: list[dict[str, Any]] = []
    sims: list[dict[str, Any]] = []
    start, lo = 0, 0.0
    budget_ms = cfg.slo_ms - cfg.margin_ms
    triggers = sorted({min(b, profile.max_batch) for b in cfg.batch_triggers}, reverse=True)
    bar = Progress(cfg.n_gears, "gear plan")
    for hi in edges:
        chosen = None
        for k in range(start, len(cascades)):
            c = cascades[k]
            for b in triggers:
                if hi * c.cost_ms(profile, b) / 1000 / cfg.workers >= 0.95:
                    continue  # over capacity even with full batches: no need to simulate
                r = simulate_gear(c, b, hi, profile, record, cfg, measure)
                sims.append({"rate_rps": round(hi, 1), "cascade": c.name, "max_batch": b, **r})
                if r["quantile_ms"] is not None and r["quantile_ms"] <= budget_ms and \
                        r["fallback_share"] <= cfg.max_fallback:
                    chosen = (k, c, b, r)
                    break
            if chosen:
                break
        bar.update(1, f"{hi:.0f} rps: " + (f"{chosen[1].name} b{chosen[2]}" if chosen else "infeasible"))
        if chosen is None:
            return gears, sims, round(hi, 1)
        start, (k, c, b, r) = chosen[0], chosen
        if gears and gears[-1]["_key"] == (k, b):
            gears[-1]["max_rps"] = round(hi, 1)
        else:
            gears.append({"_key": (k, b), "min_rps": round(lo, 1), "max_rps": round(hi, 1), **c.as_dict(profile),
                          "max_batch": b, "simulated": {x: r[x] for x in ("slo_attainment", "real_accuracy",
                                                                        "quantile_ms", "fallback_share")}})
        lo = hi
    return gears, sims, None


def report(cascades: list[Cascade], profile: Profile, test_record: ValidationRecord | None = None,
           measure: str = "max_softmax") -> dict[str, Any]:
    """The best cascade against the single largest subnet at equal (no higher) mean cost, and the
    cheapest cascade at least as accurate, at batch 1 and the largest batch."""
    largest = next(c for c in cascades if len(c.stages) == 1 and c.stages[0].subnet == profile.subnets[-1].name)
    out: dict[str, Any] = {"largest": dict(largest.as_dict(profile), name=largest.name)}
    if test_record is not None:
        out["largest"]["test_accuracy"] = round(evaluate(largest, test_record, measure)[0], 4)
    for b in (1, profile.max_batch):
        budget = largest.cost_ms(profile, b)
        best = max((c for c in cascades if c.cost_ms(profile, b) <= budget),
                   key=lambda c: (c.accuracy, -c.cost_ms(profile, b)))
        cheap = min((c for c in cascades if c.accuracy >= largest.accuracy), key=lambda c: c.cost_ms(profile, b))
        entry = {"best_at_equal_cost": dict(best.as_dict(profile), name=best.name),
                 "cheapest_as_accurate": dict(cheap.as_dict(profile), name=cheap.name,
                                              cost_ratio=round(cheap.cost_ms(profile, b) / budget, 3))}
        if test_record is not None:
            for key, c in (("best_at_equal_cost", best), ("cheapest_as_accurate", cheap)):
                entry[key]["test_accuracy"] = round(evaluate(c, test_record, measure)[0], 4)
        out[f"batch_{b}"] = entry
    return out


def build_plan(profile: Profile, record: ValidationRecord, cfg: PlanConfig, thresholds: Sequence[float] = THRESHOLDS,
               max_stages: int = 3, measure: str = "max_softmax", test_record: ValidationRecord | None = None,
               command: str = "") -> dict[str, Any]:
    subnets = [s.name for s in profile.subnets if s.name in record.subnets]
    missing = [s.name for s in profile.subnets if s.name not in record.subnets]
    if missing:
        log.warning("no validation record for %s; planning without them", missing)
    t0 = time.perf_counter()
    every = enumerate_cascades(record, subnets, thresholds, max_stages, measure)
    front = pareto(every, profile)
    log.info("%d cascades enumerated, %d on the Pareto front (%.1f s)", len(every), len(front),
             time.perf_counter() - t0)
    gears, sims, infeasible = plan_gears(front, profile, record, cfg, measure)
    for g in gears:
        g.pop("_key")
    plan = {"command": command, "hardware": profile.hardware, "supernet": profile.supernet,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "measure": measure,
            "slo_ms": cfg.slo_ms, "margin_ms": cfg.margin_ms, "workers": cfg.workers,
            "peak_rps": round(cfg.peak_rps or peak_rps(profile, cfg.workers), 1), "quantile": cfg.quantile,
            "thresholds": list(thresholds), "cascades_enumerated": len(every),
            "reference": {"subnet": profile.subnets[-1].name, "batch": profile.max_batch,
                          "latency_ms": profile.subnets[-1].at(profile.max_batch)},
            "infeasible_above_rps": infeasible, "gears": gears,
            "report": report(every, profile, test_record, measure),
            "pareto": [c.as_dict(profile) for c in front], "simulations": sims}
    if gears:
        GearPlan.from_dict(plan)  # what the cascade policy will load must be valid
    return plan


def write_plan(plan: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan, indent=1) + "\n")
    return path
