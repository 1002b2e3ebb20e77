"""Discrete-event simulator: the live scheduler's policies and escalation rule on a virtual clock,
with batch latencies taken from the profile and answers (prediction, confidence) replayed from a
validation record. The gear planner uses it to find each cascade's p95 latency at a given rate;
``superserve simulate`` replays a trace with any policy, no Triton needed.

Same code paths as the engine: ``policy.decide`` on an EDF snapshot at now + margin, drops for
infeasible requests, ``escalation.escalate`` after every batch, previous answers as fallbacks.
With ``SimConfig.latency`` the policy plans, as the engine does, with the latency model's view
(latency_model.py) fed with every simulated batch; ``slowdown`` and ``jitter_sigma`` then make the
simulated machine differ from the profile (a co-tenant, variance), seeded. What it leaves out: the
network and Python's own overheads (which the live engine's reply margin absorbs).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .edf_queue import EDFQueue, Pending
from .escalation import escalate, threshold_for
from .latency_model import LatencyModel, LatencyModelConfig, ScaledProfiles
from .policies.base import WorkerView
from .profile import Profile


DROPPED_MS = 1e12
"""Latency a dropped request counts as in percentiles (reported as None)."""


@dataclass(frozen=True)
class SimRequest:
    arrival_ms: float
    slo_ms: float
    sample: int = 0
    """Index of the image in the validation record whose answers this request replays."""
    min_accuracy: float = 0.0
    min_confidence: float | None = None


@dataclass
class SimOutcome:
    arrival_ms: float
    deadline_ms: float
    subnets: list[str] = field(default_factory=list)
    done_ms: float | None = None
    """None: dropped (no subnet could serve it in time)."""
    correct: bool | None = None

    @property
    def outcome(self) -> str:
        if self.done_ms is None:
            return "dropped"
        return "ok" if self.done_ms <= self.deadline_ms else "late"

    @property
    def latency_ms(self) -> float:
        return math.inf if self.done_ms is None else self.done_ms - self.arrival_ms


@dataclass(frozen=True)
class SimConfig:
    workers: int = 1
    margin_ms: float = 0.0
    """As the engine's: policies plan as if it were this much later."""
    default_min_confidence: float | None = None
    queue_capacity: int = 100_000
    latency: LatencyModelConfig | None = None
    """Plan with the latency model's view, as the engine does (None: with the profile as it is)."""
    slowdown: Callable[[float], float] | None = None
    """The simulated machine: batch latency is the profile's times ``slowdown(now_ms)`` ..."""
    jitter_sigma: float = 0.0
    """... times a lognormal(0, sigma) draw per batch (seeded by ``seed``)."""
    seed: int = 0

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.jitter_sigma < 0:
            raise ValueError(f"jitter_sigma must be >= 0, got {self.jitter_sigma}")


@dataclass
class _Job:
    index: int
    pending: Pending
    fallback: tuple[str, float] | None = None
    """(subnet, time) of the answer an escalated request already has."""


def simulate(policy, profile: Profile, requests: list[SimRequest], record=None,
             cfg: SimConfig = SimConfig()) -> list[SimOutcome]:
    """Outcomes in the order of ``requests``. ``record`` (supernet.validation.ValidationRecord)
    supplies confidences and correctness; without it no answer escalates and correctness is None."""
    measure = getattr(policy, "confidence_measure", "max_softmax")
    order = sorted(range(len(requests)), key=lambda i: requests[i].arrival_ms)
    out = [SimOutcome(r.arrival_ms, r.arrival_ms + r.slo_ms) for r in requests]
    queue, jobs, free = EDFQueue(cfg.queue_capacity), {}, list(range(cfg.workers))
    done_events: list = []  # (time, seq, worker, subnet, [jobs], latency_ms, rows)
    seq, nxt = 0, 0
    model = LatencyModel(profile.batch_sizes, cfg.latency) if cfg.latency else None
    views, rng = ScaledProfiles(profile), np.random.default_rng(cfg.seed)
    view = profile  # what the policy plans with

    def batch_ms(subnet: str, rows: int, now: float) -> float:
        ms = profile.get(subnet).at(rows) * (cfg.slowdown(now) if cfg.slowdown else 1.0)
        return ms * float(rng.lognormal(0.0, cfg.jitter_sigma)) if cfg.jitter_sigma else ms

    def finish(job: _Job, subnet: str, t: float) -> None:
        o = out[job.index]
        o.done_ms = t
        if record is not None:
            o.correct = bool(record.correct(subnet)[requests[job.index].sample])

    def pump(now: float) -> None:
        nonlocal seq
        while len(queue) and free:
            decision = policy.decide(queue.snapshot(), now + cfg.margin_ms, view, WorkerView(free[0], 0))
            for p in queue.remove(decision.drop):
                job = jobs.pop(p.id)
                if job.fallback is not None:
                    finish(job, job.fallback[0], now)
            if decision.batch is None:
                break
            taken = [jobs.pop(p.id) for p in queue.remove(decision.batch.requests)]
            rows = sum(j.pending.rows for j in taken)
            seq += 1
            ms = batch_ms(decision.batch.subnet, rows, now)
            heapq.heappush(done_events, (now + ms, seq, free.pop(0), decision.batch.subnet, taken, ms, rows))

    def complete(now: float, worker: int, subnet: str, taken: list[_Job], ms: float, rows: int) -> None:
        nonlocal view
        free.append(worker)
        free.sort()
        ran = profile.get(subnet)
        if model is not None:
            model.observe(rows, ms, ran.at(rows))
            view = views.get(model.factors())
        for job in taken:
            out[job.index].subnets.append(subnet)
            req = requests[job.index]
            conf = 1.0 if record is None else float(record.confidence(subnet, measure)[req.sample])
            threshold = threshold_for(job.pending, subnet, policy, cfg.default_min_confidence)
            step = escalate(job.pending, ran.accuracy, conf, threshold, now + cfg.margin_ms, policy, view)
            if step is not None and len(queue) < queue.capacity:
                job.pending, job.fallback = step, (subnet, now)
                jobs[step.id] = job
                queue.push(step)
            else:
                finish(job, subnet, now)

    while nxt < len(order) or done_events:
        t_arr = requests[order[nxt]].arrival_ms if nxt < len(order) else math.inf
        if done_events and done_events[0][0] <= t_arr:
            now, _, worker, subnet, taken, ms, rows = heapq.heappop(done_events)
            complete(now, worker, subnet, taken, ms, rows)
        else:
            i, now = order[nxt], t_arr
            nxt += 1
            r = requests[i]
            p = Pending(i, now, now + r.slo_ms, r.min_accuracy, None, 1, r.min_confidence)
            if hasattr(policy, "on_arrival"):
                policy.on_arrival(now, 1)
            fastest = policy.fastest_ms(p, view)
            if fastest is None or r.slo_ms - cfg.margin_ms < fastest or len(queue) >= queue.capacity:
                continue  # refused at admission: counted as dropped
            jobs[i] = _Job(i, p)
            queue.push(p)
        pump(now)
    return out


def summarize(outcomes: list[SimOutcome], profile: Profile) -> dict:
    """SLO attainment, served and real accuracy, latency percentiles (drops count as infinite)."""
    n = len(outcomes)
    ok = [o for o in outcomes if o.outcome == "ok"]
    lat = np.array([min(o.latency_ms, DROPPED_MS) for o in outcomes]) if n else np.array([0.0])
    acc = {s.name: s.accuracy for s in profile.subnets}
    known = [o for o in outcomes if o.correct is not None]

    def pct(q):
        v = float(np.percentile(lat, q))
        return round(v, 3) if v < DROPPED_MS else None

    return {"requests": n, "slo_attainment": round(len(ok) / n, 4) if n else None,
            "mean_served_accuracy": round(float(np.mean([acc[o.subnets[-1]] for o in ok])), 4) if ok else None,
            "real_accuracy": round(sum(bool(o.correct) and o.outcome == "ok" for o in known) / len(known), 4)
            if known else None,
            "dropped": sum(o.outcome == "dropped" for o in outcomes), "late": sum(o.outcome == "late" for o in outcomes),
            "escalated": sum(len(o.subnets) > 1 for o in outcomes),
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99)}
