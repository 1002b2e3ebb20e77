"""Triton workers: one gRPC ModelInfer per batch, with the subnet as a request parameter."""
from __future__ import annotations

import json
import logging

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from .errors import InvalidInput, WorkerFailed

log = logging.getLogger(__name__)


class TritonWorker:
    """A Triton server reached over gRPC; tracks batches in flight."""

    def __init__(self, url: str, model: str = "supernet"):
        self.url, self.model = url, model
        self.client = grpcaio.InferenceServerClient(url)
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
            if "INVALID_ARGUMENT" in str(e.status()):
                raise InvalidInput(e.message()) from None
            raise WorkerFailed(f"worker {self.url}: {e.status()}: {e.message()}") from None
        logits = r.as_numpy("LOGITS")
        infos = [json.loads(v[0]) for v in r.as_numpy("INFO")]
        if logits is None or len(logits) != len(images):
            raise WorkerFailed(f"worker {self.url} returned {0 if logits is None else len(logits)} rows for "
                               f"{len(images)}")
        return logits, infos

    async def close(self) -> None:
        await self.client.close()
