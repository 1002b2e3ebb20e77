"""The scheduler's stats record: counters, gauges and histograms that the request life cycle, the worker pool and
the fleet fill (STYLE.md section 6 names), in base units (seconds); ``scheduler/sidecar/metrics.py`` publishes
them as Prometheus text at /metrics, and the simulator reads the same record."""
from __future__ import annotations

import bisect
from collections import Counter
from typing import Any
from dataclasses import dataclass, field

OUTCOMES = ("ok", "late", "dropped", "invalid", "overloaded", "error")


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, v: float) -> None:
        i = bisect.bisect_left(self.buckets, v)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += v
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        out, cum = [], 0
        sep = "," if labels else ""
        for b, c in zip(self.buckets, self.counts):
            cum += c
            out.append(f'{name}_bucket{{{labels}{sep}le="{b:g}"}} {cum}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        lb = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{lb} {self.total:.9g}", f"{name}_count{lb} {self.n}"]
        return out


LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class Stats:
    requests: Counter[Any] = field(default_factory=Counter)
    """By outcome (OUTCOMES)."""
    deadline_misses: int = 0
    served_accuracy_sum: float = 0.0
    subnet_selected: Counter[Any] = field(default_factory=Counter)
    """Requests served per (model, subnet)."""
    model_requests: Counter[Any] = field(default_factory=Counter)
    """Requests per (model, outcome), for requests a served model was named for (``requests`` counts all)."""
    model_latency_factor: dict[str, float] = field(default_factory=dict)
    """Per model: observed/profiled batch latency its policy plans with (``latency_factor``: the default's)."""
    queue_depth: int = 0
    model_loads: int = 0
    """Models a worker loaded before it could run a batch (policy infaas), and the time they took."""
    model_load_seconds_sum: float = 0.0
    escalations: int = 0
    """Requests re-queued for a more accurate cascade stage."""
    escalation_fallbacks: int = 0
    """Escalated requests answered with their previous stage's result (the next could not run in time)."""
    latency_factor: float = 1.0
    """Observed/profiled batch latency the policy currently plans with."""
    worker_inflight: dict[str, int] = field(default_factory=dict)
    worker_healthy: dict[str, int] = field(default_factory=dict)
    """1 while a worker is in rotation, 0 while it is out (sidecar/worker_pool.py)."""
    worker_failures: Counter[Any] = field(default_factory=Counter)
    """By (worker, reason): error (a call failed), hang (a call outran the hang rule), probe."""
    worker_batches: Counter[Any] = field(default_factory=Counter)
    """Batch calls by (worker, outcome): ok, failed, hung, invalid."""
    worker_readmissions: Counter[Any] = field(default_factory=Counter)
    batch_retries: int = 0
    """Failed batches whose requests (some or all) went back to the queue."""
    request_retries: int = 0
    reply_margin_ms: float = 0.0
    """The reply margin policies plan with when it is measured online (serve --measure-margin)."""
    shed: int = 0
    """Requests refused at admission because the queue ahead certainly made them late (also counted as
    outcome overloaded)."""
    unexpected_errors: int = 0
    """Exceptions no handler expected (a bug, answered 500 and logged at most every few seconds)."""
    auth_failures: Counter[Any] = field(default_factory=Counter)
    """Requests refused for a missing or wrong bearer token, by (protocol, reason) (sidecar/auth.py)."""
    limit_refusals: Counter[Any] = field(default_factory=Counter)
    """Requests and connections the front-end limits refused, by (protocol, reason) (limits.REFUSALS)."""
    http_connections: object = None
    """The HTTP front end's ``ConnectionGuard`` (sidecar/limits.py): its counters are read when rendering."""
    workers_target: int | None = None
    """Workers the scheduler wants (serve --autoscale / --ray, sidecar/fleet.py); None: it does not manage its
    workers."""
    workers_actual: int = 0
    """Workers of the fleet in the pool (admitted, not draining)."""
    workers_draining: int = 0
    """Workers leaving: out of the pool, finishing their calls in flight, then stopped."""
    worker_admissions: int = 0
    """Workers that joined the pool after their readiness probe and warm-up (new, or restarted)."""
    workers_lost: int = 0
    """Workers dropped from the pool because their process or actor died or moved."""
    worker_demand: float = 0.0
    """The last second's requests on the most accurate subnet over the pool's capacity (autoscale.py)."""
    scaling_decisions: Counter[Any] = field(default_factory=Counter)
    """Changes of the target by (direction, reason): up/accuracy, up/misses, up/demand, down/idle, up|down/bound."""
    batch_size: Histogram = field(default_factory=lambda: Histogram((1, 2, 4, 8, 16, 32, 64)))
    decision_seconds: Histogram = field(default_factory=lambda: Histogram((1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2)))
    queue_wait_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    request_latency_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    reply_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
