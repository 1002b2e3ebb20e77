"""Clipper's adaptive batching (Crankshaw et al., NSDI'17) as a baseline: one fixed subnet, and a
batch-size cap tuned by AIMD on the batch's processing latency — grow the cap by ``step`` after a
batch that ran within the SLO, cut it by ``backoff`` (10%) after one that did not. Queueing delay is
not part of the signal (as in Clipper: otherwise a backlog would pin the cap at 1 and make it worse).
Like Clipper it never drops a queued request early: what cannot make its deadline is served late.

``decide`` is pure given the cap; the cap changes only in ``observe``, which the engine calls when a
batch completes (the feedback loop is the algorithm)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from ..core.edf_queue import Pending
from ..core.profile import Profile
from .base import Batch, Decision, Policy, WorkerView, fill, one_subnet, one_subnet_fastest_ms


@dataclass(frozen=True)
class AIMD:
    """The additive-increase / multiplicative-decrease rule on a batch-size cap."""

    step: float = 1.0
    backoff: float = 0.9
    min_cap: int = 1
    max_cap: int = 64

    def __post_init__(self):
        if self.step <= 0 or not 0 < self.backoff < 1 or not 1 <= self.min_cap <= self.max_cap:
            raise ValueError(f"AIMD needs step > 0, 0 < backoff < 1, 1 <= min_cap <= max_cap; got step {self.step}, "
                             f"backoff {self.backoff}, caps {self.min_cap}..{self.max_cap}")

    def next_cap(self, cap: float, met: bool) -> float:
        if met:
            return min(float(self.max_cap), cap + self.step)
        return max(float(self.min_cap), math.floor(cap * self.backoff))


@dataclass
class Clipper(Policy):
    subnet: str
    aimd: AIMD = field(default_factory=AIMD)
    cap: float = 1.0
    """Current batch-size cap (rows)."""
    name: str = "clipper"
    early_drop: bool = False
    """Clipper serves late rather than dropping; the engine's deadline sweep skips this policy."""

    def _sub(self, profile: Profile):
        return one_subnet(profile, self.subnet, self.name)

    def fastest_ms(self, req: Pending, profile: Profile) -> float | None:
        return one_subnet_fastest_ms(req, profile, self.subnet, self.name)

    def decide(self, queue: Sequence[Pending], now_ms: float, profile: Profile, worker: WorkerView) -> Decision:
        if not queue:
            return Decision()
        s = self._sub(profile)
        rows = max(int(self.cap), queue[0].rows)
        ids = fill(queue, 0, s.name, s.accuracy, min(rows, profile.max_batch))
        n = sum(p.rows for p in queue if p.id in set(ids))
        return Decision(Batch(ids, s.name, s.at(n)))

    def observe(self, batch: Batch, latency_ms: float, slo_ms: float) -> None:
        self.cap = self.aimd.next_cap(self.cap, latency_ms <= slo_ms)
