"""Stand-ins for the parts a unit test does without: in-process workers that answer like a Triton worker
(no sockets), shared by the engine's tests (retry, shedding, escalation, membership, error codes)."""

from __future__ import annotations

import asyncio

import numpy as np

from superserve.scheduler.sidecar.triton_worker import SupernetWorker
from superserve.scheduler.core.errors import Cancelled, DeadlineInfeasible, WorkerFailed


class StandIn(SupernetWorker):
    """Answers like a TritonWorker; ``mode`` ok, fail (connection refused), deadline or cancelled (the call's
    own deadline or cancellation, as triton_worker.map_error reports them) or hang (never answers)."""

    def __init__(self, url: str, mode: str = "ok"):
        self.url, self.mode = url, mode
        self.calls = self.cancelled = 0

    async def ready(self) -> bool:
        return self.mode == "ok"

    async def infer(self, images, subnet, timeout_s):
        self.calls += 1
        if self.mode == "fail":
            raise WorkerFailed(f"worker {self.url}: StatusCode.UNAVAILABLE: connection refused")
        if self.mode == "deadline":  # what triton_worker.map_error makes of the call's own DEADLINE_EXCEEDED
            raise DeadlineInfeasible(f"worker {self.url}: the call's deadline passed before Triton answered")
        if self.mode == "cancelled":
            raise Cancelled(f"worker {self.url}: the call was cancelled")
        if self.mode == "hang":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        await asyncio.sleep(0.002)
        return np.zeros((len(images), 10), np.float32), [{"subnet": subnet, "url": self.url}] * len(images)

    async def close(self) -> None:
        pass
