"""What the request life cycle asks of a latency model, whichever it is: learn from each batch that ran,
and give policies the profile to plan with (policies stay pure: the view is an argument to them).

Kinds (``serve --latency-model``):
- ``affine`` (latency_affine.py): observed = scale x profiled + offset, plus the residual's quantile in ms;
- ``quantile`` (latency_model.py): a quantile of observed/profiled per batch size;
- ``ewma`` (latency_tracker.py): the profile scaled by a running mean of that ratio (before issue 13);
- ``off``: the profile as measured."""
from __future__ import annotations

import math
from typing import Protocol

from .latency_affine import AffineLatencyModel
from .latency_model import LatencyModel, LatencyModelConfig, ScaledProfiles
from .latency_tracker import LatencyTracker
from .profile import Profile

KINDS = ("affine", "quantile", "ewma", "off")


class LatencyView(Protocol):
    @property
    def observations(self) -> int: ...
    forgets: bool
    """Whether the life cycle should make it ``forget`` when it judges every request infeasible while
    nothing runs (a model that learns only from batches would otherwise never see the host recover)."""

    def observe(self, rows: int, observed_ms: float, profiled_ms: float) -> None: ...
    def view(self) -> Profile: ...
    def median_view(self) -> Profile:
        """The profile at the latency a batch most likely takes (the planning view is at a high quantile):
        what admission shedding refuses by, so it refuses only what most likely cannot be served."""
        ...
    def median_ms(self, rows: int, profiled_ms: float) -> float: ...
    def factor(self) -> float: ...
    def forget(self) -> None: ...


class PerBatchQuantile:
    forgets = True

    def __init__(self, base: Profile, cfg: LatencyModelConfig):
        self.base, self.model, self._scaled = base, LatencyModel(base.batch_sizes, cfg), ScaledProfiles(base)
        self._view = base
        self._paired: dict[tuple[int, int], tuple[Profile, Profile, Profile]] = {}
        """(planning view, median view) -> the planning view carrying that median, memoised: a new profile
        object per batch would make every policy rebuild its memoised tables per batch."""

    @property
    def observations(self) -> int:
        return self.model.observations

    def observe(self, rows: int, observed_ms: float, profiled_ms: float) -> None:
        self.model.observe(rows, observed_ms, profiled_ms)
        view, median = self._scaled.get(self.model.factors()), self.median_view()
        if view is median:
            self._view = view
            return
        key = (id(view), id(median))
        hit = self._paired.get(key)
        if hit is None:
            if len(self._paired) >= 64:
                self._paired.clear()
            hit = self._paired[key] = (view, median, view.with_median(median))  # holding both keeps the ids unique
        self._view = hit[2]

    def view(self) -> Profile:
        return self._view

    def median_view(self) -> Profile:
        s = self.model.cfg.step
        return self._scaled.get({b: round(math.ceil(self.model.median_factor(b) / s - 1e-9) * s, 4)
                                 for b in self.base.batch_sizes})

    def median_ms(self, rows: int, profiled_ms: float) -> float:
        return profiled_ms * self.model.median_factor(rows)

    def factor(self) -> float:
        return self.model.factor(self.base.max_batch)

    def forget(self) -> None:
        self.model.forget()
        self.model.observations = 0
        self._view = self.base


class Ewma:
    forgets = False

    def __init__(self, base: Profile):
        self.base, self.tracker, self._scaled = base, LatencyTracker(), ScaledProfiles(base)
        self.observations = 0
        self._view = base

    def observe(self, rows: int, observed_ms: float, profiled_ms: float) -> None:
        self.observations += 1
        self.tracker.observe(observed_ms, profiled_ms)
        f = self.tracker.quantised
        self._view = self._scaled.get({b: f for b in self.base.batch_sizes})

    def view(self) -> Profile:
        return self._view

    def median_view(self) -> Profile:
        return self._view

    def median_ms(self, rows: int, profiled_ms: float) -> float:
        return profiled_ms * self.tracker.factor

    def factor(self) -> float:
        return self.tracker.quantised

    def forget(self) -> None:
        pass


class Off:
    forgets = False
    observations = 0

    def __init__(self, base: Profile):
        self.base = base

    def observe(self, rows: int, observed_ms: float, profiled_ms: float) -> None:
        pass

    def view(self) -> Profile:
        return self.base

    def median_view(self) -> Profile:
        return self.base

    def median_ms(self, rows: int, profiled_ms: float) -> float:
        return profiled_ms

    def factor(self) -> float:
        return 1.0

    def forget(self) -> None:
        pass


def build(kind: str, base: Profile, cfg: LatencyModelConfig | None = None) -> LatencyView:
    """The latency model of ``kind`` (KINDS) over ``base``."""
    cfg = cfg or LatencyModelConfig()
    if kind == "affine":
        return AffineLatencyModel(base, cfg)
    if kind == "quantile":
        return PerBatchQuantile(base, cfg)
    if kind == "ewma":
        return Ewma(base)
    if kind == "off":
        return Off(base)
    raise ValueError(f"latency model must be one of {', '.join(KINDS)}, got {kind!r}")
