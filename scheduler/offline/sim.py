"""Discrete-event simulator: the live scheduler's request life cycle (core/lifecycle.py) on a virtual clock,
with batch latencies taken from the profile and answers (prediction, confidence) replayed from a
validation record. The gear planner uses it to find each cascade's p95 latency at a given rate;
``superserve simulate`` replays a trace with any policy, no Triton needed.

Same code as the engine, not a copy of it: admission (with shedding), the policy's decisions and drops,
the deadline sweep, pipelining, escalation and fallbacks, Clipper's feedback, the latency model all run
in ``Lifecycle``; this module keeps only the event heap (arrivals, batch ends, the two timers) and the
simulated workers, each running its batches one after another. With ``SimConfig.latency`` the policy
plans, as the engine does, with the latency model's view fed with every simulated batch; ``slowdown``
and ``jitter_sigma`` then make the simulated machine differ from the profile (a co-tenant, variance),
seeded. What it leaves out: the network and Python's own overheads (which the live engine's reply
margin absorbs), and worker failures.

Several models (``models``: lifecycle.ModelSpec each, ``SimRequest.model`` naming one) share the one queue and
the simulated workers as they do in the live engine; each batch takes its model's profiled latency, and
``record`` may then be a {model: ValidationRecord} mapping.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..core.errors import ServeError
from ..core.health import HealthConfig
from ..core.latency_model import LatencyModelConfig
from ..core.lifecycle import Dispatch, Lifecycle, LifecycleConfig, ModelSpec, Resolution, Step
from ..core.profile import Profile
from ..core.roster import Roster
from ..policies.base import Policy

DROPPED_MS = 1e12
"""Latency an unanswered request counts as where a quantile over every request is taken (the planner)."""


@dataclass(frozen=True)
class SimRequest:
    arrival_ms: float
    slo_ms: float
    sample: int = 0
    """Index of the image in the validation record whose answers this request replays."""
    min_accuracy: float = 0.0
    min_confidence: float | None = None
    model: str | None = None
    """The served model it asks (None: the default, the first of ``models``)."""


@dataclass
class SimOutcome:
    """One request's fate, with the fields ``summary.summarize`` reads (as loadgen.Record has them)."""
    arrival_ms: float
    deadline_ms: float
    subnets: list[str] = field(default_factory=list)
    """Every subnet that ran it, in order."""
    done_ms: float | None = None
    """None: refused or dropped (``error`` says which)."""
    subnet: str | None = None
    """The subnet whose answer it got (an escalated request's fallback is an earlier stage)."""
    accuracy: float | None = None
    """That subnet's profiled accuracy."""
    correct: bool | None = None
    error: str | None = None
    """The ServeError class that refused or dropped it."""
    lag_ms = None
    """No send lag on a virtual clock."""

    @property
    def outcome(self) -> str:
        if self.done_ms is None:
            return {"Overloaded": "rejected", "DeadlineInfeasible": "dropped", None: "dropped"}.get(self.error, "error")
        return "ok" if self.done_ms <= self.deadline_ms else "late"

    @property
    def latency_ms(self) -> float:
        return math.inf if self.done_ms is None else self.done_ms - self.arrival_ms

    @property
    def escalations(self) -> int:
        return max(0, len(self.subnets) - 1)


_LIFECYCLE = LifecycleConfig()
"""The request life cycle's defaults (core/lifecycle.py): the simulator's, but for the three it sets apart below."""


@dataclass(frozen=True)
class SimConfig:
    """The simulated machine, and the life cycle's settings it runs with. Those take LifecycleConfig's defaults
    (the engine's), except ``margin_ms``, ``queue_capacity`` and ``latency``, which differ on purpose (said at each).
    ``superserve simulate`` plans with ``serve``'s margin and latency model (client/simulate.py: ``sim_config``);
    only its queue stays the simulator's."""

    workers: int = 1
    margin_ms: float = 0.0
    """As the engine's: policies plan as if it were this much later. 0, not the engine's margin, on purpose: a
    simulated answer is ready the moment its batch ends (no reply path, no client event loop, which the engine's
    margin is for), and the cascade planner (offline/planner.py) passes its own."""
    default_min_confidence: float | None = _LIFECYCLE.default_min_confidence
    queue_capacity: int = 100_000
    """Larger than the engine's on purpose: a simulation (the planner's rate sweeps, a trace replayed at any
    rate) measures the policy's own drops, not refusals of a queue sized for one server's memory."""
    latency: LatencyModelConfig | None = None
    """Plan with the latency model's view, as the engine does (None: with the profile as it is). None by default,
    unlike the engine, on purpose: the default simulated machine runs exactly the profile (no ``slowdown``,
    jitter or stalls), so there is nothing to learn; ``superserve simulate`` turns it on as serve has it."""
    latency_kind: str = _LIFECYCLE.latency_kind
    """Which latency model (core/latency_view.py KINDS), as the engine's ``latency_model``."""
    slowdown: Callable[[float], float] | None = None
    """The simulated machine: batch latency is the profile's times ``slowdown(start_ms)`` ..."""
    jitter_sigma: float = 0.0
    """... times a lognormal(0, sigma) draw per batch (seeded by ``seed``) ..."""
    call_ms: float = 0.0
    """... plus this much per call (what the profile does not see: the hop, the reply path) ..."""
    stall_share: float = 0.0
    stall_ms: float = 0.0
    """... plus, in a share ``stall_share`` of batches, a stall of exponential(``stall_ms``) ms (a shared host
    descheduling the worker): additive, the same for a short batch as for a long one."""
    seed: int = 0
    pipeline: bool = _LIFECYCLE.pipeline
    pipeline_lead_ms: float = _LIFECYCLE.pipeline_lead_ms
    pipeline_min_rows: int = _LIFECYCLE.pipeline_min_rows
    admission_shedding: bool = _LIFECYCLE.admission_shedding
    shed_drain: str = _LIFECYCLE.shed_drain
    shed_peak_fraction: float = _LIFECYCLE.shed_peak_fraction
    """As EngineConfig's (all from LifecycleConfig)."""

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.jitter_sigma < 0 or self.call_ms < 0 or self.stall_ms < 0 or not 0 <= self.stall_share <= 1:
            raise ValueError(f"need jitter_sigma, call_ms, stall_ms >= 0 and stall_share in [0, 1]; got "
                             f"{self.jitter_sigma}, {self.call_ms}, {self.stall_ms}, {self.stall_share}")

    def lifecycle(self) -> LifecycleConfig:
        return LifecycleConfig(
            margin_ms=self.margin_ms, queue_capacity=self.queue_capacity, latency=self.latency,
            latency_kind=self.latency_kind,
            pipeline=self.pipeline, pipeline_lead_ms=self.pipeline_lead_ms, pipeline_min_rows=self.pipeline_min_rows,
            default_min_confidence=self.default_min_confidence, admission_shedding=self.admission_shedding,
            shed_drain=self.shed_drain, shed_peak_fraction=self.shed_peak_fraction, health=HealthConfig())


@dataclass(frozen=True)
class SimBatch:
    """A batch as the simulator sent it (for tests and traces)."""
    at_ms: float
    worker: int
    subnet: str
    requests: tuple[int, ...]
    """Indices into the simulated requests."""
    model: str | None = None
    """The served model of every request of the batch."""


_DONE, _SWEEP, _PIPE = 0, 1, 2


def simulate(policy: Policy | None, profile: Profile | None, requests: list[SimRequest], record=None,
             cfg: SimConfig = SimConfig(), batches: list | None = None,
             models: list[ModelSpec] | tuple[ModelSpec, ...] = ()) -> list[SimOutcome]:
    """Outcomes in the order of ``requests``. ``record`` (supernet.validation.ValidationRecord; with
    several ``models``, {model: record}) supplies confidences and correctness; without it no answer
    escalates and correctness is None. ``batches``, if given, receives a SimBatch per batch sent, in order."""
    order = sorted(range(len(requests)), key=lambda i: requests[i].arrival_ms)
    out = [SimOutcome(r.arrival_ms, r.arrival_ms + r.slo_ms) for r in requests]
    roster = Roster()
    for k in range(cfg.workers):
        roster.add(k, f"sim-{k}")
    lc = Lifecycle(cfg.lifecycle(), profile, policy, roster, models=models)
    records = record if isinstance(record, dict) else {lc.default.name: record}
    rng = np.random.default_rng(cfg.seed)
    busy_until = [-math.inf] * cfg.workers
    events: list = []  # (time, seq, kind, payload): batch ends and the two timers
    seq, tokens = 0, {_SWEEP: 0, _PIPE: 0}

    def push(t: float, kind: int, payload) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, payload))

    def batch_ms(model: str | None, subnet: str, rows: int, start: float) -> float:
        ms = lc.served(model).base_profile.get(subnet).at(rows) * (cfg.slowdown(start) if cfg.slowdown else 1.0)
        ms = ms * float(rng.lognormal(0.0, cfg.jitter_sigma)) if cfg.jitter_sigma else ms
        if cfg.stall_share and rng.random() < cfg.stall_share:
            ms += float(rng.exponential(cfg.stall_ms))
        return ms + cfg.call_ms

    def record_of(i: int):
        return records.get(lc.served(requests[i].model).name)

    def confidence(value, measure: str) -> float:
        subnet, i = value
        rec = record_of(i)
        return 1.0 if rec is None else float(rec.confidence(subnet, measure)[requests[i].sample])

    def resolve(resolved: list[Resolution]) -> None:
        for r in resolved:
            o = out[r.job.payload]
            o.subnets = list(r.job.subnets)
            if r.error is not None:
                o.error = type(r.error).__name__
                continue
            o.done_ms, o.subnet = r.done_ms, r.answer.subnet
            o.accuracy = lc.model_of(r.job.pending).base_profile.get(o.subnet).accuracy
            rec = record_of(r.job.payload)
            if rec is not None:
                o.correct = bool(rec.correct(o.subnet)[requests[r.job.payload].sample])

    def apply(step: Step, now: float) -> None:
        resolve(step.resolved)
        for d in step.dispatches:  # each worker runs its batches one after another
            k = d.worker.key
            start = max(now, busy_until[k])
            busy_until[k] = start + batch_ms(d.model, d.batch.subnet, d.rows, start)
            push(busy_until[k], _DONE, d)
            if batches is not None:
                batches.append(SimBatch(now, k, d.batch.subnet, tuple(j.payload for j in d.jobs), d.model))
        for kind, changed, at in ((_SWEEP, step.sweep_changed, step.sweep_at),
                                  (_PIPE, step.pipeline_changed, step.pipeline_at)):
            if changed:  # the one timer of this kind is replaced: an armed event becomes stale
                tokens[kind] += 1
                if at is not None:
                    push(at, kind, tokens[kind])

    nxt = 0
    while nxt < len(order) or events:
        t_arr = requests[order[nxt]].arrival_ms if nxt < len(order) else math.inf
        if events and events[0][0] <= t_arr:
            now, _, kind, payload = heapq.heappop(events)
            if kind == _DONE:
                d: Dispatch = payload
                lc.release(d, now)
                resolve(lc.complete(d, now, [(d.batch.subnet, j.payload) for j in d.jobs], confidence))
                apply(lc.pump(now), now)
            elif payload == tokens[kind]:  # a timer still armed
                tokens[kind] += 1
                apply(lc.on_sweep(now) if kind == _SWEEP else lc.on_pipeline(now), now)
            continue
        i, now = order[nxt], t_arr
        nxt += 1
        r = requests[i]
        try:
            lc.admit(now, r.slo_ms, r.min_accuracy, None, 1, r.min_confidence, payload=i, request_id=i, model=r.model)
        except ServeError as e:
            out[i].error = type(e).__name__
            continue
        apply(lc.pump(now), now)
    return out
