"""Admission-time shedding: refuse at arrival, in constant time, a request that cannot finish by its deadline
even if every worker drained the work queued ahead of it at the profile's peak throughput.

Without it, overload is shed late: an excess request waits in the EDF queue until the sweep finds it
infeasible, so at 3x capacity the excess got its 504 a median 150 ms after arrival (issue 12), and the queue
the sidecar walks for every decision grows to thousands. The bound is optimistic on purpose (peak
throughput, every worker, no reply path), so it never refuses a request the policy could still have served
in time by the profile it plans with; what it refuses is certain to miss.
Pure: the engine hands it the queue's counts, the workers' free times and the profile view it plans with."""
from __future__ import annotations

from dataclasses import dataclass

from .profile import Profile


@dataclass(frozen=True)
class Backlog:
    """What admission knows of the work ahead of a new request (EDF: queued with an earlier deadline)."""

    rows_ahead: float
    """Rows queued with a deadline at or before the new request's."""
    workers_free_ms: tuple[float, ...]
    """When each healthy worker is expected to be free (now, for an idle one)."""


def peak_rows_per_ms(profile: Profile) -> float:
    """The highest throughput any (subnet, batch) point of ``profile`` reaches, rows per ms."""
    return max(b / s.latency_ms[b] for s in profile.subnets for b in profile.batch_sizes if s.latency_ms[b] > 0)


def earliest_finish_ms(now_ms: float, backlog: Backlog, own_ms: float, peak: float) -> float:
    """Earliest time a new request could be answered: the first worker to free takes the backlog's share of a
    perfect parallel drain at ``peak`` rows/ms, then the request's own fastest point, ``own_ms``."""
    if not backlog.workers_free_ms:
        return float("inf")
    n = len(backlog.workers_free_ms)
    start = max(now_ms, min(backlog.workers_free_ms))
    return start + backlog.rows_ahead / (n * peak) + own_ms


def shed_reason(now_ms: float, deadline_ms: float, backlog: Backlog, own_ms: float, peak: float) -> str | None:
    """Why the request cannot make its deadline (None: admit it)."""
    finish = earliest_finish_ms(now_ms, backlog, own_ms, peak)
    if finish <= deadline_ms:
        return None
    return (f"overloaded: {backlog.rows_ahead:.0f} row(s) queued ahead drain in at least "
            f"{finish - own_ms - now_ms:.1f} ms on {len(backlog.workers_free_ms)} worker(s), which with "
            f"{own_ms:.1f} ms for this request passes its deadline by {finish - deadline_ms:.1f} ms; refused at once")
