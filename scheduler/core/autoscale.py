"""How many Triton workers the scheduler wants: a pure policy over a window of per-second metrics.

SlackFit absorbs a surge at once by serving smaller subnets; this policy then adds workers until the served
accuracy is back, and removes them when the surge is over. It is a function of (window, now, config), like
the scheduling policies: it never sleeps, reads a clock or does I/O, and is tested on a fake clock
(tests/unit/test_autoscale.py). The loop that samples the engine and applies the target is sidecar/scaling_loop.py.

Signals, per sample (one second of the live engine):
- **served accuracy**: mean profiled accuracy of the requests answered in time;
- **misses**: requests answered late, dropped as infeasible or refused (503), over those answered;
- **demand**: the rows the workers ran in the second times the per-row cost of the most accurate subnet at its
  most efficient batch, over the time of the workers in the pool. 1.0 means the pool could just serve everything on
  the most accurate subnet. It depends on the traffic and the profile only, not on the subnets and batches
  SlackFit happened to choose (busy time would read near 1 at moderate load, since SlackFit keeps a worker
  busy with bigger subnets whenever it can), so the demand the pool would have with one worker fewer is exactly
  ``demand * n / (n - 1)``.

Rules (the numbers are ``AutoscaleConfig`` fields, defaults justified there):
- **Up** when every sample of the last ``up_hold_s`` is *hot*: served accuracy below the most accurate
  subnet's by more than ``accuracy_gap`` while the demand is at least ``accuracy_min_demand``, or misses above
  ``max_miss_ratio``, or demand above ``up_demand``. By one, or at once to the pool the demand asks for,
  ``ceil(demand * n / up_demand)`` with the lowest demand of the hold: a worker takes many seconds to start, and
  a surge of 2x one worker's capacity needs three, so adding them one start after another would double the time
  SlackFit trades accuracy.
- **Down by one** when every sample of the last ``down_hold_s`` is *cold*: no accuracy gap that counts, misses
  within bound, and the demand the workers left would carry, ``demand * n / (n - 1)``, below ``down_demand``; and,
  if the window shows when the pool last grew to ``n``, the demand now is below ``regret_fraction`` of the
  demand that made it grow (a worker added because the smaller pool lost accuracy is not removed while the load
  that cost the accuracy is still there).
- **Reversal back-off**: each step down that the window shows undone by a step up (a *reversal*) doubles the
  down hold (at most 16x), so a load that swings more slowly than the hold is followed once, not every period.
- **Settled samples only**: a sample counts only if the workers in the pool equalled the target and it was
  taken after the last change of target. While a worker starts, drains or is restarted, nothing is decided
  (``waiting``); each hold starts afresh after every change.
- **Bounds**: the target stays within [``min_workers``, ``max_workers``].
- **Several models** on the same workers: one sample for the pool, each model weighted by its traffic (demand
  adds up, the accuracy gap is the mean per-request shortfall against each request's own model's best subnet):
  ``combined_sample`` says how and why.

No flapping under a steady load: a step up at ``n`` workers needs demand above ``up_demand * n`` (or lost
accuracy or misses at that demand), a step down from ``n + 1`` needs demand below ``down_demand * n`` and below
``regret_fraction`` of the demand of the step up; with ``down_demand < up_demand`` and ``regret_fraction < 1``
both cannot hold at one demand.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class AutoscaleConfig:
    min_workers: int = 1
    max_workers: int = 4
    accuracy_gap: float = 0.01
    """Hot when the served accuracy is this far (absolute) below the most accurate subnet's. One point: on the
    committed profile the most accurate subnet is 0.939 (validation) and the next widths down are 0.931-0.916,
    so a gap of 0.01 means a sizeable share of requests went to 75%-width subnets or smaller, not one odd batch."""
    max_miss_ratio: float = 0.01
    """Hot when more than this share of the second's requests were late, dropped or refused: the attainment
    target is 0.99."""
    up_demand: float = 0.8
    """Hot when the demand (1.0: the pool's capacity on the most accurate subnet) is above this. INFaaS scales up
    at 80% utilisation; here it leaves 20% for bursts above the mean before SlackFit has to trade accuracy."""
    down_demand: float = 0.6
    """Cold when the demand the remaining workers would carry is below this. A quarter under ``up_demand``, so the
    pool after a step down sits at least 0.2 of its capacity away from the next step up; lower would keep a
    worker too many at the demand a single worker served before a surge."""
    up_hold_s: float = 3.0
    """A hot state must last this long. Longer than one burst of a CV2 8 trace (SlackFit absorbs those alone),
    shorter than a worker's start (about 5-10 s here: Triton and the supernet loading), so capacity comes in
    time for a surge that lasts."""
    down_hold_s: float = 30.0
    """A cold state must last this long. INFaaS waits for 10 consecutive votes; here 30 one-second samples. A
    wrong step down costs a worker start (5-10 s of traded accuracy) and a wrong hold costs 30 worker-seconds,
    so holding is the cheaper mistake."""
    regret_fraction: float = 0.8
    """A worker added for a demand D is kept while the demand stays above this fraction of D."""
    memory_s: float = 1800.0
    """How long the loop keeps samples, and so how long the regret rule and the reversal back-off remember a
    step: 30 minutes (1,800 samples; ``decide`` walks them in well under a millisecond)."""
    min_requests: int = 20
    """A sample with fewer requests answered in time says nothing about accuracy (it is judged on misses and
    demand only)."""
    accuracy_min_demand: float = 0.5
    """An accuracy shortfall counts (hot, and not cold) only at this demand or above. Below it the pool has slack
    for the most accurate subnet on every request, so a shortfall comes from latency (a slow or throttled worker,
    a latency model still pessimistic after a surge), not from too few workers, and another worker would not
    restore it. Without this floor, bench-surge's pool (0.3-core workers) grew before the surge at 0.3x load and,
    after it, stayed at the maximum: SlackFit's accuracy at 0.3x stayed 0.01 below the best, so no sample was
    cold."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_workers <= self.max_workers:
            raise ValueError(f"need 1 <= min_workers <= max_workers, got {self.min_workers}, {self.max_workers}")
        if not 0 < self.down_demand < self.up_demand:
            raise ValueError(f"need 0 < down_demand < up_demand, got {self.down_demand}, {self.up_demand}")
        if self.accuracy_gap < 0 or not 0 <= self.max_miss_ratio < 1:
            raise ValueError(f"need accuracy_gap >= 0 and 0 <= max_miss_ratio < 1, got {self.accuracy_gap}, "
                             f"{self.max_miss_ratio}")
        if self.up_hold_s <= 0 or self.down_hold_s <= 0:
            raise ValueError(f"need up_hold_s, down_hold_s > 0, got {self.up_hold_s}, {self.down_hold_s}")
        if self.memory_s < max(self.up_hold_s, self.down_hold_s):
            raise ValueError(f"memory_s ({self.memory_s}) must cover the holds ({self.up_hold_s}, {self.down_hold_s})")
        if not 0 <= self.accuracy_min_demand:
            raise ValueError(f"need accuracy_min_demand >= 0, got {self.accuracy_min_demand}")
        if not 0 < self.regret_fraction <= 1 or self.min_requests < 1:
            raise ValueError(f"need 0 < regret_fraction <= 1 and min_requests >= 1, got {self.regret_fraction}, "
                             f"{self.min_requests}")

    def clamp(self, n: int) -> int:
        return max(self.min_workers, min(self.max_workers, n))


@dataclass(frozen=True)
class Sample:
    """One interval of the live engine, ending at ``t_ms``."""
    t_ms: float
    interval_ms: float
    target: int
    """The target in force during the interval."""
    workers: int
    """Workers in the pool (admitted, not draining) at the end of the interval."""
    ok: int = 0
    """Requests answered in time."""
    missed: int = 0
    """Requests answered late, dropped as infeasible, refused as overloaded or failed."""
    accuracy_sum: float = 0.0
    """Sum of the profiled accuracy of the subnets that answered the ``ok`` requests."""
    rows: int = 0
    """Rows (images) the workers ran in the interval, whatever subnet ran them."""
    best_accuracy: float = 1.0
    """The most accurate subnet's profiled accuracy."""
    best_cost_ms: float = 0.0
    """Per-row time of the most accurate subnet at its most efficient batch (the profile the engine plans
    with)."""

    @property
    def answered(self) -> int:
        return self.ok + self.missed

    @property
    def demand(self) -> float:
        """The interval's rows on the most accurate subnet, over the workers' time (1.0: the pool is full)."""
        capacity = self.interval_ms * max(self.workers, 1)
        return self.rows * self.best_cost_ms / capacity if capacity > 0 else 0.0

    @property
    def miss_ratio(self) -> float:
        return self.missed / self.answered if self.answered else 0.0

    def accuracy(self, min_requests: int) -> float | None:
        return self.accuracy_sum / self.ok if self.ok >= min_requests else None


@dataclass(frozen=True)
class ModelLoad:
    """One served model's part of an interval, when one pool serves several models (``serve --models``)."""
    ok: int
    """Its requests answered in time."""
    rows: int
    """Rows of it the workers ran."""
    best_accuracy: float
    """Its most accurate subnet's profiled accuracy."""
    best_cost_ms: float
    """Per-row time of its most accurate subnet at that subnet's most efficient batch."""


def combined_sample(t_ms: float, interval_ms: float, target: int, workers: int, missed: int, accuracy_sum: float,
                    loads: Sequence[ModelLoad]) -> Sample:
    """One Sample of an interval in which the pool served several models, so that every rule above reads it
    unchanged. With one model it is that model's Sample, exactly.

    The workers are shared (every worker loads every model), so a worker added or removed changes the capacity
    of all of them at once; the rules therefore judge the pool as a whole, each model weighted by its traffic:

    - **demand** adds up: the time every model's rows would take on that model's most accurate subnet, over the
      workers' time (``rows`` is the total, ``best_cost_ms`` the row-weighted mean cost). 1.0 still means the pool
      could just serve everything on the most accurate subnets, and ``demand * n / (n - 1)`` still predicts one
      worker fewer, so the up, down and regret rules keep their meaning.
    - **accuracy gap**: each request answered in time is measured against its own model's best subnet, and the
      shortfalls are averaged over those requests: ``best_accuracy`` is the mean best accuracy of the ``ok``
      requests, so ``best_accuracy - accuracy`` is the mean per-request shortfall. With one model this is the
      single-model rule. A per-model rule combined by "any model" was rejected: a model with a handful of
      requests a second (``min_requests`` would then be per model, or counted on too few requests) could alone
      hold the shared pool at its maximum, and a worker added for it serves mostly the other models.
    - **misses** are counted over every request of every model, as before.
    """
    if len(loads) == 1:
        m = loads[0]
        return Sample(t_ms, interval_ms, target, workers, ok=m.ok, missed=missed, accuracy_sum=accuracy_sum,
                      rows=m.rows, best_accuracy=m.best_accuracy, best_cost_ms=m.best_cost_ms)
    if not loads:
        raise ValueError("a sample needs at least one model")
    ok = sum(m.ok for m in loads)
    rows = sum(m.rows for m in loads)
    best = (sum(m.ok * m.best_accuracy for m in loads) / ok if ok
            else max(m.best_accuracy for m in loads))
    cost = (sum(m.rows * m.best_cost_ms for m in loads) / rows if rows
            else max(m.best_cost_ms for m in loads))
    return Sample(t_ms, interval_ms, target, workers, ok=ok, missed=missed, accuracy_sum=accuracy_sum, rows=rows,
                  best_accuracy=best, best_cost_ms=cost)


@dataclass(frozen=True)
class Decision:
    target: int
    direction: str
    """up, down, or hold."""
    reason: str
    """Why, for the log; ``kind`` is its bounded label for metrics."""
    kind: str = ""
    """accuracy, misses, demand (up); idle (down); waiting, bound, or empty (hold)."""


def hot_reason(s: Sample, cfg: AutoscaleConfig) -> tuple[str, str] | None:
    """Why ``s`` asks for another worker (kind, text), or None."""
    acc = s.accuracy(cfg.min_requests)
    if acc is not None and acc < s.best_accuracy - cfg.accuracy_gap and s.demand >= cfg.accuracy_min_demand:
        return "accuracy", (f"served accuracy {acc:.4f} below the best subnet's {s.best_accuracy:.4f} "
                            f"- {cfg.accuracy_gap:g}")
    if s.answered and s.miss_ratio > cfg.max_miss_ratio:
        return "misses", f"{s.miss_ratio:.1%} of requests missed (> {cfg.max_miss_ratio:.1%})"
    if s.demand > cfg.up_demand:
        return "demand", f"demand {s.demand:.2f} of the pool's capacity on the best subnet (> {cfg.up_demand:g})"
    return None


def is_cold(s: Sample, cfg: AutoscaleConfig) -> bool:
    """``s`` would be served as well by one worker fewer."""
    if s.workers <= 1 or hot_reason(s, cfg) is not None:
        return False
    return s.demand * s.workers / (s.workers - 1) < cfg.down_demand


def _held(window: Sequence[Sample], now_ms: float, hold_s: float,
          pred: Callable[[Sample], bool]) -> list[Sample] | None:
    """The settled samples of the last ``hold_s`` if they cover it and all satisfy ``pred``, else None."""
    start = now_ms - hold_s * 1000
    recent = [s for s in window if s.t_ms > start]
    if not recent or recent[0].t_ms - recent[0].interval_ms > start + 1e-6:  # the window does not cover the hold
        return None
    return recent if all(pred(s) for s in recent) else None


def _settled(window: Sequence[Sample], target: int) -> list[Sample]:
    """Samples since the last change of target in which the workers in the pool equalled it."""
    i = len(window)
    while i > 0 and window[i - 1].target == target:
        i -= 1
    return [s for s in window[i:] if s.workers == target]


def _growth_demand(window: Sequence[Sample], n: int, hold_s: float) -> float | None:
    """The mean demand, counted on ``n - 1`` workers, over the hold before the pool last grew to ``n`` (from
    ``n - 1`` or fewer; None: the window does not show it)."""
    for i in range(len(window) - 1, 0, -1):
        prev = window[i - 1].target
        if window[i].target == n and prev < n:
            t = window[i - 1].t_ms
            before = [s for s in window[:i] if s.target == prev and s.workers == prev and s.t_ms > t - hold_s * 1000]
            return sum(s.demand * prev / (n - 1) for s in before) / len(before) if before else None
    return None


def wanted(hot: Sequence[Sample], target: int, cfg: AutoscaleConfig) -> int:
    """Workers the hot hold asks for: one more, or as many as the lowest demand of the hold needs below
    ``up_demand`` (within the maximum)."""
    need = math.ceil(min(s.demand for s in hot) * target / cfg.up_demand - 1e-9)
    return min(cfg.max_workers, max(target + 1, need))


def reversals(window: Sequence[Sample]) -> int:
    """Steps down in the window that the next change of target undid."""
    changes = [b.target - a.target for a, b in zip(window, window[1:]) if b.target != a.target]
    return sum(1 for a, b in zip(changes, changes[1:]) if a < 0 < b)


def decide(window: Sequence[Sample], now_ms: float, cfg: AutoscaleConfig) -> Decision:
    """The target worker count at ``now_ms`` given the samples so far (oldest first; the last one's target is
    the target in force)."""
    if not window:
        return Decision(cfg.min_workers, "hold", "no samples yet", "")
    target = window[-1].target
    if target != cfg.clamp(target):
        n = cfg.clamp(target)
        return Decision(n, "up" if n > target else "down", f"target {target} outside [{cfg.min_workers}, "
                        f"{cfg.max_workers}]", "bound")
    last = window[-1]
    if last.workers != target:
        return Decision(target, "hold", f"waiting: {last.workers} of {target} workers in the pool", "waiting")
    settled = _settled(window, target)
    hot = _held(settled, now_ms, cfg.up_hold_s, lambda s: hot_reason(s, cfg) is not None)
    if hot is not None:
        reason = hot_reason(hot[-1], cfg)
        assert reason is not None  # every held sample satisfied it
        kind, why = reason
        if target >= cfg.max_workers:
            return Decision(target, "hold", f"at the maximum of {cfg.max_workers} workers although {why}", "bound")
        n = wanted(hot, target, cfg)
        more = f"; demand {min(s.demand for s in hot):.2f} on {target} needs {n}" if n > target + 1 else ""
        return Decision(n, "up", f"{why} for {cfg.up_hold_s:g} s{more}", kind)
    down_hold_s = cfg.down_hold_s * 2 ** min(reversals(window), 4)
    cold = _held(settled, now_ms, down_hold_s, lambda s: is_cold(s, cfg))
    if cold is not None and target > cfg.min_workers:
        demand = sum(s.demand for s in cold) / len(cold)
        grew_at = _growth_demand(window, target, cfg.up_hold_s)
        if grew_at is not None:
            now_on_fewer = demand * target / (target - 1)
            if now_on_fewer >= cfg.regret_fraction * grew_at:
                return Decision(target, "hold", f"demand {now_on_fewer:.2f} on {target - 1} workers is not below "
                                f"{cfg.regret_fraction:g} x {grew_at:.2f}, the demand that added worker {target}", "")
        return Decision(target - 1, "down", f"demand {demand * target / (target - 1):.2f} on {target - 1} "
                        f"workers below {cfg.down_demand:g}, accuracy and misses in bounds, for {down_hold_s:g} s",
                        "idle")
    return Decision(target, "hold", "", "")
