"""The workers behind the scheduler: who is in rotation, the readiness probe loop, batch calls watched for
failure and hangs, and workers joining or leaving at run time. The rules live in core/health.py (pure); this
module applies them with asyncio and publishes them in ``Stats`` (``sched_worker_*``, metrics.py).

The pool owns the scheduler's state of each worker (roster.WorkerState: in rotation, batches in flight,
last pick), which the request life cycle reads; the worker objects themselves (triton_worker.Worker) are
transports and carry none of it."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Awaitable, Callable

from ..core.clock import Clock
from ..core.errors import Cancelled, DeadlineInfeasible, InvalidInput, WorkerFailed
from ..core.health import Event, HealthConfig, WorkerHealth
from ..core.roster import Roster, WorkerState
from ..core.stats import Stats
from .triton_worker import Worker

NOT_THE_WORKERS_FAULT = (InvalidInput, DeadlineInfeasible, Cancelled)
"""Errors of a call that say nothing about the worker's health: a bad request, or the call's own
deadline or cancellation (set by the scheduler for the request). One such request must never take a
worker out of rotation for everyone else (issue 12)."""

log = logging.getLogger(__name__)


class WorkerPool:
    """Every worker with its state and health, a probe task per worker, and ``call`` for batch calls."""

    def __init__(self, workers: list[Worker], cfg: HealthConfig, clock: Clock, stats: Stats,
                 on_change: Callable[[], None] = lambda: None, sleep=asyncio.sleep, roster: Roster | None = None):
        self.cfg, self.clock, self.stats = cfg, clock, stats
        self.roster = roster if roster is not None else Roster()
        self.on_change = on_change
        """Called when a worker leaves or rejoins the rotation, or the pool (the engine re-plans its queue)."""
        self._sleep = sleep
        self._workers: dict[int, Worker] = {}
        self.health: dict[int, WorkerHealth] = {}
        self._probes: dict[int, asyncio.Task] = {}
        self._started = False
        self._warmup = None
        for w in workers:
            self._add(w)

    # -- membership ----------------------------------------------------------------------------
    @property
    def workers(self) -> list[Worker]:
        return list(self._workers.values())

    def worker(self, state: WorkerState) -> Worker:
        """The transport of a worker the roster picked."""
        return self._workers[state.key]

    def state(self, w: Worker) -> WorkerState:
        return self.roster.get(id(w))

    def _add(self, w: Worker) -> WorkerState:
        if any(x.url == w.url for x in self._workers.values()):
            raise ValueError(f"worker {w.url} is already in the pool")
        s = self.roster.add(id(w), w.url, loaded=lambda: w.loaded)
        self._workers[id(w)] = w
        self.health[id(w)] = WorkerHealth(self.cfg)
        self._publish(s)
        return s

    def add_worker(self, w: Worker) -> WorkerState:
        """Put a (ready) worker into rotation now; its probes start with the pool's."""
        s = self._add(w)
        if self._started:
            self._start_probe(w)
        log.warning("worker %s joined the pool", w.url)
        self.on_change()
        return s

    async def remove_worker(self, url: str) -> Worker:
        """Take the worker at ``url`` out of the pool for good and close it. Its batches in flight end as
        usual (answered, or failed and retried elsewhere); queued requests are re-planned on the others,
        or refused with 503 if none is left."""
        w = next((x for x in self._workers.values() if x.url == url), None)
        if w is None:
            raise KeyError(f"no worker {url} in the pool")
        # Out of rotation first, synchronously: nothing below may delay it.
        del self._workers[id(w)]
        self.roster.remove(id(w))
        self.stats.worker_healthy.pop(w.url, None)
        self.stats.worker_inflight.pop(w.url, None)
        log.warning("worker %s left the pool", w.url)
        self.on_change()
        probe = self._probes.pop(id(w), None)
        if probe is not None:  # its loop also ends by itself once the worker is gone: Python 3.11's wait_for
            probe.cancel()     # may swallow a cancel that lands as the probe's own call returns
            await asyncio.wait({probe}, timeout=5)
        self.health.pop(id(w), None)
        await w.close()
        return w

    # -- rotation ------------------------------------------------------------------------------
    def any_healthy(self) -> bool:
        return self.roster.any_healthy()

    def _publish(self, s: WorkerState) -> None:
        s.healthy = self.health[s.key].healthy
        self.stats.worker_healthy[s.url] = int(s.healthy)

    def _apply(self, w: Worker, event: Event | None) -> None:
        if id(w) not in self._workers:
            return  # removed meanwhile
        self._publish(self.state(w))
        h = self.health[id(w)]
        if event is Event.DOWN:
            log.warning("worker %s out of rotation (%s); probing it again in %.1f s", w.url, h.reason,
                        (h.next_probe_ms - self.clock.now_ms()) / 1000)
            self.on_change()
        elif event is Event.UP:
            self.stats.worker_readmissions[w.url] += 1
            log.warning("worker %s back in rotation", w.url)
            self.on_change()

    def mark_failed(self, w: Worker, reason: str) -> None:
        """A call to ``w`` failed (``reason``: error or hang): out of rotation now."""
        self.stats.worker_failures[(w.url, reason)] += 1
        if id(w) in self.health:
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
        if id(w) in self.health:
            self.health[id(w)].call_ok()
        return result

    # -- probes --------------------------------------------------------------------------------
    def start(self, warmup: Callable[[Worker], Awaitable] | None = None) -> None:
        """Start one probe task per worker. ``warmup(worker)``, if given, is a small inference sent
        to a worker that answers ready before it is taken back into rotation."""
        self._warmup, self._started = warmup, True
        for w in self._workers.values():
            self._start_probe(w)

    def _start_probe(self, w: Worker) -> None:
        self.health[id(w)].next_probe_ms = self.clock.now_ms() + self.cfg.probe_interval_s * 1000
        self._probes[id(w)] = asyncio.get_running_loop().create_task(self._probe_loop(w))

    async def _probe_loop(self, w) -> None:
        h = self.health[id(w)]
        while id(w) in self._workers:
            delay_ms = h.next_probe_ms - self.clock.now_ms()
            if delay_ms > 0:
                await self._sleep(delay_ms / 1000)
                continue  # a failed call may have moved the next probe meanwhile
            ok, why = await self.probe(w, warm=not h.healthy)
            if id(w) not in self._workers:  # removed while the probe ran
                return
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
        for t in self._probes.values():
            t.cancel()
        for t in self._probes.values():
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._probes.clear()
