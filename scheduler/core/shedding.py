"""Admission-time shedding: refuse at arrival, in constant time, a request that cannot finish by its deadline
given the work queued ahead of it and the rate at which that work drains.

Without it, overload is shed late: an excess request waits in the EDF queue until the sweep finds it
infeasible, so at 3x capacity the excess got its 504 a median 150 ms after arrival (issue 12), and the queue
the sidecar walks for every decision grows to thousands. The bound is optimistic on purpose (peak
throughput, every worker, no reply path), so it never refuses a request the policy could still have served
in time by the profile it plans with; what it refuses is certain to miss.

That bound turned out far too loose to ever fire (results/overload.json, issue 12): it assumed the smallest
subnet at batch 64 on every worker, 5.3 rows/ms here, while under 3x overload the workers and the sidecar
together cleared about 0.75 rows/ms, so the queue never reached the ~470 rows the rule waited for and the excess
was dropped with 504 by the queue's sweep ~90 ms after arrival instead. ``DrainRate`` measures the rate the
queue actually drains at under a backlog (rows answered per ms between batch completions), and ``shed_reason``
uses it when it has enough such batches, the peak bound otherwise (a cold start, or no backlog seen yet).

Only saturated intervals count: requests waiting at both completions *and* a batch of at least half the largest
profiled batch. A first version counted every interval with requests waiting and collapsed at 3x overload
(results/overload-drain.json: 0.10 rows/ms served against 0.51 without shedding): shedding kept the queue short,
so batches were small, so the measured rate fell, so it shed more. Measured on full batches, the rate is what
the machine does when it is busy, and a short queue adds no samples that could pull it down. It still over-sheds
when the policy adapts: with a short queue SlackFit picks slower, more accurate subnets, so the rate measured there
is below what a longer queue would be served at (results/overload-drain-2.json: 0.49 rows/ms served against 0.78
without shedding). So it is an option (``serve --shed-drain measured``), not the default: in two side-by-side runs
it was the best arm once and the worst once.
Pure functions plus one small estimator the engine feeds: the engine hands them the queue's counts, the
workers' free times, the profile view it plans with and the batch completions."""
from __future__ import annotations

from collections import deque
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


class DrainRate:
    """Rows per ms the queue is cleared at under a backlog, over the last ``window`` saturated intervals between
    batch completions (all workers together).

    ``observe`` is called at every batch completion with the rows it answered and whether requests were still
    waiting. The interval since the previous completion counts only when requests waited at both ends (the
    workers were busy throughout: an idle gap says nothing about capacity) and the batch had at least
    ``min_rows`` rows (small batches measure a short queue, not the capacity)."""

    def __init__(self, window: int = 32, min_batches: int = 8, min_rows: int = 1):
        self.window, self.min_batches, self.min_rows = window, min_batches, min_rows
        self._intervals: deque[tuple[float, int]] = deque()
        """(ms since the previous completion, rows) of backlogged intervals, at most ``window``."""
        self._ms = self._rows = 0.0
        self._last_ms: float | None = None
        self._last_waiting = False

    def observe(self, now_ms: float, rows: int, waiting: bool) -> None:
        if (self._last_ms is not None and self._last_waiting and waiting and rows >= self.min_rows
                and now_ms > self._last_ms):
            self._intervals.append((now_ms - self._last_ms, rows))
            self._ms += now_ms - self._last_ms
            self._rows += rows
            if len(self._intervals) > self.window:
                ms, r = self._intervals.popleft()
                self._ms -= ms
                self._rows -= r
        self._last_ms, self._last_waiting = now_ms, waiting

    def rows_per_ms(self) -> float | None:
        """The measured rate (constant time), or None with fewer than ``min_batches`` backlogged intervals."""
        if len(self._intervals) < self.min_batches or self._ms <= 0:
            return None
        return self._rows / self._ms


def earliest_finish_ms(now_ms: float, backlog: Backlog, own_ms: float, peak: float,
                       measured: float | None = None) -> float:
    """Earliest time a new request could be answered: the first worker to free starts on the backlog, which drains
    at the ``measured`` rate (rows/ms, all workers together) if given, else at its share of a perfect parallel drain
    at ``peak`` rows/ms per worker; then the request's own fastest point, ``own_ms``."""
    if not backlog.workers_free_ms:
        return float("inf")
    n = len(backlog.workers_free_ms)
    start = max(now_ms, min(backlog.workers_free_ms))
    rate = measured if measured is not None and measured > 0 else n * peak
    return start + backlog.rows_ahead / rate + own_ms


def shed_reason(now_ms: float, deadline_ms: float, backlog: Backlog, own_ms: float, peak: float,
                measured: float | None = None) -> str | None:
    """Why the request cannot make its deadline (None: admit it)."""
    finish = earliest_finish_ms(now_ms, backlog, own_ms, peak, measured)
    if finish <= deadline_ms:
        return None
    how = f"at the measured {measured:.2f} rows/ms on" if measured else "at peak profile speed on"
    return (f"overloaded: {backlog.rows_ahead:.0f} row(s) queued ahead drain in at least "
            f"{finish - own_ms - now_ms:.1f} ms {how} {len(backlog.workers_free_ms)} worker(s), which with "
            f"{own_ms:.1f} ms for this request passes its deadline by {finish - deadline_ms:.1f} ms; refused at once")
