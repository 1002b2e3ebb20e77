"""Cascade policy (CascadeServe) on the supernet, driven by an offline gear plan.

Each request starts on the current gear's first stage; the engine escalates an unsure answer
(core/escalation.py, with this policy's stage thresholds) and the re-queued request then runs on the
gear's next stage. Batches hold requests bound for the same subnet, first-stage and escalated
alike, up to the gear's batch trigger. The gear follows the arrival rate (core/gears.py): accurate
cascades when load is low, cheap ones in bursts.

Deadlines stay the law: if a request's planned stage no longer fits its slack, it runs on the
most accurate admissible subnet that does, and requests no subnet can serve in time are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ..core.edf_queue import Pending
from ..core.gears import Gear, GearPlan, GearSwitcher, RateWindow
from ..core.profile import Profile, ProfileError, SubnetProfile
from .base import Batch, Decision, Policy, WorkerView, drop_infeasible_head, fill


@dataclass
class CascadePolicy(Policy):
    plan: GearPlan
    window_ms: float = 1000.0
    """Arrival-rate window."""
    down_hold_ms: float = 2000.0
    hysteresis: float = 0.1
    name: str = "cascade"
    rates: RateWindow = field(init=False, repr=False)
    switcher: GearSwitcher = field(init=False, repr=False)

    def __post_init__(self):
        self._memo_key, self._memo = None, ()
        self.rates = RateWindow(self.window_ms)
        self.switcher = GearSwitcher(self.plan, self.down_hold_ms, self.hysteresis)

    def check(self, profile: Profile) -> None:
        """Start-up check: every subnet the plan names is in the profile."""
        missing = sorted(self.plan.subnets() - {s.name for s in profile.subnets})
        if missing:
            raise ProfileError(f"gear plan names subnets the profile does not list: {missing}; re-run "
                               "'superserve plan' with this profile")

    @property
    def confidence_measure(self) -> str:
        return self.plan.measure

    @property
    def gear(self) -> Gear:
        return self.switcher.gear

    def on_arrival(self, now_ms: float, rows: int = 1) -> None:
        self.rates.add(now_ms, rows)

    def escalation_threshold(self, subnet: str) -> float | None:
        """The current gear's threshold for answers from ``subnet`` (None: not an escalating stage)."""
        return next((s.threshold for s in self.gear.stages if s.subnet == subnet), None)

    def _stages(self, profile: Profile) -> tuple[SubnetProfile, ...]:
        """The current gear's stages as profile entries (memoised: decide runs per batch)."""
        key = (id(profile), self.switcher.current)
        if self._memo_key != key:
            self._memo_key = key
            self._memo = tuple(s for s in (profile.get(st.subnet) for st in self.gear.stages) if s is not None)
        return self._memo

    def slowdown(self, profile: Profile) -> float:
        """How much slower ``profile`` is than the one the plan was made with (1 if unknown)."""
        ref = self.plan.reference
        s = profile.get(ref[0]) if ref else None
        return s.at(ref[1]) / ref[2] if s is not None and ref[2] > 0 else 1.0

    def target(self, req: Pending, profile: Profile) -> SubnetProfile | None:
        """The subnet the gear plans for ``req``: its first stage it admits (escalated requests admit
        only stages above the one that answered), else the least accurate subnet it admits."""
        for s in self._stages(profile):
            if req.admits(s.name, s.accuracy):
                return s
        return next((s for s in profile.subnets if req.admits(s.name, s.accuracy)), None)

    def advance(self, now_ms: float, profile: Profile) -> None:
        """Switch gear by the arrival rate measured up to ``now_ms`` (scaled by how much slower ``profile``
        runs than the plan's reference); the driver calls this before every ``decide``."""
        self.switcher.update(self.rates.rate(now_ms) * self.slowdown(profile), now_ms)

    def decide(self, queue: Sequence[Pending], now_ms: float, profile: Profile, worker: WorkerView) -> Decision:
        gear = self.gear
        dropped, start = drop_infeasible_head(self, queue, now_ms, profile)
        if start >= len(queue):
            return Decision(None, dropped)
        head = queue[start]
        slack = head.deadline_ms - now_ms
        sub = self.target(head, profile)
        if sub is None or sub.at(head.rows) > slack:  # the plan's stage is too slow now: best that fits
            if not any(head.admits(s.name, s.accuracy) and s.at(head.rows) <= slack for s in profile.subnets):
                profile = profile.likely  # fits only at the likely latency: best effort
            sub = max((s for s in profile.subnets if head.admits(s.name, s.accuracy) and s.at(head.rows) <= slack),
                      key=lambda s: s.accuracy)
        fits = [b for b in profile.batch_sizes if head.rows <= b <= max(gear.max_batch, head.rows)
                and sub.at(b) <= slack]
        rows = max(fits, default=head.rows)

        def rides(p: Pending) -> bool:  # the head; others bound for this subnet or a more accurate one
            if p.id == head.id:  # even if its best fit is more accurate than its planned stage
                return True
            t = self.target(p, profile)
            return t is not None and t.accuracy >= sub.accuracy

        ids = fill(queue, start, sub.name, sub.accuracy, rows, rides)
        taken = set(ids)
        return Decision(Batch(ids, sub.name, sub.at(sum(p.rows for p in queue[start:] if p.id in taken))), dropped)
