"""``add_worker(worker)`` and ``remove_worker(url)`` on today's engine and worker pool, which fix their workers
at start. The fleet (fleet.py) makes no other call into the pool, so this module is the whole seam: once the
pool has these two methods itself, ``PoolMembership(engine)`` is replaced by ``engine.pool`` and this file goes.

It reaches into the engine's and the pool's per-worker state (the only module allowed to): a worker joins the
list both share (so the engine's worker choice sees it), with fresh health, pick order and batch slots, and
its own probe task once the probes run; it leaves the list first (no new batches), then its probe stops, then
``worker.close()`` finishes its calls in flight (metered_worker.py). The per-worker entries a removed worker
leaves in the engine stay (a few hundred bytes each): the last batch's bookkeeping may still read them."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from .health import WorkerHealth

log = logging.getLogger(__name__)


class PoolMembership:
    def __init__(self, engine):
        self.engine, self.pool = engine, engine.pool
        if self.pool.workers is not engine.workers:
            raise RuntimeError("the engine and its pool no longer share one worker list; use the pool's own "
                               "add_worker/remove_worker")
        self._probes: dict[int, asyncio.Task] = {}

    @property
    def workers(self) -> list:
        return list(self.pool.workers)

    def add_worker(self, w) -> None:
        """Put a ready worker into rotation now (the caller probed and warmed it)."""
        pool, engine = self.pool, self.engine
        if any(x.url == w.url for x in pool.workers):
            raise ValueError(f"worker {w.url} is already in the pool")
        engine._slots[id(w)] = deque()
        engine._last_done[id(w)] = -1e18
        pool.health[id(w)] = WorkerHealth(pool.cfg)
        pool._picked[id(w)] = 0
        w.inflight = 0
        pool.workers.append(w)
        pool._publish(w)
        pool.stats.worker_inflight[w.url] = 0
        if pool._probes:  # the probes run: this one gets its own
            pool.health[id(w)].next_probe_ms = pool.clock.now_ms() + pool.cfg.probe_interval_s * 1000
            task = asyncio.get_running_loop().create_task(pool._probe_loop(w))
            pool._probes.append(task)
            self._probes[id(w)] = task
        log.info("worker %s joined the pool (%d workers)", w.url, len(pool.workers))
        pool.on_change()

    def _probe_of(self, w) -> asyncio.Task | None:
        task = self._probes.pop(id(w), None)
        if task is not None:
            return task
        for t in self.pool._probes:  # a worker of the start: its probe task was made by pool.start()
            frame = t.get_coro().cr_frame
            if frame is not None and frame.f_locals.get("w") is w:
                return t
        return None

    async def remove_worker(self, url: str):
        """Take the worker at ``url`` out of rotation for good (no new batches), stop its probe, then close it
        (its calls in flight end first). Returns the worker."""
        pool = self.pool
        w = next((x for x in pool.workers if x.url == url), None)
        if w is None:
            raise KeyError(f"no worker {url} in the pool")
        pool.workers.remove(w)
        probe = self._probe_of(w)
        if probe is not None:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
            with contextlib.suppress(ValueError):
                pool._probes.remove(probe)
        pool.stats.worker_healthy.pop(url, None)
        log.info("worker %s left the pool (%d workers)", url, len(pool.workers))
        pool.on_change()
        await w.close()
        pool.stats.worker_inflight.pop(url, None)
        return w
