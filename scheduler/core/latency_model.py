"""A latency model that knows its error: how much slower than profiled a batch runs right now, as a
distribution, not only a mean.

The profile is measured one request at a time on an idle machine (maybe another machine). Served
live, a batch also pays Triton's queueing, the reply path and whatever else shares the cores, and
its latency varies from batch to batch. Planning with the mean misses every batch that runs slower
than average, and at the edge of a deadline that is about half of them.

The model keeps the last ``window`` ratios observed/profiled (profiled: the profile's latency of the
batch's subnet at its batch size) and plans at their ``quantile`` (about the attainment target: a
0.99 target plans at the p99 of the ratio). Ratios are kept per profiled batch size, because the
fixed costs of a call (gRPC, the reply path) weigh more on small batches; a batch size with too few
observations of its own takes the nearest smaller batch size's (the conservative neighbour), not the
quantile over all batches, which stalls of small batches dominate.

Fast to react to a slowdown, slow to trust a speed-up: a high quantile of a window rises as soon as a
handful of slow batches arrive ((1 - quantile) x window of them), and falls only once the slow ones
have left the window. A single spike moves it not at all (it is one sample above the quantile).
A long window covers a new regime's tail only once the new batches fill it, so each batch size also
keeps its last ``short`` ratios and plans at least at their quantile, but never above their fourth
largest: four slow batches raise the plan to the new level at once; one or two (a spike, a stall of the
whole machine) do not.
The model learns only from batches that run: if it ever judges every request infeasible, the engine
makes it ``forget`` (see lifecycle.Lifecycle._stale_model), so a passing slowdown cannot stop the service
for good.

State in the request life cycle (lifecycle.py, for the engine and the simulator), not in the policy: it hands
policies the profile scaled by ``factors()`` (quantised, so policies see a bounded set of distinct profiles)."""
from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .profile import Profile


class SortedWindow:
    """The last ``maxlen`` values in arrival order and in sorted order, so a quantile is one index: the model
    reads two per batch, and sorting the whole window each time cost a tenth of the scheduler's CPU (issue 14)."""

    def __init__(self, maxlen: int):
        self.order: deque[float] = deque()
        self.sorted: list[float] = []
        self.maxlen = maxlen

    def __len__(self) -> int:
        return len(self.order)

    def append(self, x: float) -> None:
        if len(self.order) == self.maxlen:
            old = self.order.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]
        self.order.append(x)
        bisect.insort(self.sorted, x)

    def clear(self) -> None:
        self.order.clear()
        self.sorted.clear()


@dataclass(frozen=True)
class LatencyModelConfig:
    quantile: float = 0.99
    """The quantile of observed/profiled latency that policies plan with (the attainment target)."""
    window: int = 400
    """Observations kept, over all batch sizes and for each batch size (newest last)."""
    min_samples: int = 30
    """A batch size with fewer observations takes the factor of the nearest smaller batch size that has
    enough (fixed call costs make small batches the slower ones, relative to the profile), else the
    nearest larger, else the quantile over all observations."""
    short: int = 50
    """Recent ratios per batch size whose quantile (at most their ``short_rank``-th largest) floors the plan."""
    short_rank: int = 4
    recent: int = 9
    """The affine model (latency_affine.py): the median of observed/fitted over this many latest batches
    raises its line at once (a step slowdown, seen after about half of them; one to four stalled batches
    move it not at all)."""
    lo: float = 0.3
    hi: float = 20.0
    """Clamp of one observation's ratio (a quantile ignores a lone outlier; the clamp only bounds how far a
    batch size with no observations of its own can inherit a small batch's stalls)."""
    step: float = 0.05
    """Factors are rounded up to a multiple of this (bounded number of distinct scaled profiles)."""

    def __post_init__(self) -> None:
        if not 0.5 <= self.quantile < 1:
            raise ValueError(f"quantile must be in [0.5, 1), got {self.quantile}")
        if self.window < 10 or not 1 <= self.min_samples <= self.window or not 1 <= self.short_rank < self.short:
            raise ValueError(f"need window >= 10, 1 <= min_samples <= window and 1 <= short_rank < short; got "
                             f"{self.window}, {self.min_samples}, {self.short_rank}, {self.short}")
        if self.recent < 1:
            raise ValueError(f"recent must be >= 1, got {self.recent}")
        if not 0 < self.lo <= 1 <= self.hi or self.step <= 0:
            raise ValueError(f"need 0 < lo <= 1 <= hi and step > 0, got lo {self.lo}, hi {self.hi}, step {self.step}")


@dataclass
class LatencyModel:
    """Online quantiles of observed/profiled batch latency, per profiled batch size."""
    batch_sizes: tuple[int, ...]
    cfg: LatencyModelConfig = field(default_factory=LatencyModelConfig)

    def __post_init__(self) -> None:
        self.batch_sizes = tuple(sorted(self.batch_sizes))
        self._all = SortedWindow(self.cfg.window)
        self._own = {b: SortedWindow(self.cfg.window) for b in self.batch_sizes}
        self._short = {b: SortedWindow(self.cfg.short) for b in self.batch_sizes}
        self._factors: dict[int, float] = {b: 1.0 for b in self.batch_sizes}
        self._own_stats: dict[int, tuple[float, float]] = {}
        """(planning factor, median) of each batch size with enough observations of its own."""
        self._medians: dict[int, float] = {b: 1.0 for b in self.batch_sizes}
        self.median = 1.0
        """Median ratio over all batch sizes (when a worker is likely free, not when it surely is)."""
        self.observations = 0

    def bucket(self, rows: int) -> int:
        """The profiled batch size a batch of ``rows`` is planned with (as Profile.at: next larger)."""
        return next((b for b in self.batch_sizes if b >= rows), self.batch_sizes[-1])

    def observe(self, rows: int, observed_ms: float, profiled_ms: float) -> None:
        if profiled_ms <= 0 or not math.isfinite(observed_ms):
            return
        ratio = min(self.cfg.hi, max(self.cfg.lo, observed_ms / profiled_ms))
        b = self.bucket(rows)
        self._all.append(ratio)
        self._own[b].append(ratio)
        self._short[b].append(ratio)
        self.observations += 1
        q_all, self.median = self._stats(self._all)
        if len(self._own[b]) >= self.cfg.min_samples:
            f, m = self._stats(self._own[b])
            short = self._short[b]  # a new regime: plan for it before the long window fills
            i = min(len(short) - self.cfg.short_rank, math.ceil(self.cfg.quantile * (len(short) - 1)))
            self._own_stats[b] = (max(f, short.sorted[i]), m)
        donors = sorted(self._own_stats)
        for k in self.batch_sizes:  # too few observations of its own: the nearest smaller batch size's
            smaller = [x for x in donors if x < k]
            d = k if k in self._own_stats else (smaller[-1] if smaller else donors[0] if donors else None)
            self._factors[k], self._medians[k] = self._own_stats[d] if d is not None else (q_all, self.median)

    def _stats(self, window: SortedWindow) -> tuple[float, float]:
        """(the planning quantile, the median) of a window; the quantile rounds up to an observation."""
        a = window.sorted
        return a[min(len(a) - 1, math.ceil(self.cfg.quantile * (len(a) - 1)))], a[(len(a) - 1) // 2]

    def factor(self, rows: int) -> float:
        return self._factors[self.bucket(rows)]

    def median_factor(self, rows: int) -> float:
        return self._medians[self.bucket(rows)]

    def factors(self) -> dict[int, float]:
        """Planning factor per profiled batch size, rounded up to ``step``."""
        s = self.cfg.step
        return {b: round(math.ceil(f / s - 1e-9) * s, 4) for b, f in self._factors.items()}

    def forget(self) -> None:
        """Drop every observation: plan with the profile again until new batches are seen."""
        self._all.clear()
        for own in (*self._own.values(), *self._short.values()):
            own.clear()
        self._factors = {b: 1.0 for b in self.batch_sizes}
        self._medians = {b: 1.0 for b in self.batch_sizes}
        self._own_stats = {}
        self.median = 1.0

    def summary(self) -> dict[str, float]:
        """Quantiles of the ratio over the window (for metrics and logs)."""
        if not self._all:
            return {"n": 0}
        arr = np.array(self._all.order)
        return {"n": len(arr), "p50": round(float(np.quantile(arr, 0.5)), 3),
                "p90": round(float(np.quantile(arr, 0.9)), 3), "p99": round(float(np.quantile(arr, 0.99)), 3)}


class ScaledProfiles:
    """Scaled copies of a base profile, memoised by their factors (policies memoise per profile object)."""

    def __init__(self, base: Profile, capacity: int = 64):
        self.base, self.capacity = base, capacity
        self._cache: dict[tuple[tuple[int, float], ...], Profile] = {}

    def get(self, factors: dict[int, float]) -> Profile:
        key = tuple(sorted(factors.items()))
        p = self._cache.get(key)
        if p is None:
            if len(self._cache) >= self.capacity:
                self._cache.clear()
            p = self._cache[key] = self.base.scaled_by_batch(factors)
        return p
