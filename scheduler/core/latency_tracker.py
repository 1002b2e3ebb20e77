"""How much slower (or faster) than profiled the workers run right now.

The profile is measured on an idle machine. Under load the same forward runs slower: on a CPU host
the load generator, the scheduler and Triton share the cores, and on a GPU host co-located jobs
interfere. A policy that plans with idle latencies then picks subnets and batches that finish late.
The tracker keeps an exponentially weighted mean of observed/profiled batch latency; the engine
hands policies the profile scaled by it (quantised, so policies see a handful of distinct profiles).
It is state in the engine, not in the policy: policies stay pure functions of the profile they get."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LatencyTracker:
    alpha: float = 0.1
    """Weight of each new batch in the mean."""
    lo: float = 0.5
    hi: float = 4.0
    """Clamp of the factor (one pathological batch must not freeze the scheduler on the smallest subnet)."""
    step: float = 0.05
    factor: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1 or not 0 < self.lo <= 1 <= self.hi or self.step <= 0:
            raise ValueError(f"LatencyTracker needs 0 < alpha <= 1, 0 < lo <= 1 <= hi, step > 0; got alpha "
                             f"{self.alpha}, lo {self.lo}, hi {self.hi}, step {self.step}")

    def observe(self, observed_ms: float, profiled_ms: float) -> None:
        if profiled_ms <= 0:
            return
        ratio = min(self.hi, max(self.lo, observed_ms / profiled_ms))
        self.factor = (1 - self.alpha) * self.factor + self.alpha * ratio

    @property
    def quantised(self) -> float:
        return round(round(self.factor / self.step) * self.step, 4)
