"""A Triton worker that knows its own calls: how long it has been busy (the autoscaler's view of a worker) and
when its last call in flight ended (the drain before it is stopped).

It counts the batch calls made through it, not the engine's bookkeeping, so it holds under today's pool and
the next one alike: removed from the pool, it gets no new batches, and ``close`` waits for the calls already
sent (answered, or failed and retried elsewhere by the engine) before it closes its channel.

It also serves every model the scheduler serves (``serve --models``): it is ready only when each of them is
(so a new or restarted Triton is admitted with all its models loaded), and it counts the rows it ran per model
into the fleet's counter (the autoscaler's demand, scaling_loop.py)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Sequence

from tritonclient.utils import InferenceServerException

from .triton_worker import TritonWorker

log = logging.getLogger(__name__)


class MeteredWorker(TritonWorker):
    def __init__(self, url: str, model: str | Sequence[str] = "supernet", drain_timeout_s: float = 30.0,
                 rows: Counter | None = None):
        models = (model,) if isinstance(model, str) else tuple(model)
        if not models:
            raise ValueError(f"worker {url}: name at least one model")
        super().__init__(url, models[0])
        self.models = models
        """Every model this worker serves; the first is its default (``infer`` without ``model``)."""
        self.rows = rows if rows is not None else Counter()
        """Rows of every batch call made through this worker, per model (shared with the fleet)."""
        self.drain_timeout_s = drain_timeout_s
        """``close`` waits this long at most for calls in flight (the engine's hang rule cancels a hung one
        much sooner)."""
        self.calls = 0
        """Batch calls in flight through this worker."""
        self._busy_s = 0.0
        self._busy_since: float | None = None
        self._idle: asyncio.Event | None = None
        self.abandoned = False
        """Set when the worker is known dead (its process or actor is gone): ``close`` does not wait."""

    async def ready(self) -> bool:
        """Every model it serves is ready (Triton loads them one after another)."""
        for m in self.models:
            try:
                if not await self.client.is_model_ready(m):
                    return False
            except InferenceServerException:
                return False
        return True

    async def infer(self, images, subnet: str, timeout_s: float, model: str | None = None):
        self.rows[model or self.model] += len(images)
        self._begin()
        try:
            return await super().infer(images, subnet, timeout_s, model)
        finally:
            self._end()

    def _begin(self) -> None:
        if self.calls == 0:
            self._busy_since = time.monotonic()
            if self._idle is not None:
                self._idle.clear()
        self.calls += 1

    def _end(self) -> None:
        self.calls -= 1
        if self.calls == 0:
            self._busy_s += time.monotonic() - self._busy_since
            self._busy_since = None
            if self._idle is not None:
                self._idle.set()

    def busy_seconds(self) -> float:
        """Time with at least one call in flight, since the worker was made (monotonic)."""
        open_s = time.monotonic() - self._busy_since if self._busy_since is not None else 0.0
        return self._busy_s + open_s

    async def drained(self) -> bool:
        """Wait until no call is in flight (at most ``drain_timeout_s``); False if some still were."""
        if self.calls == 0 or self.abandoned:
            return True
        if self._idle is None:
            self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), self.drain_timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self) -> None:
        """Finish the calls in flight (the drain), then close the channels."""
        if not await self.drained():
            log.warning("worker %s: %d call(s) still in flight after %.0f s of drain; closing anyway", self.url,
                        self.calls, self.drain_timeout_s)
        await super().close()
