"""What every policy takes and returns. Policies are pure: a frozen snapshot in, a frozen
decision out; no clock, no I/O, no mutation. The live scheduler and the simulator both call them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from ..edf_queue import Pending
from ..profile import Profile, ProfileError


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


class Policy(Protocol):
    name: str

    def fastest_ms(self, req: Pending, profile: Profile) -> float | None:
        """Latency of the fastest point that may serve ``req`` alone; None if no subnet may."""

    def decide(self, queue: Sequence[Pending], now_ms: float, profile: Profile, worker: WorkerView) -> Decision:
        """What to run next on ``worker`` (queue is in deadline order)."""


class FeedbackPolicy(Policy, Protocol):
    """A policy with state learnt from outcomes (e.g. Clipper's AIMD batch size). The engine calls
    ``observe`` when a batch completes; ``decide`` stays a pure function of that state and its inputs."""

    def observe(self, batch: Batch, latency_ms: float, slo_ms: float) -> None:
        """``latency_ms``: the batch's processing time (dispatch to answer); ``slo_ms``: the tightest
        latency target among its requests."""


def drop_infeasible_head(policy: Policy, queue: Sequence[Pending], now_ms: float, profile: Profile):
    """Split off the leading requests whose slack is below their fastest admissible point.
    Returns (dropped ids, index of the first request that can still be served)."""
    dropped, i = [], 0
    while i < len(queue):
        fastest = policy.fastest_ms(queue[i], profile)
        if fastest is not None and queue[i].deadline_ms - now_ms >= fastest:
            break
        dropped.append(queue[i].id)
        i += 1
    return tuple(dropped), i


def feasible_from(policy: Policy, queue: Sequence[Pending], now_ms: float, profile: Profile, worker: WorkerView):
    """``drop_infeasible_head`` at ``now_ms``, then the index of the first request that can still be
    served by a batch starting when ``worker`` is free (requests between the two stay queued: another
    worker, or none, may serve them). Returns (dropped ids, index)."""
    dropped, start = drop_infeasible_head(policy, queue, now_ms, profile)
    t0 = worker.start_ms(now_ms)
    if t0 > now_ms and start < len(queue):
        start += drop_infeasible_head(policy, queue[start:], t0, profile)[1]
    return dropped, start


def fill(queue: Sequence[Pending], start: int, subnet: str, accuracy: float, max_rows: int,
         rides=None) -> tuple[int, ...]:
    """Earliest-deadline requests from ``start`` that admit ``subnet`` (and satisfy ``rides``, if
    given), up to ``max_rows`` rows."""
    ids, rows = [], 0
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


def one_subnet(profile: Profile, subnet: str, policy: str):
    """The profile entry of a single-subnet policy's subnet, or a clear error at start-up."""
    s = profile.get(subnet)
    if s is None:
        raise ProfileError(f"policy {policy}: subnet {subnet!r} is not in the profile "
                           f"({', '.join(x.name for x in profile.subnets)})")
    return s


def one_subnet_fastest_ms(req: Pending, profile: Profile, subnet: str, policy: str) -> float | None:
    s = one_subnet(profile, subnet, policy)
    return s.at(req.rows) if req.admits(s.name, s.accuracy) else None
