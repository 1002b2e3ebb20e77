"""Fixed: one subnet for every request, EDF, the largest profiled batch that still meets the
earliest deadline (the scheduler-side counterpart of a single pinned Triton model)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..core.edf_queue import Pending
from ..core.profile import Profile
from .base import Batch, Decision, Policy, WorkerView, feasible_from, fill, one_subnet, one_subnet_fastest_ms


@dataclass
class Fixed(Policy):
    subnet: str
    name: str = "fixed"
    pipelines: bool = True

    def _sub(self, profile: Profile):
        return one_subnet(profile, self.subnet, self.name)

    def fastest_ms(self, req: Pending, profile: Profile) -> float | None:
        return one_subnet_fastest_ms(req, profile, self.subnet, self.name)

    def decide(self, queue: Sequence[Pending], now_ms: float, profile: Profile, worker: WorkerView) -> Decision:
        dropped, start = feasible_from(self, queue, now_ms, profile, worker)
        if start >= len(queue):
            return Decision(None, dropped)
        slack = queue[start].deadline_ms - worker.start_ms(now_ms)
        for view in (profile, profile.likely):  # fits only at the likely latency: best effort
            s = self._sub(view)
            fits = [b for b in view.batch_sizes if s.latency_ms[b] <= slack and b >= queue[start].rows]
            if fits:
                break
        b = max(fits)
        queued_rows = sum(p.rows for p in queue[start:start + profile.max_batch])
        b = next((x for x in sorted(fits) if x >= min(b, queued_rows)), b)
        ids = fill(queue, start, s.name, s.accuracy, b)
        return Decision(Batch(ids, s.name, s.latency_ms[b]), dropped)
