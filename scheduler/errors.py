"""Typed errors, mapped once to (HTTP status, gRPC status) at the front ends (STYLE.md section 5)."""
from __future__ import annotations


class ServeError(Exception):
    http_status = 500
    grpc_code = "INTERNAL"


class InvalidInput(ServeError):
    http_status, grpc_code = 400, "INVALID_ARGUMENT"


class ModelNotFound(ServeError):
    http_status, grpc_code = 404, "NOT_FOUND"


class Overloaded(ServeError):
    http_status, grpc_code = 503, "UNAVAILABLE"


class DeadlineInfeasible(ServeError):
    http_status, grpc_code = 504, "DEADLINE_EXCEEDED"


class Cancelled(ServeError):
    http_status, grpc_code = 499, "CANCELLED"


class WorkerFailed(ServeError):
    http_status, grpc_code = 500, "INTERNAL"


ERROR_TABLE = {cls.__name__: (cls.http_status, cls.grpc_code)
               for cls in (InvalidInput, ModelNotFound, Overloaded, DeadlineInfeasible, Cancelled, WorkerFailed)}
