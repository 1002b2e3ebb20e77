"""Subnet names and the search space.

A subnet is the control tuple of the supernet: a depth and a width percent per stage. Its name
is the stable string used on the wire and in profiles, e.g. ``d2.3.3-w50.75.100``.
"""
from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass

_NAME = re.compile(r"^d(\d+(?:\.\d+)*)-w(\d+(?:\.\d+)*)$")


@dataclass(frozen=True, order=True)
class SubnetConfig:
    """Depth (number of blocks run) and width (percent of channels kept) for each stage."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]

    @property
    def name(self) -> str:
        return "d" + ".".join(map(str, self.depths)) + "-w" + ".".join(map(str, self.widths))

    @classmethod
    def parse(cls, name: str) -> "SubnetConfig":
        m = _NAME.match(name.strip()) if isinstance(name, str) else None
        if not m:
            raise ValueError(f"subnet name {name!r} is not of the form d<depths>-w<widths>, e.g. d2.3.3-w50.75.100")
        depths = tuple(int(v) for v in m.group(1).split("."))
        widths = tuple(int(v) for v in m.group(2).split("."))
        if len(depths) != len(widths):
            raise ValueError(f"subnet name {name!r} has {len(depths)} depths but {len(widths)} widths")
        return cls(depths, widths)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class SearchSpace:
    """The elastic choices per stage; every combination is a valid subnet."""

    depth_choices: tuple[int, ...] = (1, 2, 3)
    width_choices: tuple[int, ...] = (25, 50, 75, 100)
    num_stages: int = 3

    def parse(self, name: str) -> SubnetConfig:
        """The validated control tuple of a subnet name (ValueError naming it otherwise)."""
        return self.validate(SubnetConfig.parse(name))

    def validate(self, cfg: SubnetConfig) -> SubnetConfig:
        if len(cfg.depths) != self.num_stages:
            raise ValueError(f"subnet {cfg.name!r} has {len(cfg.depths)} stages; this supernet has {self.num_stages}")
        for d in cfg.depths:
            if d not in self.depth_choices:
                raise ValueError(f"subnet {cfg.name!r}: depth {d} not in {self.depth_choices}")
        for w in cfg.widths:
            if w not in self.width_choices:
                raise ValueError(f"subnet {cfg.name!r}: width {w} not in {self.width_choices}")
        return cfg

    @property
    def largest(self) -> SubnetConfig:
        return SubnetConfig((max(self.depth_choices),) * self.num_stages, (max(self.width_choices),) * self.num_stages)

    @property
    def smallest(self) -> SubnetConfig:
        return SubnetConfig((min(self.depth_choices),) * self.num_stages, (min(self.width_choices),) * self.num_stages)

    def all(self) -> list[SubnetConfig]:
        ds = itertools.product(self.depth_choices, repeat=self.num_stages)
        return [SubnetConfig(d, w) for d in ds for w in itertools.product(self.width_choices, repeat=self.num_stages)]

    def sample(self, rng: random.Random) -> SubnetConfig:
        return SubnetConfig(tuple(rng.choice(self.depth_choices) for _ in range(self.num_stages)),
                            tuple(rng.choice(self.width_choices) for _ in range(self.num_stages)))

    def size(self) -> int:
        return (len(self.depth_choices) * len(self.width_choices)) ** self.num_stages
