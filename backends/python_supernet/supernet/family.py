"""The supernet plug-in interface: what every family of weight-shared supernets provides, so the
backend, the profiler, the recorder, the exporter and the tests work with any of them.

Plain PyTorch, no Triton import. A family is a subclass of ``Supernet`` (an ``nn.Module``) that
implements:

- **search space** (``space``): subnet name <-> control tuple (``space.parse(name)`` gives a validated
  control, ``control.name`` its canonical name), validation, enumeration (``space.sample``,
  ``space.largest``, ``space.smallest``) and the family's ``candidates()``, the subnets worth
  calibrating and evaluating after training;
- **per-request actuation**: ``forward(x, subnet)`` runs that subnet on the shared weights; no weight is
  copied or moved (contract-tested: ``data_ptr`` of every parameter and buffer unchanged);
- **SubnetNorm calibration** (``calibrate``): per-subnet normalisation statistics where the family uses
  batch norm (``uses_subnet_norm``); a family without batch norm serves every subnet as trained;
- **input and output specs** (``input_spec``, ``output_spec``): shape without the batch dimension,
  dtype, value range and the preprocessing the model does itself, so a client sends raw values;
- **cost** per subnet: ``macs(subnet)``, ``params(subnet)``;
- **a standalone network** per subnet (``extract``): plain layers with copied, sliced weights and that
  subnet's statistics, the independent reference actuation is tested against and what a
  separate-models deployment would serve.

``arch()`` / ``from_arch(arch)`` round-trip the shape of the network through the weights' JSON, so a
checkpoint (``checkpoint.py``) names its family and rebuilds without code knowing which one it is.
"""
from __future__ import annotations

import abc
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a model's interface, as Triton's config.pbtxt declares it (batch dim excluded)."""

    name: str
    dtype: str
    """Triton's datatype on the wire, e.g. ``FP32`` (config: ``TYPE_FP32``)."""
    dims: tuple[int, ...]
    value_range: tuple[float, float] | None = None
    """Inclusive range of valid values (inputs), None if unbounded."""
    preprocessing: str = ""
    """What the model does to the values itself (so clients send raw values)."""

    def describe(self) -> str:
        return f"{self.dtype} [B, {', '.join(map(str, self.dims))}]"

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims),
                "value_range": list(self.value_range) if self.value_range else None,
                "preprocessing": self.preprocessing}

    @classmethod
    def from_json(cls, d: dict) -> "TensorSpec":
        vr = d.get("value_range")
        return cls(d["name"], d["dtype"], tuple(d["dims"]), tuple(vr) if vr else None, d.get("preprocessing", ""))


class Subnet(Protocol):
    """A family's control tuple: hashable, with a canonical name."""

    @property
    def name(self) -> str: ...


class SubnetSpace(Protocol):
    """A family's search space."""

    def parse(self, name: str) -> Subnet:
        """The validated control of ``name``; ValueError naming the name and what is wrong."""

    def validate(self, cfg: Subnet) -> Subnet: ...

    @property
    def largest(self) -> Subnet: ...

    @property
    def smallest(self) -> Subnet: ...

    def sample(self, rng: random.Random) -> Subnet: ...

    def size(self) -> int: ...


class Supernet(nn.Module, abc.ABC):
    """Base class of every family (see the module docstring for the contract)."""

    family: ClassVar[str]
    """Registry name, written into the weights' JSON and the model config (e.g. ``elastic-cnn``)."""
    uses_subnet_norm: ClassVar[bool] = True
    channels_last: ClassVar[bool] = False
    """Train and evaluate in channels_last memory format (faster for convolutions on CPU)."""
    space: SubnetSpace

    def __init__(self):
        super().__init__()
        # Names of the servable subnets; for SubnetNorm families also the statistics rows, in order.
        self.calibrated: list[str] = []
        self._row: dict[str, int] = {}

    # -- shape --------------------------------------------------------------------------------
    @abc.abstractmethod
    def arch(self) -> dict:
        """JSON-able constructor arguments; ``type(self).from_arch(self.arch())`` builds the same shape."""

    @classmethod
    @abc.abstractmethod
    def from_arch(cls, arch: dict) -> "Supernet": ...

    @property
    @abc.abstractmethod
    def input_spec(self) -> TensorSpec: ...

    @property
    @abc.abstractmethod
    def output_spec(self) -> TensorSpec: ...

    # -- subnets ------------------------------------------------------------------------------
    @abc.abstractmethod
    def candidates(self) -> list:
        """Subnets to calibrate and evaluate after training (the Pareto set is chosen among them)."""

    @abc.abstractmethod
    def macs(self, cfg) -> int:
        """Multiply-accumulates of one forward pass at batch 1."""

    @abc.abstractmethod
    def params(self, cfg) -> int:
        """Parameters the subnet actually uses."""

    @abc.abstractmethod
    def extract(self, cfg) -> nn.Module:
        """A new, independent eval-mode network computing ``self(x, cfg)`` (copied weights)."""

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, cfg=None, batch_stats: bool = False) -> torch.Tensor:
        """Output of subnet ``cfg`` (default: the largest). ``batch_stats``: normalise with the batch's
        own statistics (training, calibration) instead of the subnet's stored ones."""

    # -- servable subnets and their statistics ------------------------------------------------
    def set_calibrated(self, names: list[str]) -> None:
        """Declare the servable subnets; a SubnetNorm family resizes its statistics to one row each."""
        for n in names:
            self.space.parse(n)
        self.calibrated = list(names)
        self._row = {n: i for i, n in enumerate(names)}
        self._resize_norms(len(names))

    def _resize_norms(self, n: int) -> None:
        """Hook for SubnetNorm families: hold ``n`` rows of statistics."""

    def row(self, cfg) -> int:
        try:
            return self._row[cfg.name]
        except KeyError:
            raise KeyError(f"subnet {cfg.name!r} has no calibrated statistics in these weights") from None

    def calibrate(self, subnets: list, images, batch_size: int = 256) -> None:
        """Make ``subnets`` servable; SubnetNorm families compute their statistics over ``images``
        (deterministic: exact mean and variance, no momentum). Replaces any previous calibration."""
        self.set_calibrated([c.name for c in subnets])

    def example_input(self, batch: int = 1, seed: int = 0) -> torch.Tensor:
        """Random valid input of the input spec (for warm-up, latency and tests)."""
        lo, hi = self.input_spec.value_range or (0.0, 1.0)
        g = torch.Generator().manual_seed(seed)
        return lo + (hi - lo) * torch.rand((batch, *self.input_spec.dims), generator=g)


@dataclass
class FamilyInfo:
    """What the registry knows of a family without importing it."""

    name: str
    module: str
    cls: str
    summary: str
    requires: tuple[str, ...] = field(default_factory=tuple)


def meta_specs(meta: dict) -> tuple[TensorSpec, TensorSpec]:
    """The input and output specs a weights' JSON records (``checkpoint.save_checkpoint`` writes them)."""
    return TensorSpec.from_json(meta["input"]), TensorSpec.from_json(meta["output"])


def jsonable(arch: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}
