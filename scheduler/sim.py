"""Discrete-event simulator: the live scheduler's policies and escalation rule on a virtual clock,
with batch latencies taken from the profile and answers (prediction, confidence) replayed from a
validation record. The gear planner uses it to find each cascade's p95 latency at a given rate;
``superserve simulate`` replays a trace with any policy, no Triton needed.

Same code paths as the engine: ``policy.decide`` on an EDF snapshot at now + margin, drops for
infeasible requests, ``escalation.escalate`` after every batch, previous answers as fallbacks.
What it leaves out: the network, Python's own overheads and latency variance (all of which the
live engine's latency scaling and reply margin absorb).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from .edf_queue import EDFQueue, Pending
from .escalation import escalate, threshold_for
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

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


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
    done_events: list = []  # (time, seq, worker, subnet, [jobs])
    seq, nxt = 0, 0

    def finish(job: _Job, subnet: str, t: float) -> None:
        o = out[job.index]
        o.done_ms = t
        if record is not None:
            o.correct = bool(record.correct(subnet)[requests[job.index].sample])

    def pump(now: float) -> None:
        nonlocal seq
        while len(queue) and free:
            decision = policy.decide(queue.snapshot(), now + cfg.margin_ms, profile, WorkerView(free[0], 0))
            for p in queue.remove(decision.drop):
                job = jobs.pop(p.id)
                if job.fallback is not None:
                    finish(job, job.fallback[0], now)
            if decision.batch is None:
                break
            taken = [jobs.pop(p.id) for p in queue.remove(decision.batch.requests)]
            rows = sum(j.pending.rows for j in taken)
            seq += 1
            heapq.heappush(done_events, (now + profile.get(decision.batch.subnet).at(rows), seq, free.pop(0),
                                         decision.batch.subnet, taken))

    def complete(now: float, worker: int, subnet: str, taken: list[_Job]) -> None:
        free.append(worker)
        free.sort()
        ran = profile.get(subnet)
        for job in taken:
            out[job.index].subnets.append(subnet)
            req = requests[job.index]
            conf = 1.0 if record is None else float(record.confidence(subnet, measure)[req.sample])
            threshold = threshold_for(job.pending, subnet, policy, cfg.default_min_confidence)
            step = escalate(job.pending, ran.accuracy, conf, threshold, now + cfg.margin_ms, policy, profile)
            if step is not None and len(queue) < queue.capacity:
                job.pending, job.fallback = step, (subnet, now)
                jobs[step.id] = job
                queue.push(step)
            else:
                finish(job, subnet, now)

    while nxt < len(order) or done_events:
        t_arr = requests[order[nxt]].arrival_ms if nxt < len(order) else math.inf
        if done_events and done_events[0][0] <= t_arr:
            now, _, worker, subnet, taken = heapq.heappop(done_events)
            complete(now, worker, subnet, taken)
        else:
            i, now = order[nxt], t_arr
            nxt += 1
            r = requests[i]
            p = Pending(i, now, now + r.slo_ms, r.min_accuracy, None, 1, r.min_confidence)
            if hasattr(policy, "on_arrival"):
                policy.on_arrival(now, 1)
            fastest = policy.fastest_ms(p, profile)
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
