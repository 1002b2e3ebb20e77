"""Gear plans (CascadeServe): which cascade to run at which arrival rate, and switching between
them online. A *gear* is a cascade (ordered subnets with confidence thresholds) plus the largest
batch it may form, planned offline (``superserve plan``, offline/planner.py) for a range of arrival rates.

Online, ``RateWindow`` measures the arrival rate over a short sliding window and ``GearSwitcher``
picks the gear with hysteresis: it shifts to a faster gear at once when the rate leaves the
current gear's range upwards (the SLO is at stake), and back to a more accurate one only after the
rate has stayed clearly below the range for a hold time (no flapping on bursty traffic). Both take
the time as an argument, so the simulator and tests drive them with a virtual clock.
"""
from __future__ import annotations

import bisect
import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class Stage:
    subnet: str
    threshold: float | None
    """Escalate answers whose confidence is below this; None on the last stage."""


@dataclass(frozen=True)
class Gear:
    min_rps: float
    max_rps: float
    stages: tuple[Stage, ...]
    max_batch: int
    """Largest batch this gear forms (CascadeServe's batch trigger)."""
    accuracy: float | None = None
    """Planned (validation) accuracy of the cascade, for reporting."""

    @property
    def name(self) -> str:
        return " > ".join(s.subnet + (f"@{s.threshold:g}" if s.threshold is not None else "") for s in self.stages)


@dataclass(frozen=True)
class GearPlan:
    gears: tuple[Gear, ...]
    """Ascending arrival-rate ranges; the last one also serves every rate above it."""
    measure: str = "max_softmax"
    """Confidence measure the thresholds apply to: max_softmax or margin."""
    slo_ms: float | None = None
    supernet: str | None = None
    reference: tuple[str, int, float] | None = None
    """(subnet, batch, latency_ms) of one profile point as planned. Online, the profile the policy is given
    may be scaled (the engine's observed/profiled latency); the rate is looked up scaled the same way,
    since a system running 2x slower than planned behaves like the plan at 2x the rate."""

    def __post_init__(self) -> None:
        if not self.gears:
            raise PlanError("gear plan has no gears (was every rate infeasible for its SLO?)")
        if self.measure not in ("max_softmax", "margin"):
            raise PlanError(f"plan measure must be max_softmax or margin, not {self.measure!r}")
        for a, b in zip(self.gears, self.gears[1:]):
            if b.min_rps < a.min_rps:
                raise PlanError(f"gears must be in ascending rate order: {a.min_rps} then {b.min_rps}")
        for g in self.gears:
            if not g.stages or g.stages[-1].threshold is not None or g.max_batch < 1:
                raise PlanError(f"gear {g.name}: needs >= 1 stage, no threshold on the last, max_batch >= 1")

    def index(self, rate_rps: float) -> int:
        """The gear planned for ``rate_rps``."""
        return max(0, bisect.bisect_right([g.min_rps for g in self.gears], rate_rps) - 1)

    def subnets(self) -> set[str]:
        return {s.subnet for g in self.gears for s in g.stages}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GearPlan":
        try:
            gears = tuple(Gear(float(g["min_rps"]), float(g["max_rps"]),
                               tuple(Stage(s["subnet"], None if s.get("threshold") is None else float(s["threshold"]))
                                     for s in g["stages"]), int(g["max_batch"]), g.get("accuracy"))
                          for g in d["gears"])
        except (KeyError, TypeError) as e:
            raise PlanError(f"gear plan is missing field {e}") from None
        ref = d.get("reference")
        ref = (ref["subnet"], int(ref["batch"]), float(ref["latency_ms"])) if ref else None
        return cls(gears, d.get("measure", "max_softmax"), d.get("slo_ms"), d.get("supernet"), ref)

    @classmethod
    def load(cls, path: str | Path) -> "GearPlan":
        path = Path(path)
        if not path.exists():
            raise PlanError(f"no gear plan at {path}; make one with 'superserve plan'")
        return cls.from_dict(json.loads(path.read_text()))


class RateWindow:
    """Arrivals (rows) per second over the last ``window_ms``."""

    def __init__(self, window_ms: float = 1000.0):
        if window_ms <= 0:
            raise ValueError(f"window_ms must be > 0, got {window_ms}")
        self.window_ms = window_ms
        self._events: deque[tuple[float, int]] = deque()
        self._count = 0

    def add(self, now_ms: float, n: int = 1) -> None:
        self._events.append((now_ms, n))
        self._count += n
        self._expire(now_ms)

    def rate(self, now_ms: float) -> float:
        self._expire(now_ms)
        return self._count * 1000.0 / self.window_ms

    def _expire(self, now_ms: float) -> None:
        while self._events and self._events[0][0] <= now_ms - self.window_ms:
            self._count -= self._events.popleft()[1]


class GearSwitcher:
    """The current gear; up at once, down only after ``down_hold_ms`` below (1 - hysteresis) x the
    current gear's lower edge. Starts in the most accurate gear."""

    def __init__(self, plan: GearPlan, down_hold_ms: float = 2000.0, hysteresis: float = 0.1):
        if down_hold_ms < 0 or not 0 <= hysteresis < 1:
            raise ValueError(f"down_hold_ms must be >= 0 and hysteresis in [0, 1), got {down_hold_ms}, {hysteresis}")
        self.plan, self.down_hold_ms, self.hysteresis = plan, down_hold_ms, hysteresis
        self.current = 0
        self.switches = 0
        self._below_since: float | None = None

    @property
    def gear(self) -> Gear:
        return self.plan.gears[self.current]

    def update(self, rate_rps: float, now_ms: float) -> Gear:
        target = self.plan.index(rate_rps)
        if target > self.current:
            self._switch(target)
        elif target < self.current and rate_rps < self.gear.min_rps * (1 - self.hysteresis):
            if self._below_since is None:
                self._below_since = now_ms
            elif now_ms - self._below_since >= self.down_hold_ms:
                self._switch(target)
        else:
            self._below_since = None
        return self.gear

    def _switch(self, target: int) -> None:
        self.current, self._below_since = target, None
        self.switches += 1
