"""Serving-side logic with no Triton import, for any supernet family: resolve subnet names, check
inputs against the family's input spec, run grouped batched forwards, build the per-row INFO.
``backends/python_supernet/model.py`` adapts this to Triton; tests call it directly."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import torch

from .checkpoint import WeightsMismatch, load_checkpoint
from .confidence import confidence
from .export import load_static
from .family import TensorSpec


class BadRequest(ValueError):
    """The request (not the batch) is wrong; reported as INVALID_ARG for that request only."""


@dataclass(frozen=True)
class ExportedSubnet:
    """The control of a model serving one exported subnet: only its name."""

    name: str


@dataclass
class GroupResult:
    logits: np.ndarray
    infer_ms: float


class SupernetRunner:
    """Holds one supernet and answers "run these inputs on subnet X".

    ``pinned`` restricts it to one subnet (the fixed-model baselines). ``exported`` instead loads a
    single subnet exported as its own weights file (export.save_static): the separate-model
    deployment that SubNetAct replaces, kept so both can be measured in the same server.
    """

    def __init__(self, weights_path=None, device: str = "cpu", pinned: str | None = None, exported=None,
                 family: str | None = None):
        self.device = torch.device(device)
        if exported:
            static, blob = load_static(exported, device=self.device)
            if family and blob["family"] != family:
                raise WeightsMismatch(f"{exported}: an exported subnet of family {blob['family']!r}, but the model "
                                      f"config names family {family!r}")
            self.family = blob["family"]
            self.accuracy = {blob["subnet"]: blob["accuracy"]}
            self.pareto, self.sha256 = [blob["subnet"]], blob["supernet_sha256"]
            self.space = None
            if "input" in blob:
                self.input_spec = TensorSpec.from_json(blob["input"])
                self.output_spec = TensorSpec.from_json(blob["output"])
            else:  # elastic-cnn's first export format
                from .network import ElasticCNN
                self.input_spec, self.output_spec = ElasticCNN().input_spec, ElasticCNN().output_spec
            self._forward = lambda x, cfg: static(x)
        else:
            self.model, self.meta = load_checkpoint(weights_path, device=self.device, expect_family=family)
            self.family = self.model.family
            self.accuracy = {r["name"]: r.get("test_accuracy", r["val_accuracy"]) for r in self.meta["subnets"]}
            self.pareto, self.sha256 = list(self.meta["pareto"]), self.meta["sha256"]
            self.space = self.model.space
            self.input_spec, self.output_spec = self.model.input_spec, self.model.output_spec
            self._forward = self.model
        self.default_subnet = self.pareto[-1]  # the most accurate Pareto subnet
        self.pinned = None
        if pinned or exported:
            self.pinned = self.resolve(pinned or self.default_subnet)

    def warm_up(self) -> None:
        """One forward per servable Pareto subnet so the first real requests do not pay lazy initialisation."""
        x = np.zeros((1, *self.input_spec.dims), dtype=np.float32)
        for name in [self.pinned.name] if self.pinned else self.pareto:
            self.run(self.resolve(name), [x])

    def resolve(self, name: str | None):
        """Subnet config for a request's ``subnet`` parameter (None: the default)."""
        if name is None or name == "":
            return self.pinned or self.resolve(self.default_subnet)
        if not isinstance(name, str):
            raise BadRequest(f"parameter 'subnet' must be a string, got {type(name).__name__}")
        if self.pinned and name != self.pinned.name:
            raise BadRequest(f"parameter 'subnet': this model serves only {self.pinned.name!r}, not {name!r}")
        if self.space is None:  # one exported subnet: its own name only
            if name not in self.accuracy:
                raise BadRequest(f"parameter 'subnet': this model serves only {self.pareto[0]!r}, not {name!r}")
            return ExportedSubnet(name)
        try:
            cfg = self.space.parse(name)
        except ValueError as e:
            raise BadRequest(f"parameter 'subnet': {e}") from None
        if cfg.name not in self.accuracy:
            raise BadRequest(f"parameter 'subnet': {cfg.name!r} is not a served subnet of these weights "
                             f"(served: the {len(self.accuracy)} calibrated subnets, e.g. {self.pareto[0]!r})")
        return cfg

    def run(self, cfg, inputs: list[np.ndarray]) -> GroupResult:
        """One batched forward over the concatenated inputs of every request in the group."""
        x = torch.from_numpy(np.concatenate(inputs) if len(inputs) > 1 else inputs[0]).to(self.device)
        t = time.perf_counter()
        with torch.inference_mode():
            logits = self._forward(x, cfg)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        infer_ms = (time.perf_counter() - t) * 1000
        return GroupResult(logits.float().cpu().numpy(), infer_ms)

    def info_rows(self, cfg, logits: np.ndarray, infer_ms: float, batch_size: int) -> np.ndarray:
        """INFO output, one JSON string per row (docs/design.md). queue_ms is unknown inside Triton
        (null); the scheduler fills it in."""
        conf, margin = confidence(logits)
        rows = [json.dumps({"subnet": cfg.name, "accuracy": self.accuracy[cfg.name], "confidence": round(float(c), 6),
                            "margin": round(float(m), 6), "queue_ms": None, "infer_ms": round(infer_ms, 3),
                            "batch_size": batch_size, "escalations": 0, "subnets": [cfg.name]}).encode()
                for c, m in zip(conf, margin)]
        return np.array(rows, dtype=np.object_).reshape(-1, 1)


    def check_input(self, arr: np.ndarray | None) -> np.ndarray:
        return check_input(arr, self.input_spec)


_NUMPY = {"FP32": np.float32}


def check_input(arr: np.ndarray | None, spec: TensorSpec) -> np.ndarray:
    """Value checks Triton's own shape/dtype validation does not do, against the family's input spec."""
    if arr is None:
        raise BadRequest(f"input '{spec.name}' is missing")
    if arr.dtype != _NUMPY[spec.dtype] or arr.ndim != 1 + len(spec.dims) or arr.shape[1:] != spec.dims:
        raise BadRequest(f"input '{spec.name}' must be {spec.describe()}, got {arr.dtype} {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise BadRequest(f"input '{spec.name}' holds NaN or infinite values")
    return arr


def subnet_parameter(params_json: str) -> str | None:
    try:
        params = json.loads(params_json or "{}")
    except json.JSONDecodeError as e:
        raise BadRequest(f"request parameters are not valid JSON: {e}") from None
    return params.get("subnet")
