"""An affine latency model: observed batch latency = scale x profiled + offset, plus an additive tail.

Why not a ratio. The ratio model (latency_model.py) plans every batch at a high quantile of
observed/profiled. Measured live on a busy 2-core host (issue 13, a bursty trace at 1.5x capacity, the
sidecar's ``--batch-log``), that ratio depends on how long the batch is: a median of 1.6-1.9 for batches
the profile puts under 6 ms, 0.85 for those over 25 ms, because two kinds of error add up:
- the host runs a forward at a different speed than the profiling machine: a factor, the same for every
  subnet and batch (this Intel host ran the AMD profile's large batches at 0.85x);
- each call pays costs the profile does not see (the gRPC hop, the reply path, the scheduler's event loop)
  and, on a shared host, stalls: milliseconds, about the same for a 3 ms batch and a 40 ms one (the
  residual's p90 was 8-16 ms in every latency band, its median 1-3 ms).
A quantile of the ratio then takes the stalls of small batches as a factor and applies it to large ones:
the ratio model planned the largest batches at 2-4x what they took (observed/planned median 0.37-0.48),
refused hundreds of requests at admission and cut batches small, which wasted the worker (idle 35% of
the time while requests waited). Fitting both terms keeps each where it belongs.

The fit: Tukey's resistant line over the last ``window`` batches (slope from the medians of the outer
thirds of profiled latency, offset from the median residual), robust to the stalls it must not chase;
when every batch has about the same profiled latency (one subnet, one batch size) the slope is the
median ratio and the offset 0. Planning adds the ``quantile`` of the residuals (ms, at least 0), so a
request with a 0.99 target is planned for the tail the host actually shows, once, not scaled.

Fast to react to a slowdown, slow to trust a speed-up: the median of observed / fitted over the last
``recent`` (9) batches raises the whole line at once when the host slows (after 5 slow batches), and
never lowers it; the long window brings it down only as the slow batches leave it. A spike, or a stall
of up to four batches, moves nothing. The model learns only from batches that run: if it ever judges every request
infeasible, the life cycle makes it ``forget`` (lifecycle.Lifecycle._stale_model).

Views are memoised by their quantised (scale, offset) so policies see a bounded set of profiles."""
from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from .latency_model import LatencyModelConfig
from .profile import Profile


REFIT_EVERY = 8
"""Batches between two fits of the line and the tail (the recent boost is updated on every batch)."""


class AffineLatencyModel:
    """Online fit of observed = scale x profiled + offset, and the quantile of what is left (ms).
    A latency_view.LatencyView."""
    forgets = True

    def __init__(self, base: Profile, cfg: LatencyModelConfig | None = None):
        self.base, self.cfg = base, cfg or LatencyModelConfig()
        self._x: deque[float] = deque(maxlen=self.cfg.window)
        self._y: deque[float] = deque(maxlen=self.cfg.window)
        self._recent: deque[float] = deque(maxlen=self.cfg.recent)
        """observed / fitted of the last batches (fitted by the line in force when they ended)."""
        self._views: dict[tuple[float, float], Profile] = {}
        self._medians: dict[tuple[float, float], Profile] = {}
        self.observations = 0
        self._reset_fit()

    def _reset_fit(self) -> None:
        self.slope, self.offset_ms, self.tail_ms, self.boost = 1.0, 0.0, 0.0, 1.0
        self._key = (1.0, 0.0)

    def observe(self, rows: int, observed_ms: float, profiled_ms: float) -> None:
        del rows  # the profiled latency already says how big the batch was
        if profiled_ms <= 0 or not math.isfinite(observed_ms) or observed_ms < 0:
            return
        self.observations += 1
        self._x.append(profiled_ms)
        self._y.append(observed_ms)
        if len(self._x) >= self.cfg.min_samples:
            # how much slower than the line the compute part ran (the per-call offset does not scale)
            self._recent.append((observed_ms - self.offset_ms) / max(self.slope * profiled_ms, 1e-9))
            if self.observations % REFIT_EVERY == 0 or len(self._x) == self.cfg.min_samples:
                self._fit()
            self.boost = max(1.0, float(np.median(self._recent))) if len(self._recent) == self.cfg.recent else 1.0
        self._key = self._quantise()

    def _fitted(self, profiled_ms: float) -> float:
        """The median latency the line predicts, without the recent boost."""
        return max(self.slope * profiled_ms + self.offset_ms, self.cfg.lo * profiled_ms)

    def _fit(self) -> None:
        x, y = np.fromiter(self._x, float, len(self._x)), np.fromiter(self._y, float, len(self._y))
        if np.quantile(x, 0.9) > 1.2 * np.quantile(x, 0.1):
            slope, offset = median_line(x, y, self.slope, self.offset_ms)
        else:  # one latency level: no line to fit, only a ratio
            slope, offset = float(np.median(y / x)), 0.0
        self.slope = min(self.cfg.hi, max(self.cfg.lo, slope))
        self.offset_ms = offset if self.slope == slope else float(np.median(y - self.slope * x))
        resid = y - np.maximum(self.slope * x + self.offset_ms, self.cfg.lo * x)
        k = min(len(resid) - 1, math.ceil(self.cfg.quantile * (len(resid) - 1)))
        self.tail_ms = max(0.0, float(np.partition(resid, k)[k]))

    def _quantise(self) -> tuple[float, float]:
        step, ms = self.cfg.step, 0.5
        scale = math.ceil(self.boost * self.slope / step - 1e-6) * step
        offset = math.ceil((self.offset_ms + self.tail_ms) / ms - 1e-6) * ms
        return round(scale, 4), round(offset, 4)

    # -- what the life cycle asks ----------------------------------------------------------------
    def plan_ms(self, profiled_ms: float) -> float:
        """The latency a batch the profile puts at ``profiled_ms`` is planned with."""
        scale, offset = self._key
        return max(scale * profiled_ms + offset, self.cfg.lo * profiled_ms)

    def median_ms(self, rows: int, profiled_ms: float) -> float:
        """The latency such a batch most likely takes (when a worker is likely free, not surely)."""
        return max(self.boost * self.slope * profiled_ms + self.offset_ms, self.cfg.lo * profiled_ms)

    def view(self) -> Profile:
        """The profile policies plan with: every latency through ``plan_ms``."""
        if self._key == (1.0, 0.0):
            return self.base
        p = self._views.get(self._key)
        if p is None:
            if len(self._views) >= 64:
                self._views.clear()
            p = self._views[self._key] = self.base.mapped(self.plan_ms)
        if p.median is not (m := self.median_view()):
            p = self._views[self._key] = p.with_median(m)
        return p

    def median_view(self) -> Profile:
        """The profile through ``median_ms``: what the host most likely delivers (admission shedding)."""
        key = (round(self.boost * self.slope, 3), round(self.offset_ms, 1))
        if key == (1.0, 0.0):
            return self.base
        p = self._medians.get(key)
        if p is None:
            if len(self._medians) >= 64:
                self._medians.clear()
            scale, offset, lo = key[0], key[1], self.cfg.lo
            p = self._medians[key] = self.base.mapped(lambda ms: max(scale * ms + offset, lo * ms))
        return p

    def factor(self) -> float:
        """Planned / profiled for the largest subnet's largest batch (one number for metrics)."""
        top = self.base.subnets[-1].at(self.base.max_batch)
        return self.plan_ms(top) / top

    def forget(self) -> None:
        """Drop every observation: plan with the profile again until new batches are seen."""
        self._x.clear()
        self._y.clear()
        self._recent.clear()
        self.observations = 0
        self._reset_fit()

    def summary(self) -> dict[str, float]:
        return {"n": len(self._x), "slope": round(self.slope, 3), "offset_ms": round(self.offset_ms, 2),
                "tail_ms": round(self.tail_ms, 2), "boost": round(self.boost, 3)}


def median_line(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], slope: float = 1.0, offset: float = 0.0,
                iterations: int = 12) -> tuple[float, float]:
    """(slope, offset) of the least-absolute-deviations line through (x, y): the conditional median,
    which one-sided stalls do not pull up as they pull a least-squares line. Iteratively reweighted
    least squares from the previous fit (a handful of 2x2 solves over the window)."""
    for _ in range(iterations):
        w = 1.0 / np.maximum(np.abs(y - (slope * x + offset)), 1e-3)
        sw, swx, swy = w.sum(), (w * x).sum(), (w * y).sum()
        swxx, swxy = (w * x * x).sum(), (w * x * y).sum()
        det = sw * swxx - swx * swx
        if det <= 0:
            break
        slope, offset = (sw * swxy - swx * swy) / det, (swxx * swy - swx * swxy) / det
    return float(slope), float(offset)
