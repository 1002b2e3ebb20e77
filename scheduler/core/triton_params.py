"""Request parameters that Triton 2.51 reserves for itself, checked by Triton's own rules for a
non-sequence model, so that a request real Triton serves is served by the sidecar too (issue 14).

Measured against the real ``tritonserver`` 2.51 (tests/integration/test_conformance.py keeps it so):
- ``priority``: an integer >= 0; ``timeout``: an integer (>= 0 over HTTP, any int64 over gRPC).
- ``sequence_id``: an integer or a string; ``sequence_start``, ``sequence_end``: booleans. On a model
  without a sequence batcher Triton serves such a request as any other, so the sidecar does too.
- ``binary_data_output`` (HTTP): a boolean, read by the HTTP codec; over gRPC Triton passes it on.
- ``headers`` (HTTP): an int, bool or string (forwarded-header bookkeeping), never an object.
- ``triton_*``: refused over HTTP; over gRPC only ``triton_enable_empty_final_response`` (a bool).
Where Triton answers a wrong type with HTTP 500 the sidecar answers 400: it is the client's mistake.
The values are only checked: the sidecar's own deadline (``slo_ms``) is what it schedules by.
Any other name is not Triton's; the caller decides (project parameters, or a 400 naming it).
"""
from __future__ import annotations

from typing import Any, Mapping

from .errors import InvalidInput

GRPC_TRITON_ALLOWED = ("triton_enable_empty_final_response",)
SEQUENCE = ("sequence_id", "sequence_start", "sequence_end")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(name: str, value: Any, protocol: str) -> None:
    """Raise InvalidInput if Triton would refuse ``name`` = ``value`` over ``protocol``."""
    if name.startswith("triton_"):
        if protocol != "grpc" or name not in GRPC_TRITON_ALLOWED:
            raise InvalidInput(f"parameter {name!r}: names beginning 'triton_' are reserved for Triton"
                               + (f"; over gRPC only {list(GRPC_TRITON_ALLOWED)} may be sent" if protocol == "grpc"
                                  else " and cannot be sent over HTTP"))
        ok, want = isinstance(value, bool), "a boolean"
    elif name == "priority":
        ok, want = _is_int(value) and value >= 0, "an integer >= 0"
    elif name == "timeout":
        ok, want = _is_int(value) and (value >= 0 or protocol == "grpc"), "an integer (microseconds)"
    elif name == "sequence_id":
        ok, want = _is_int(value) or isinstance(value, str), "an integer or a string"
    elif name in ("sequence_start", "sequence_end"):
        ok, want = isinstance(value, bool), "a boolean"
    elif name == "binary_data_output":
        ok, want = isinstance(value, bool) or protocol == "grpc", "a boolean"
    elif name == "headers":
        ok, want = isinstance(value, (bool, int, str)) or protocol == "grpc", "an int, bool or string"
    else:
        raise KeyError(name)
    if not ok:
        raise InvalidInput(f"Triton's parameter {name!r} must be {want}, got {value!r}")


def is_reserved(name: str) -> bool:
    return name.startswith("triton_") or name in ("priority", "timeout", "binary_data_output", "headers") \
        or name in SEQUENCE


def split_reserved(raw: Mapping[str, Any], protocol: str) -> dict[str, Any]:
    """Check Triton's reserved names in ``raw`` and return the other parameters (the project's,
    or unknown names for admission to refuse)."""
    rest = {}
    for name, value in raw.items():
        if is_reserved(name):
            _check(name, value, protocol)
        else:
            rest[name] = value
    return rest
