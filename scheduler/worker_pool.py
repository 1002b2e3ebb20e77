"""The Triton workers behind the scheduler: who is in rotation, the readiness probe loop, and batch
calls watched for failure and hangs. The rules live in health.py (pure); this module applies them
with asyncio and publishes them in ``Stats`` (``sched_worker_*``, metrics.py).

Each worker object keeps its ``healthy`` flag (mirrored from its ``WorkerHealth``), which is what the
engine's worker choice and the front ends' readiness answers read."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Awaitable, Callable

from .clock import Clock
from .errors import Cancelled, DeadlineInfeasible, InvalidInput, WorkerFailed

NOT_THE_WORKERS_FAULT = (InvalidInput, DeadlineInfeasible, Cancelled)
"""Errors of a call that say nothing about the worker's health: a bad request, or the call's own
deadline or cancellation (set by the scheduler for the request). One such request must never take a
worker out of rotation for everyone else (issue 12)."""
from .health import Event, HealthConfig, WorkerHealth
from .metrics import Stats

log = logging.getLogger(__name__)


class WorkerPool:
    """Health of every worker, a probe task per worker, and ``call`` for batch calls."""

    def __init__(self, workers: list, cfg: HealthConfig, clock: Clock, stats: Stats,
                 on_change: Callable[[], None] = lambda: None, sleep=asyncio.sleep):
        self.workers, self.cfg, self.clock, self.stats = workers, cfg, clock, stats
        self.on_change = on_change
        """Called when a worker leaves or rejoins the rotation (the engine re-plans its queue)."""
        self._sleep = sleep
        self.health = {id(w): WorkerHealth(cfg) for w in workers}
        self._picked = {id(w): 0 for w in workers}
        self._picks = 0
        self._probes: list[asyncio.Task] = []
        self._warmup = None
        for w in workers:
            self._publish(w)

    # -- rotation ------------------------------------------------------------------------------
    def pick(self, max_inflight: int, ready: Callable[[object], bool] | None = None):
        """A healthy worker with room for another batch: fewest batches in flight, then the one
        picked longest ago (so every worker keeps serving, and a re-admitted one gets work).
        ``ready(worker)``, if given, must also hold (the engine's pipelining: a second batch only
        shortly before the first is expected to end)."""
        free = [w for w in self.workers if w.healthy and w.inflight < max_inflight and (ready is None or ready(w))]
        if not free:
            return None
        w = min(free, key=lambda w: (w.inflight, self._picked[id(w)]))
        self._picks += 1
        self._picked[id(w)] = self._picks
        return w

    def any_healthy(self) -> bool:
        return any(w.healthy for w in self.workers)

    def _publish(self, w) -> None:
        w.healthy = self.health[id(w)].healthy
        self.stats.worker_healthy[w.url] = int(w.healthy)

    def _apply(self, w, event: Event | None) -> None:
        self._publish(w)
        h = self.health[id(w)]
        if event is Event.DOWN:
            log.warning("worker %s out of rotation (%s); probing it again in %.1f s", w.url, h.reason,
                        (h.next_probe_ms - self.clock.now_ms()) / 1000)
            self.on_change()
        elif event is Event.UP:
            self.stats.worker_readmissions[w.url] += 1
            log.warning("worker %s back in rotation", w.url)
            self.on_change()

    def mark_failed(self, w, reason: str) -> None:
        """A call to ``w`` failed (``reason``: error or hang): out of rotation now."""
        self.stats.worker_failures[(w.url, reason)] += 1
        self._apply(w, self.health[id(w)].call_failed(self.clock.now_ms(), reason))

    # -- batch calls ---------------------------------------------------------------------------
    async def call(self, w, infer: Awaitable, expected_ms: float):
        """Await ``infer`` (a batch call to ``w``) under the hang rule. A hang cancels the call and
        raises WorkerFailed; a failure that is the worker's (anything but NOT_THE_WORKERS_FAULT) takes the
        worker out of rotation and is raised again for the engine to retry or answer."""
        limit_ms = self.cfg.hang_after_ms(expected_ms)
        task = asyncio.ensure_future(infer)
        try:
            done, _ = await asyncio.wait({task}, timeout=limit_ms / 1000)
        except asyncio.CancelledError:  # the engine is closing: do not leave the call behind
            task.cancel()
            raise
        if not done:
            task.cancel()
            self.stats.worker_batches[(w.url, "hung")] += 1
            self.mark_failed(w, "hang")
            raise WorkerFailed(f"worker {w.url}: no answer after {limit_ms:.0f} ms (batch expected to take "
                               f"{expected_ms:.1f} ms); abandoned as hung")
        try:
            result = task.result()
        except NOT_THE_WORKERS_FAULT as e:
            self.stats.worker_batches[(w.url, "invalid" if isinstance(e, InvalidInput) else "deadline")] += 1
            raise
        except Exception:
            self.stats.worker_batches[(w.url, "failed")] += 1
            self.mark_failed(w, "error")
            raise
        self.stats.worker_batches[(w.url, "ok")] += 1
        self.health[id(w)].call_ok()
        return result

    # -- probes --------------------------------------------------------------------------------
    def start(self, warmup: Callable[[object], Awaitable] | None = None) -> None:
        """Start one probe task per worker. ``warmup(worker)``, if given, is a small inference sent
        to a worker that answers ready before it is taken back into rotation."""
        self._warmup = warmup
        now = self.clock.now_ms()
        for w in self.workers:
            self.health[id(w)].next_probe_ms = now + self.cfg.probe_interval_s * 1000
            self._probes.append(asyncio.get_running_loop().create_task(self._probe_loop(w)))

    async def _probe_loop(self, w) -> None:
        h = self.health[id(w)]
        while True:
            delay_ms = h.next_probe_ms - self.clock.now_ms()
            if delay_ms > 0:
                await self._sleep(delay_ms / 1000)
                continue  # a failed call may have moved the next probe meanwhile
            ok, why = await self.probe(w, warm=not h.healthy)
            if not ok:
                self.stats.worker_failures[(w.url, "probe")] += 1
            self._apply(w, h.probe_result(ok, self.clock.now_ms(), why))

    async def probe(self, w, warm: bool) -> tuple[bool, str]:
        """Is ``w`` ready (and, with ``warm``, does it answer one small inference)?"""
        try:
            if not await asyncio.wait_for(w.ready(), self.cfg.probe_timeout_s):
                return False, "probe: not ready"
        except asyncio.TimeoutError:
            return False, f"probe: no answer in {self.cfg.probe_timeout_s:g} s"
        except Exception as e:  # noqa: BLE001 - any transport error means not ready
            return False, f"probe: {type(e).__name__}"
        if warm and self._warmup is not None:
            try:
                await asyncio.wait_for(self._warmup(w), self.cfg.warmup_timeout_s)
            except Exception as e:  # noqa: BLE001 - TimeoutError included
                return False, f"warm-up inference failed: {type(e).__name__}: {e}"[:200]
        return True, ""

    async def close(self) -> None:
        for t in self._probes:
            t.cancel()
        for t in self._probes:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._probes.clear()
