"""INFaaS (Romero et al., USENIX ATC'21) variant selection, over separate models.

INFaaS is "model-less": a request states an accuracy floor and a latency target, and the system
picks a model *variant* for it, minimising cost subject to both. Variants are separate models;
one that is not loaded must be loaded first, and that load is on the request's critical path.
Per decision, for the earliest-deadline request (the head) with slack ``S``:

1. Candidates are the subnets the head admits (``min_accuracy``, a pinned ``subnet``).
2. A *loaded* candidate whose profiled latency fits ``S`` is used if there is one: the cheapest
   (lowest latency) such. INFaaS prefers running variants and never loads while one fits.
3. Otherwise the cheapest candidate whose latency plus ``load_ms`` fits ``S``.
4. Otherwise (a load does not fit the slack, the usual case: loads take seconds, SLOs are ms) the
   cheapest candidate whose latency alone fits ``S``: it is loaded anyway, the head is late by
   about the load, and later requests find it loaded. This is the cost SubNetAct removes.

INFaaS does not trade spare slack for accuracy: at low load it still serves the cheapest variant
that meets the floor, so its served accuracy follows the requests' ``min_accuracy``. The batch is
the largest profiled batch the queue fills that still meets the head's deadline (as in Fixed),
counting the load when one is needed; ``Batch.expected_ms`` includes the load.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..core.edf_queue import Pending
from ..core.profile import Profile, SubnetProfile
from .base import Batch, Decision, Policy, WorkerView, drop_infeasible_head, fill


@dataclass(frozen=True)
class _Option:
    tier: int
    """0: loaded and fits; 1: needs a load and fits with it; 2: needs a load that breaks the slack."""
    cost_ms: float
    subnet: SubnetProfile
    batch: int
    load_ms: float

    @property
    def key(self):
        return (self.tier, self.cost_ms, -self.subnet.accuracy, self.subnet.name)


def _batch(queue: Sequence[Pending], start: int, s: SubnetProfile, budget_ms: float, profile: Profile) -> int | None:
    """Largest profiled batch of ``s`` the queue fills within ``budget_ms`` (at least the head's
    rows); None if not even the head fits."""
    head_rows = queue[start].rows
    fits = [b for b in sorted(profile.batch_sizes) if b >= head_rows and s.latency_ms[b] <= budget_ms]
    if not fits:
        return None
    queued = 0
    for p in queue[start:]:
        if p.admits(s.name, s.accuracy):
            queued += p.rows
            if queued >= fits[-1]:
                break
    target = min(fits[-1], queued)
    return next(b for b in fits if b >= target)


@dataclass(frozen=True)
class InfaasPolicy(Policy):
    """``fastest_ms`` is the base's (the fastest admissible variant, loads ignored): what a worker that has it
    loaded can do, which is what decides whether a request can still be served at all."""

    load_ms: float = 5000.0
    """Expected time to load a variant that is not loaded on the worker, ms (the bench measures
    about 4.5 s per variant on 2 CPU cores)."""
    name: str = "infaas"

    def __post_init__(self):
        if not (isinstance(self.load_ms, (int, float)) and math.isfinite(self.load_ms) and self.load_ms >= 0):
            raise ValueError(f"infaas load_ms must be a finite number >= 0, got {self.load_ms!r}")

    def options(self, queue: Sequence[Pending], start: int, slack_ms: float, profile: Profile,
                loaded: frozenset[str] | None) -> list[_Option]:
        """Every candidate variant for the head ``queue[start]``, best first."""
        head = queue[start]
        out = []
        for s in profile.subnets:
            if not head.admits(s.name, s.accuracy):
                continue
            is_loaded = loaded is None or s.name in loaded
            load = 0.0 if is_loaded else self.load_ms
            b, tier = _batch(queue, start, s, slack_ms - load, profile), 0 if is_loaded else 1
            if b is None and not is_loaded:
                b, tier = _batch(queue, start, s, slack_ms, profile), 2
            if b is not None:
                out.append(_Option(tier, s.at(head.rows), s, b, load))
        return sorted(out, key=lambda o: o.key)

    def decide(self, queue: Sequence[Pending], now_ms: float, profile: Profile, worker: WorkerView) -> Decision:
        dropped, start = drop_infeasible_head(self, queue, now_ms, profile)
        if start >= len(queue):
            return Decision(None, dropped)
        opts = self.options(queue, start, queue[start].deadline_ms - now_ms, profile, worker.loaded)
        if not opts and profile.likely is not profile:  # fits only at the likely latency: best effort
            opts = self.options(queue, start, queue[start].deadline_ms - now_ms, profile.likely, worker.loaded)
        if not opts:  # cannot happen after drop_infeasible_head; kept as a guard
            return Decision(None, dropped + (queue[start].id,))
        o = opts[0]
        ids = fill(queue, start, o.subnet.name, o.subnet.accuracy, o.batch)
        return Decision(Batch(ids, o.subnet.name, o.subnet.latency_ms[o.batch] + o.load_ms), dropped)
