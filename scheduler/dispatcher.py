"""Triton workers: one gRPC ModelInfer per batch, with the subnet as a request parameter."""
from __future__ import annotations

import json
import logging

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from .errors import Cancelled, DeadlineInfeasible, InvalidInput, WorkerFailed

log = logging.getLogger(__name__)


def worker_client(url: str) -> grpcaio.InferenceServerClient:
    """A gRPC client for a Triton worker that reconnects within about a second once a dead worker is
    back (gRPC's default reconnect back-off grows to minutes, which would delay re-admission)."""
    ka = grpcclient.KeepAliveOptions()
    return grpcaio.InferenceServerClient(url, channel_args=[
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", ka.keepalive_time_ms), ("grpc.keepalive_timeout_ms", ka.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", ka.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", ka.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 1000)])


def map_error(url: str, e: InferenceServerException, model: str | None = None) -> Exception:
    """Triton's INVALID_ARGUMENT is the request's fault (400). DEADLINE_EXCEEDED and CANCELLED come from
    the call's own deadline or cancellation, which the scheduler set: not the worker's fault (a worker
    that really hangs is caught by the hang rule, worker_pool.py). Anything else is the worker's (500)."""
    status = str(e.status())
    if "INVALID_ARGUMENT" in status:
        return InvalidInput(e.message())
    if "DEADLINE_EXCEEDED" in status:
        return DeadlineInfeasible(f"worker {url}: the call's deadline passed before Triton answered")
    if "CANCELLED" in status:
        return Cancelled(f"worker {url}: the call was cancelled")
    return WorkerFailed(f"worker {url}: {model + ': ' if model else ''}{e.status()}: {e.message()}")


def split_result(url: str, r, rows: int) -> tuple[np.ndarray, list[dict]]:
    """LOGITS and the parsed INFO of each row; a short answer is the worker's failure."""
    logits = r.as_numpy("LOGITS")
    if logits is None or len(logits) != rows:
        raise WorkerFailed(f"worker {url} returned {0 if logits is None else len(logits)} rows for {rows}")
    return logits, [json.loads(v[0]) for v in r.as_numpy("INFO")]


class TritonWorker:
    """A Triton server reached over gRPC; tracks batches in flight."""

    def __init__(self, url: str, model: str = "supernet"):
        self.url, self.model = url, model
        self.client = worker_client(url)
        self.inflight = 0
        self.healthy = True
        self._outputs = [grpcclient.InferRequestedOutput("LOGITS"), grpcclient.InferRequestedOutput("INFO")]

    async def ready(self) -> bool:
        try:
            return await self.client.is_model_ready(self.model)
        except InferenceServerException:
            return False

    async def infer(self, images: np.ndarray, subnet: str, timeout_s: float) -> tuple[np.ndarray, list[dict]]:
        inp = grpcclient.InferInput("INPUT", list(images.shape), "FP32")
        inp.set_data_from_numpy(images)
        try:
            r = await self.client.infer(self.model, [inp], outputs=self._outputs, parameters={"subnet": subnet},
                                        client_timeout=timeout_s)
        except InferenceServerException as e:
            raise map_error(self.url, e) from None
        return split_result(self.url, r, len(images))

    async def close(self) -> None:
        await self.client.close()
