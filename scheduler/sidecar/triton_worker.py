"""Triton workers: one gRPC ModelInfer per batch, with the subnet as a request parameter.

The batch call goes through the generated stub over ``grpc.aio`` with the batch as one
``raw_input_contents`` blob and the answer split from ``raw_output_contents``: tritonclient's
InferInput/InferResult objects cost more CPU per call than the rest of the dispatch (issue 14's
profile). tritonclient's aio client stays for the readiness probe and metadata (not on the hot path)."""
from __future__ import annotations

import json
import logging
import struct
from typing import Protocol, Sequence

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from ..core.errors import Cancelled, DeadlineInfeasible, InvalidInput, WorkerFailed

log = logging.getLogger(__name__)


def _channel_args() -> list[tuple]:
    """Options of every channel to a Triton worker: it reconnects within about a second once a dead
    worker is back (gRPC's default reconnect back-off grows to minutes, which would delay re-admission)."""
    ka = grpcclient.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", ka.keepalive_time_ms), ("grpc.keepalive_timeout_ms", ka.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", ka.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", ka.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 1000)]


def worker_client(url: str) -> grpcaio.InferenceServerClient:
    """tritonclient's aio client for a worker (probes, metadata, model control)."""
    return grpcaio.InferenceServerClient(url, channel_args=_channel_args())


def map_status(url: str, status: str, message: str, model: str | None = None) -> Exception:
    """Triton's INVALID_ARGUMENT is the request's fault (400). DEADLINE_EXCEEDED and CANCELLED come from
    the call's own deadline or cancellation, which the scheduler set: not the worker's fault (a worker
    that really hangs is caught by the hang rule, worker_pool.py). Anything else is the worker's (500)."""
    if "INVALID_ARGUMENT" in status:
        return InvalidInput(message)
    if "DEADLINE_EXCEEDED" in status:
        return DeadlineInfeasible(f"worker {url}: the call's deadline passed before Triton answered")
    if "CANCELLED" in status:
        return Cancelled(f"worker {url}: the call was cancelled")
    return WorkerFailed(f"worker {url}: {model + ': ' if model else ''}{status}: {message}")


def map_error(url: str, e: InferenceServerException, model: str | None = None) -> Exception:
    return map_status(url, str(e.status()), e.message(), model)


_U32 = struct.Struct("<I")


def bytes_elements(raw: bytes) -> list[bytes]:
    """The elements of a serialized BYTES tensor (each a 4-byte little-endian length, then the bytes)."""
    out, i, n = [], 0, len(raw)
    while i < n:
        (k,) = _U32.unpack_from(raw, i)
        out.append(raw[i + 4:i + 4 + k])
        i += 4 + k
    return out


def split_raw(url: str, r: service_pb2.ModelInferResponse, rows: int) -> tuple[np.ndarray, list[bytes]]:
    """LOGITS and the INFO JSON bytes of each row from raw_output_contents, split as bytes (the engine
    splices its own INFO fields in, info.py); a short answer is the worker's failure."""
    raw = {o.name: r.raw_output_contents[i] for i, o in enumerate(r.outputs) if i < len(r.raw_output_contents)}
    return split_outputs(url, raw, rows)


def split_outputs(url: str, raw: dict[str, bytes], rows: int) -> tuple[np.ndarray, list[bytes]]:
    """LOGITS and per-row INFO bytes from the raw bytes of each output (gRPC's raw_output_contents or HTTP's
    binary tensors, triton_http.py); a short answer is the worker's failure."""
    if "LOGITS" not in raw or "INFO" not in raw or len(raw["LOGITS"]) % (4 * rows):
        raise WorkerFailed(f"worker {url} answered without LOGITS/INFO for {rows} rows")
    logits = np.frombuffer(raw["LOGITS"], "<f4").reshape(rows, -1)
    infos = bytes_elements(raw["INFO"])
    if len(infos) != rows:
        raise WorkerFailed(f"worker {url} returned {len(infos)} INFO rows for {rows}")
    return logits, infos


def split_result(url: str, r, rows: int) -> tuple[np.ndarray, list[dict]]:
    """LOGITS and the parsed INFO of each row; a short answer is the worker's failure."""
    logits = r.as_numpy("LOGITS")
    if logits is None or len(logits) != rows:
        raise WorkerFailed(f"worker {url} returned {0 if logits is None else len(logits)} rows for {rows}")
    return logits, [json.loads(v[0]) for v in r.as_numpy("INFO")]


class Worker(Protocol):
    """What the scheduler needs of a worker: a transport, nothing more. Whether it is in rotation and how
    many batches it has in flight is the pool's business (worker_pool.py, roster.py)."""

    url: str
    """Names the worker in logs and metrics (unique in a pool)."""
    last_call_loaded: bool
    """The last batch call had to load a model first (its latency says nothing about forward speed)."""
    load_events: Sequence
    """Model loads so far, each with ``seconds`` (variants.LoadEvent); empty for the supernet."""

    @property
    def loaded(self) -> frozenset[str] | None:
        """Subnets it runs without loading a model first; None: any subnet (one supernet serves them all)."""

    async def ready(self) -> bool:
        """Is the model ready (readiness probe)?"""

    async def infer(self, images: np.ndarray, subnet: str, timeout_s: float) -> tuple[np.ndarray, list]:
        """One batched call: LOGITS [B, classes] and INFO per row (JSON bytes or dicts), or raise a ServeError.
        A scheduler serving several models (lifecycle.ModelSpec) calls ``infer(..., model=name)``: a worker
        that serves several Triton models takes that keyword (TritonWorker and its subclasses do)."""

    async def close(self) -> None:
        """Release the connection."""


class SupernetWorker:
    """Defaults of a worker serving the one supernet: any subnet, never a load."""

    last_call_loaded: bool = False
    load_events: Sequence = ()

    @property
    def loaded(self) -> frozenset[str] | None:
        return None


class TritonWorker(SupernetWorker):
    """A Triton server serving the supernet, reached over gRPC."""

    def __init__(self, url: str, model: str = "supernet"):
        self.url, self.model = url, model
        self.client = worker_client(url)
        self._channel = grpc.aio.insecure_channel(url, options=_channel_args())
        self._infer = service_pb2_grpc.GRPCInferenceServiceStub(self._channel).ModelInfer

    async def ready(self) -> bool:
        try:
            return await self.client.is_model_ready(self.model)
        except InferenceServerException:
            return False

    async def infer(self, images: np.ndarray, subnet: str, timeout_s: float,
                    model: str | None = None) -> tuple[np.ndarray, list[bytes]]:
        """One batched call to Triton model ``model`` (None: the worker's own, ``self.model``)."""
        req = service_pb2.ModelInferRequest(model_name=model or self.model)
        req.inputs.add(name="INPUT", datatype="FP32", shape=images.shape)
        req.raw_input_contents.append(images.astype("<f4", copy=False).tobytes())
        req.parameters["subnet"].string_param = subnet
        req.outputs.add(name="LOGITS")
        req.outputs.add(name="INFO")
        try:
            r = await self._infer(req, timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            raise map_status(self.url, str(e.code()), e.details() or "") from None
        return split_raw(self.url, r, len(images))

    async def close(self) -> None:
        await self._channel.close()
        await self.client.close()
