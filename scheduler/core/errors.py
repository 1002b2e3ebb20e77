"""Typed errors, mapped once to (HTTP status, gRPC status) at the front ends (docs/design.md, Errors).
Inner code raises them; sidecar/api_http.py and sidecar/api_grpc.py read ``http_status`` and ``grpc_code`` and nothing
else (tests/unit/test_error_codes.py sends each one through both front ends)."""
from __future__ import annotations


class ServeError(Exception):
    http_status = 500
    grpc_code = "INTERNAL"
    counted = False
    """Set once the request it refuses has been counted in the statistics (so it is counted once)."""


class InvalidInput(ServeError):
    http_status, grpc_code = 400, "INVALID_ARGUMENT"


class ModelNotFound(ServeError):
    http_status, grpc_code = 404, "NOT_FOUND"


class Overloaded(ServeError):
    http_status, grpc_code = 503, "UNAVAILABLE"


class DeadlineInfeasible(ServeError):
    http_status, grpc_code = 504, "DEADLINE_EXCEEDED"


class Cancelled(ServeError):
    """A worker's call ended by its own cancellation (Triton's CANCELLED): not the worker's fault."""
    http_status, grpc_code = 499, "CANCELLED"


class WorkerFailed(ServeError):
    http_status, grpc_code = 500, "INTERNAL"

