"""The latency/accuracy profile: the single source of truth the scheduler reads (docs/design.md).

``profiles/<hardware>.json`` holds, per Pareto subnet, its test accuracy and the end-to-end latency
through Triton at each profiled batch size, measured by ``superserve profile`` on that hardware.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class SubnetProfile:
    name: str
    accuracy: float
    latency_ms: dict[int, float]
    """Latency by batch size (the statistic the profile was loaded with: mean or p99), ms."""

    def at(self, batch: int) -> float:
        """Latency at ``batch``: the profiled point, or the next larger profiled batch (conservative)."""
        for b in sorted(self.latency_ms):
            if b >= batch:
                return self.latency_ms[b]
        raise ProfileError(f"batch {batch} is above the largest profiled batch of {self.name}")


@dataclass(frozen=True)
class Profile:
    hardware: str
    supernet: str
    batch_sizes: tuple[int, ...]
    subnets: tuple[SubnetProfile, ...]
    """Sorted by accuracy, least accurate first."""
    median: "Profile | None" = field(default=None, compare=False, repr=False)
    """A latency model's planning view (at a high quantile) carries the same profile at the latency a
    batch most likely takes: policies plan with the view and drop a request only when it most likely
    cannot be served (``likely``). None: the two are the same."""

    @property
    def likely(self) -> "Profile":
        """The profile at the latency a batch most likely takes (itself when no model says otherwise)."""
        return self.median or self

    def with_median(self, median: "Profile") -> "Profile":
        return replace(self, median=median)

    def __post_init__(self) -> None:
        if not self.subnets:
            raise ProfileError("profile lists no subnets")
        for s in self.subnets:
            missing = set(self.batch_sizes) - set(s.latency_ms)
            if missing:
                raise ProfileError(f"subnet {s.name} has no latency for batch sizes {sorted(missing)}")

    @property
    def max_batch(self) -> int:
        return max(self.batch_sizes)

    def scaled(self, factor: float) -> "Profile":
        """The same profile with every latency multiplied by ``factor`` (what the hardware delivers now)."""
        subs = tuple(SubnetProfile(s.name, s.accuracy, {b: v * factor for b, v in s.latency_ms.items()})
                     for s in self.subnets)
        return Profile(self.hardware, self.supernet, self.batch_sizes, subs)

    def mapped(self, latency: Callable[[float], float]) -> "Profile":
        """Every latency passed through ``latency`` (the affine latency model's view)."""
        subs = tuple(SubnetProfile(s.name, s.accuracy, {b: latency(v) for b, v in s.latency_ms.items()})
                     for s in self.subnets)
        return Profile(self.hardware, self.supernet, self.batch_sizes, subs)

    def scaled_by_batch(self, factors: dict[int, float]) -> "Profile":
        """Latency at batch ``b`` multiplied by ``factors[b]`` (1 where missing): the latency model's view."""
        subs = tuple(SubnetProfile(s.name, s.accuracy, {b: v * factors.get(b, 1.0) for b, v in s.latency_ms.items()})
                     for s in self.subnets)
        return Profile(self.hardware, self.supernet, self.batch_sizes, subs)

    def get(self, name: str) -> SubnetProfile | None:
        return next((s for s in self.subnets if s.name == name), None)

    def subnet(self, name: str) -> SubnetProfile:
        """The profile of ``name``; a ProfileError naming it if this profile does not list it."""
        s = self.get(name)
        if s is None:
            raise ProfileError(f"subnet {name!r} is not in profile {self.hardware} (it lists {len(self.subnets)})")
        return s

    @classmethod
    def from_dict(cls, d: dict[str, Any], stat: str = "mean") -> "Profile":
        if stat not in ("mean", "p99"):
            raise ProfileError(f"latency statistic must be mean or p99, not {stat!r}")
        try:
            subs = tuple(sorted((SubnetProfile(s["name"], float(s["accuracy"]),
                                               {int(b): float(v[stat]) for b, v in s["latency_ms"].items()})
                                 for s in d["subnets"]), key=lambda s: (s.accuracy, s.name)))
            return cls(d["hardware"], d["supernet"], tuple(sorted(int(b) for b in d["batch_sizes"])), subs)
        except (KeyError, TypeError) as e:
            raise ProfileError(f"profile is missing field {e}") from None

    @classmethod
    def load(cls, path: str | Path, expect_supernet: str | None = None, stat: str = "mean") -> "Profile":
        path = Path(path)
        if not path.exists():
            raise ProfileError(f"no profile at {path}; measure one with 'superserve profile'")
        prof = cls.from_dict(json.loads(path.read_text()), stat)
        if expect_supernet and prof.supernet != expect_supernet:
            raise ProfileError(f"profile {path} was measured for supernet weights {prof.supernet[:12]}, but the "
                               f"weights served are {expect_supernet[:12]}; re-run 'superserve profile'")
        return prof
