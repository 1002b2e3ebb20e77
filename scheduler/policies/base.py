"""What every policy takes and returns. Policies are pure: a frozen snapshot in, a frozen
decision out; no clock, no I/O, no mutation. The live scheduler and the simulator both call them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..core.edf_queue import Pending
from ..core.profile import Profile, ProfileError, SubnetProfile


@dataclass(frozen=True)
class Batch:
    requests: tuple[int, ...]
    """Request ids, earliest deadline first."""
    subnet: str
    expected_ms: float
    """Profiled latency of this (subnet, batch) point."""


@dataclass(frozen=True)
class Decision:
    batch: Batch | None = None
    drop: tuple[int, ...] = ()
    """Requests no admissible point can serve by their deadline: answer 504 now."""


@dataclass(frozen=True)
class WorkerView:
    id: int
    inflight: int
    loaded: frozenset[str] | None = None
    """Subnets this worker can run without loading a model first; None: any subnet (the supernet)."""
    free_at_ms: float | None = None
    """When the batches already in flight on this worker are expected to end (on the policy's clock,
    reply margin included); None: the worker is free now. A policy that plans a pipelined batch
    measures slack from ``max(now_ms, free_at_ms)``."""

    def start_ms(self, now_ms: float) -> float:
        """When a batch decided now would start running on this worker."""
        return now_ms if self.free_at_ms is None else max(now_ms, self.free_at_ms)


class Policy:
    """The interface every policy implements, with the defaults of the optional hooks.

    Drivers (the live engine and the simulator, through core/lifecycle.py) call, in this order:
    ``on_arrival`` when a request arrives, ``advance`` right before every ``decide``, ``decide`` for
    the next batch of a worker, ``observe`` when a batch completes. ``decide`` and ``fastest_ms`` are
    pure functions of their arguments and the policy's state; only ``on_arrival``, ``advance`` and
    ``observe`` change that state."""

    name: str = "policy"
    pipelines: bool = False
    """Plans from the worker's expected free time (WorkerView.free_at_ms): a second batch may be sent early."""
    early_drop: bool = True
    """Queued requests are dropped the moment they become infeasible (False: served late, as Clipper does)."""
    confidence_measure: str = "max_softmax"
    """Which confidence an escalation threshold is compared with (escalation.MEASURES)."""

    def fastest_ms(self, req: Pending, profile: Profile) -> float | None:
        """Latency of the fastest point that may serve ``req`` alone; None if no subnet may."""
        return min((s.at(req.rows) for s in profile.subnets if req.admits(s.name, s.accuracy)), default=None)

    def decide(self, queue: Sequence[Pending], now_ms: float, profile: Profile, worker: WorkerView) -> Decision:
        """What to run next on ``worker`` (queue is in deadline order)."""
        raise NotImplementedError

    def check(self, profile: Profile) -> None:
        """Start-up check against the profile the scheduler plans with (raise ProfileError)."""

    def on_arrival(self, now_ms: float, rows: int) -> None:
        """A request of ``rows`` rows arrived (before admission decides on it)."""

    def advance(self, now_ms: float, profile: Profile) -> None:
        """The step before each ``decide``: state that follows time (e.g. the cascade's gear) moves here,
        so ``decide`` itself stays pure."""

    def observe(self, batch: Batch, latency_ms: float, slo_ms: float) -> None:
        """A batch completed. ``latency_ms``: its processing time (dispatch to answer); ``slo_ms``: the
        tightest latency target among its requests (e.g. Clipper's AIMD batch cap learns from it)."""

    def escalation_threshold(self, subnet: str) -> float | None:
        """The confidence an answer from ``subnet`` must reach (None: this policy does not escalate)."""
        return None


def drop_infeasible_head(policy: Policy, queue: Sequence[Pending], now_ms: float,
                         profile: Profile) -> tuple[tuple[int, ...], int]:
    """Split off the leading requests whose slack is below their fastest admissible point at the latency
    a batch most likely takes (``profile.likely``: a planning view at a high quantile would drop what
    can still be served). Returns (dropped ids, index of the first request that can still be served)."""
    dropped: list[int] = []
    i, likely = 0, profile.likely
    while i < len(queue):
        fastest = policy.fastest_ms(queue[i], likely)
        if fastest is not None and queue[i].deadline_ms - now_ms >= fastest:
            break
        dropped.append(queue[i].id)
        i += 1
    return tuple(dropped), i


def feasible_from(policy: Policy, queue: Sequence[Pending], now_ms: float, profile: Profile,
                  worker: WorkerView) -> tuple[tuple[int, ...], int]:
    """``drop_infeasible_head`` at ``now_ms``, then the index of the first request that can still be
    served by a batch starting when ``worker`` is free (requests between the two stay queued: another
    worker, or none, may serve them). Returns (dropped ids, index)."""
    dropped, start = drop_infeasible_head(policy, queue, now_ms, profile)
    t0 = worker.start_ms(now_ms)
    if t0 > now_ms and start < len(queue):
        start += drop_infeasible_head(policy, queue[start:], t0, profile)[1]
    return dropped, start


def fill(queue: Sequence[Pending], start: int, subnet: str, accuracy: float, max_rows: int,
         rides: Callable[[Pending], bool] | None = None) -> tuple[int, ...]:
    """Earliest-deadline requests from ``start`` that admit ``subnet`` (and satisfy ``rides``, if
    given), up to ``max_rows`` rows."""
    ids: list[int] = []
    rows = 0
    for p in queue[start:]:
        if rows + p.rows > max_rows:
            if rows:
                break
            continue
        if p.admits(subnet, accuracy) and (rides is None or rides(p)):
            ids.append(p.id)
            rows += p.rows
            if rows >= max_rows:
                break
    return tuple(ids)


def one_subnet(profile: Profile, subnet: str, policy: str) -> SubnetProfile:
    """The profile entry of a single-subnet policy's subnet, or a clear error at start-up."""
    s = profile.get(subnet)
    if s is None:
        raise ProfileError(f"policy {policy}: subnet {subnet!r} is not in the profile "
                           f"({', '.join(x.name for x in profile.subnets)})")
    return s


def one_subnet_fastest_ms(req: Pending, profile: Profile, subnet: str, policy: str) -> float | None:
    s = one_subnet(profile, subnet, policy)
    return s.at(req.rows) if req.admits(s.name, s.accuracy) else None
