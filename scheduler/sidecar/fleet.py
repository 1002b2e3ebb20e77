"""The workers the scheduler owns, kept at a target count: discovery, admission, drain and stop.

A backend makes the workers: local processes (local_workers.py, ``serve --workers N``) or Ray actors
(ray_workers.py, ``serve --ray``). It answers three calls: ``start()`` a worker, ``address(handle)`` (where it
serves now, or None while it is down or restarting) and ``stop(handle)``. The fleet polls every worker's
address; the only calls it makes into the scheduler's pool are ``add_worker(worker)`` and
``remove_worker(url)`` (worker_pool.WorkerPool).

- **Admission**: a new worker, or one that came back under a new address or incarnation (Ray restarted the
  actor, or a local process was started again), joins the pool after a readiness probe of every served model
  and a warm-up inference of each, as the pool re-admits a worker that was down.
- **Loss**: a worker whose address changed or is gone is taken out of the pool at once, without waiting for
  its calls (they fail, and the engine retries their requests on the others).
- **Drain on scale-down**: the worker chosen (one still starting if any, else the newest) leaves the pool first,
  so it gets no new batch; its calls in flight end (metered_worker.py); then it is stopped. No request is lost:
  each one in flight is answered by that worker or, if it failed, retried or answered with an error by the engine,
  once.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from ..core.stats import Stats
from .metered_worker import MeteredWorker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetConfig:
    poll_s: float = 0.5
    """How often each worker's address is checked (a lost worker is dropped within this, plus the backend's
    answer time)."""
    address_timeout_s: float = 1.0
    """A backend that does not say where a worker serves within this counts it as down (a restarting actor)."""
    admit_timeout_s: float = 60.0
    """Readiness probe plus warm-up inference of a new or restarted worker."""
    drain_timeout_s: float = 30.0
    """Longest wait for a removed worker's calls in flight (the engine's hang rule ends a hung one sooner)."""
    start_timeout_s: float = 300.0
    """A worker with no address this long after it was started is given up and started afresh."""

    def __post_init__(self):
        if min(self.poll_s, self.address_timeout_s, self.admit_timeout_s, self.drain_timeout_s,
               self.start_timeout_s) <= 0:
            raise ValueError(f"every fleet time must be > 0, got {self}")


@dataclass(eq=False)
class _Unit:
    handle: object = None
    worker: MeteredWorker | None = None
    incarnation: str | None = None
    retiring: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


class Fleet:
    def __init__(self, backend, cfg: FleetConfig, stats: Stats, models: tuple[str, ...] = ("supernet",),
                 warmup: Callable[[MeteredWorker], Awaitable] | None = None):
        self.backend, self.cfg, self.stats = backend, cfg, stats
        self.models = tuple(models)
        """Every model each worker serves (``serve --models``): a worker is admitted once all are ready."""
        self.warmup = warmup
        """A small inference sent to a worker before it joins (None: readiness only); with several models, one
        per model (factories.PolicyFactory.warmup)."""
        self.rows: Counter[str] = Counter()
        """Rows every worker of the fleet ran, per model, since the start (the autoscaler's demand)."""
        self.target = 0
        self.units: list[_Unit] = []
        self.membership = None
        self._closing = False

    # -- counts ---------------------------------------------------------------------------------
    @property
    def actual(self) -> int:
        """Workers the fleet has in the pool (not draining). One the pool took out of rotation for a failed call
        or probe still counts until its backend says it is gone: the pool's health is the pool's business."""
        return sum(1 for u in self.units if not u.retiring and u.worker is not None)

    @property
    def workers(self) -> list[MeteredWorker]:
        """Workers in the pool (draining ones excluded)."""
        return [u.worker for u in self.units if not u.retiring and u.worker is not None]

    def publish(self) -> None:
        self.stats.workers_target = self.target
        self.stats.workers_actual = self.actual
        self.stats.workers_draining = sum(1 for u in self.units if u.retiring)

    # -- start ----------------------------------------------------------------------------------
    async def start(self, n: int) -> list[MeteredWorker]:
        """Start ``n`` workers and return them once ready (before the engine exists; ``attach`` next)."""
        self.target = n
        units = [_Unit() for _ in range(n)]
        self.units += units
        try:
            await asyncio.gather(*(self._first_start(u) for u in units))
        except BaseException:
            await self.close()
            raise
        self.publish()
        return [u.worker for u in units]

    async def _first_start(self, u: _Unit) -> None:
        u.handle = await self.backend.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.start_timeout_s
        while True:
            ep = await self.backend.address(u.handle, self.cfg.address_timeout_s)
            if ep is not None:
                w = MeteredWorker(ep.url, self.models, self.cfg.drain_timeout_s, self.rows)
                if await self._ready(w):
                    u.worker, u.incarnation = w, ep.incarnation
                    log.info("worker %s ready (%s)", ep.url, self.backend.describe(u.handle))
                    return
                await w.close()
            if loop.time() > deadline:
                raise RuntimeError(f"worker {self.backend.describe(u.handle)} not ready after "
                                   f"{self.cfg.start_timeout_s:.0f} s")
            await asyncio.sleep(self.cfg.poll_s)

    def attach(self, membership) -> None:
        """Hand the fleet the pool (``add_worker``/``remove_worker``) and start watching every worker."""
        self.membership = membership
        for u in self.units:
            u.task = asyncio.get_running_loop().create_task(self._life(u))

    # -- target ---------------------------------------------------------------------------------
    def set_target(self, n: int) -> None:
        """Start or retire workers until ``n`` are live (retiring ones drain, then stop)."""
        self.target = n
        live = [u for u in self.units if not u.retiring]
        for _ in range(n - len(live)):
            u = _Unit()
            self.units.append(u)
            u.task = asyncio.get_running_loop().create_task(self._life(u))
        if len(live) > n:  # still-starting ones first, then the newest
            order = sorted(range(len(live)), key=lambda i: (live[i].worker is not None, -i))
            for i in order[:len(live) - n]:
                live[i].retiring = True
                live[i].wake.set()
        self.publish()

    # -- one worker's life ----------------------------------------------------------------------
    async def _life(self, u: _Unit) -> None:
        try:
            if u.handle is None:
                try:
                    u.handle = await self.backend.start()
                except Exception as e:  # noqa: BLE001 - started afresh after a pause
                    log.warning("starting a %s worker failed: %s", self.backend.name, str(e)[:500])
                    await self._pause()
                    self._replace(u)
                    return
                log.info("%s started", self.backend.describe(u.handle))
            since = asyncio.get_running_loop().time()
            while not u.retiring:
                ep = await self.backend.address(u.handle, self.cfg.address_timeout_s)
                if u.worker is not None and (ep is None or ep.url != u.worker.url or ep.incarnation != u.incarnation):
                    await self._drop(u, "its backend has no address for it" if ep is None else
                                     f"it serves at {ep.url} now (restarted)")
                if ep is not None and u.worker is None and not u.retiring:
                    await self._admit(u, ep)
                if u.worker is not None:
                    since = asyncio.get_running_loop().time()
                elif asyncio.get_running_loop().time() - since > self.cfg.start_timeout_s and not u.retiring:
                    log.warning("%s has had no address for %.0f s; starting another", self.backend.describe(u.handle),
                                self.cfg.start_timeout_s)
                    await self.backend.stop(u.handle)
                    self._replace(u)
                    return
                self.publish()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(u.wake.wait(), self.cfg.poll_s)
            await self._retire(u)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not leave a worker running untracked
            log.exception("worker life cycle failed; stopping it")
            with contextlib.suppress(Exception):
                await self._retire(u)

    async def _pause(self) -> None:
        await asyncio.sleep(5.0)

    def _replace(self, u: _Unit) -> None:
        """``u`` is gone for good: forget it and start another if the target still wants it."""
        with contextlib.suppress(ValueError):
            self.units.remove(u)
        if not self._closing and not u.retiring:
            self.set_target(self.target)

    async def _ready(self, w: MeteredWorker) -> bool:
        try:
            if not await asyncio.wait_for(w.ready(), self.cfg.admit_timeout_s):
                return False
            if self.warmup is not None:
                await asyncio.wait_for(self.warmup(w), self.cfg.admit_timeout_s)
            return True
        except Exception as e:  # noqa: BLE001 - not ready yet; tried again at the next poll
            log.debug("worker %s not ready: %s", w.url, e)
            return False

    async def _admit(self, u: _Unit, ep) -> None:
        w = MeteredWorker(ep.url, self.models, self.cfg.drain_timeout_s, self.rows)
        if not await self._ready(w) or u.retiring or self._closing:
            await w.close()
            return
        self.membership.add_worker(w)
        u.worker, u.incarnation = w, ep.incarnation
        self.stats.worker_admissions += 1
        log.info("worker %s admitted (%s; %d of target %d in the pool)", ep.url, self.backend.describe(u.handle),
                 self.actual, self.target)
        self.publish()

    async def _drop(self, u: _Unit, why: str) -> None:
        w, u.worker, u.incarnation = u.worker, None, None
        w.abandoned = True  # dead: its calls fail on their own, nothing to wait for
        self.stats.workers_lost += 1
        log.warning("worker %s lost (%s): out of the pool now", w.url, why)
        self.publish()
        with contextlib.suppress(KeyError):
            await self.membership.remove_worker(w.url)

    async def _retire(self, u: _Unit) -> None:
        """Drain (out of the pool, calls in flight finished), then stop."""
        if u.worker is not None:
            w = u.worker
            log.info("draining worker %s (%d call(s) in flight)", w.url, w.calls)
            with contextlib.suppress(KeyError):
                await self.membership.remove_worker(w.url)  # returns once its calls in flight ended
            u.worker = None
        if u.handle is not None:
            await self.backend.stop(u.handle)
            log.info("%s stopped", self.backend.describe(u.handle))
        with contextlib.suppress(ValueError):
            self.units.remove(u)
        self.publish()

    # -- stop -----------------------------------------------------------------------------------
    async def stop_watching(self) -> None:
        """No more admissions, drops or drains (the scheduler is shutting down)."""
        self._closing = True
        tasks = [u.task for u in self.units if u.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stop every worker (after ``stop_watching`` and the engine's close)."""
        await self.stop_watching()
        await asyncio.gather(*(self.backend.stop(u.handle) for u in self.units if u.handle is not None),
                             return_exceptions=True)
        self.units.clear()
        await self.backend.close()
