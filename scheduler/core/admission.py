"""Request parameters and inputs (docs/design.md), validated before anything is queued.
Every error names the field, so front ends can answer 400 / INVALID_ARGUMENT as is."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from .errors import InvalidInput


@dataclass(frozen=True)
class InputSpec:
    """The one input a supernet takes, batch dimension excluded (``TensorSpec`` of its family, as plain data).

    Admission checks every request's input against it; ``scheduler/sidecar/served_models.py`` reads a served
    model's spec from its weights' metadata."""
    name: str = "INPUT"
    dtype: str = "FP32"
    dims: tuple[int, ...] = (1, 28, 28)

    def describe(self, max_rows: int) -> str:
        return f"[B, {', '.join(map(str, self.dims))}] with 1 <= B <= {max_rows}"


KNOWN = ("slo_ms", "min_accuracy", "subnet", "min_confidence")
RESERVED = ("priority", "timeout")  # Triton's own; accepted and ignored
DEFAULT_INPUT = InputSpec()
"""The built-in CNN's input (FP32 [B, 1, 28, 28]); a served model's own comes from its family's spec."""
DEFAULT_SLO_MS = 100.0
"""The latency target of a request that sets no slo_ms (``serve --default-slo-ms``), and what the planner plans for."""
MAX_SLO_MS = 60_000.0
"""Default upper bound of ``slo_ms``: a latency target, not a batch job's time budget. Without a bound
one request with slo_ms 1e13 overflowed the gRPC timeout of the call to Triton (issue 12)."""


@dataclass(frozen=True)
class RequestParams:
    slo_ms: float
    min_accuracy: float = 0.0
    subnet: str | None = None
    min_confidence: float | None = None


def _number(name: str, value: Any) -> float:
    """Ints, floats and numeric strings (perf_analyzer sends only int, bool or string)."""
    if isinstance(value, bool):
        raise InvalidInput(f"parameter '{name}' must be a number, got a bool")
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(value.strip())
        except ValueError:
            raise InvalidInput(f"parameter '{name}' must be a number, got {value!r}") from None
    else:
        raise InvalidInput(f"parameter '{name}' must be a number, got {type(value).__name__}")
    if not math.isfinite(v):
        raise InvalidInput(f"parameter '{name}' must be finite, got {value!r}")
    return v


def _fraction(name: str, value: Any) -> float:
    v = _number(name, value)
    if not 0.0 <= v <= 1.0:
        raise InvalidInput(f"parameter '{name}' must be in [0, 1], got {value!r}")
    return v


def parse_params(raw: Mapping[str, Any] | None, default_slo_ms: float, max_slo_ms: float = MAX_SLO_MS) -> RequestParams:
    raw = dict(raw or {})
    unknown = sorted(k for k in raw if k not in KNOWN and k not in RESERVED)
    if unknown:
        raise InvalidInput(f"unknown request parameter(s) {unknown}; accepted: {list(KNOWN)} "
                           f"(and Triton's {list(RESERVED)})")
    slo = _number("slo_ms", raw["slo_ms"]) if "slo_ms" in raw else default_slo_ms
    if not 0 < slo <= max_slo_ms:
        raise InvalidInput(f"parameter 'slo_ms' must be > 0 and at most {max_slo_ms:g}, got {raw.get('slo_ms')!r}")
    subnet = raw.get("subnet")
    if subnet is not None and (not isinstance(subnet, str) or not subnet.strip()):
        raise InvalidInput(f"parameter 'subnet' must be a non-empty string, got {subnet!r}")
    return RequestParams(
        slo_ms=slo,
        min_accuracy=_fraction("min_accuracy", raw["min_accuracy"]) if "min_accuracy" in raw else 0.0,
        subnet=subnet,
        min_confidence=_fraction("min_confidence", raw["min_confidence"]) if "min_confidence" in raw else None)


def within_deadline(params: RequestParams, deadline_ms: float | None, now_ms: float) -> RequestParams:
    """The request's latency target shortened to what is left of the client's own deadline, when the client set
    one (a gRPC deadline) that ends before ``now_ms + slo_ms``: an answer after it is never read. gRPC counts a
    deadline from when its threads read the call, so what is left also takes off the time the call waited in the
    front end before the scheduler saw it, which no clock of the scheduler measures. A deadline already passed
    leaves a target too short for any batch (the request is refused at once with 504 / DEADLINE_EXCEEDED)."""
    if deadline_ms is None or deadline_ms - now_ms >= params.slo_ms:
        return params
    return replace(params, slo_ms=max(deadline_ms - now_ms, 1e-3))


def check_input(name: str, datatype: str, shape: Any, array: np.ndarray[Any, Any] | None, max_rows: int,
                spec: InputSpec = DEFAULT_INPUT, model: str | None = None) -> np.ndarray[Any, Any]:
    """The one input of the model: ``spec``'s name and datatype, shape [B, *spec.dims] with 1 <= B <= max_rows
    (``spec`` comes from the model's family, sidecar/served_models.py; ``model`` names it in the errors)."""
    of = f" of model {model!r}" if model else ""
    if name != spec.name:
        raise InvalidInput(f"unexpected input {name!r}; the model{of} takes one input named {spec.name!r}")
    if datatype != spec.dtype:
        raise InvalidInput(f"input '{spec.name}'{of} must be {spec.dtype}, got {datatype}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 1 + len(spec.dims) or shape[1:] != spec.dims or not 1 <= shape[0] <= max_rows:
        raise InvalidInput(f"input '{spec.name}'{of} must have shape {spec.describe(max_rows)}, got {list(shape)}")
    need = math.prod(shape)
    if array is None or array.size != need:
        raise InvalidInput(f"input '{spec.name}' holds {0 if array is None else array.size} values, "
                           f"shape {list(shape)} needs {need}")
    array = np.ascontiguousarray(array, dtype=np.float32).reshape(shape)
    if not np.isfinite(array).all():
        raise InvalidInput(f"input '{spec.name}' holds NaN or infinite values")
    return array
