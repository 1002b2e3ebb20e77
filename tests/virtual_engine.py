"""A harness for engine-versus-simulator tests: the live engine (asyncio tasks, futures, timers, the worker pool)
on an event loop whose clock jumps to the next timer instead of sleeping, with stand-in workers that take the
profile's latency times a seeded lognormal draw per batch, as the simulator's workers do. Used by
tests/unit/test_lifecycle_equivalence.py (one model) and tests/unit/test_multimodel.py (two models), so neither
test module imports the other."""

from __future__ import annotations

import asyncio
import selectors
from typing import Callable

import numpy as np

from superserve.client.traces import bursty
from superserve.scheduler.core.admission import RequestParams
from superserve.scheduler.core.errors import ServeError
from superserve.scheduler.offline.sim import SimRequest
from superserve.scheduler.sidecar.engine import Engine
from superserve.scheduler.sidecar.triton_worker import SupernetWorker

SIGMA, SEED, WORKERS, MARGIN_MS, QUANTILE = 0.2, 5, 2, 2.0, 0.9
"""Jitter of batch latency (lognormal sigma), its seed, workers, the engine's margin and planning quantile."""
TOL_MS = 1e-6


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock: when nothing is ready it jumps to the next timer, at once."""

    def __init__(self):
        self.now_s = 0.0
        loop = self

        class Instant(selectors.DefaultSelector):
            def select(self, timeout=None):
                if timeout and loop._scheduled:
                    loop.now_s = max(loop.now_s, loop._scheduled[0].when())
                return super().select(0)

        super().__init__(Instant())

    def time(self) -> float:
        return self.now_s


class VirtualClock:
    def __init__(self, loop: VirtualLoop):
        self.loop = loop

    def now_ms(self) -> float:
        return self.loop.time() * 1000


class SeededRecord:
    """A validation record stand-in: a seeded confidence and correctness per (subnet, sample)."""

    def __init__(self, accuracy: dict[str, float], n: int):
        rng = np.random.default_rng(3)
        self._conf = {s: rng.random(n) for s in accuracy}
        self._correct = {s: rng.random(n) < a for s, a in accuracy.items()}

    def confidence(self, subnet: str, measure: str) -> np.ndarray:
        return self._conf[subnet]

    def correct(self, subnet: str) -> np.ndarray:
        return self._correct[subnet]


class Timeline:
    """The jitter both sides draw, in dispatch order (the simulator's rule: one lognormal draw per batch) on
    ``latency_ms(subnet, rows)``, the profile's latency."""

    def __init__(self, latency_ms: Callable[[str, int], float]):
        self.latency_ms = latency_ms
        self.rng = np.random.default_rng(SEED)

    def ms(self, subnet: str, rows: int) -> float:
        return self.latency_ms(subnet, rows) * float(self.rng.lognormal(0.0, SIGMA))


class StandIn(SupernetWorker):
    """One Triton instance: batches run one after another, each for the profile's latency times the draw.
    ``owner`` (subnet -> model): a worker of several models, whose calls must name the model owning the subnet."""

    def __init__(self, index: int, timeline: Timeline, record: SeededRecord, clock: VirtualClock, batches: list,
                 owner: dict[str, str] | None = None):
        self.url, self.index, self.timeline, self.record, self.clock, self.batches = \
            f"standin-{index}", index, timeline, record, clock, batches
        self.owner = owner
        self._lock = asyncio.Lock()
        self.pipelined = 0

    async def ready(self) -> bool:
        return True

    async def infer(self, images, subnet, timeout_s, model=None):
        if self.owner is not None:
            assert self.owner[subnet] == model, (subnet, model)
        samples = [int(round(float(x))) for x in images[:, 0, 0, 0]]
        self.batches.append((self.clock.now_ms(), self.index, subnet, tuple(samples)))
        ms = self.timeline.ms(subnet, len(images))  # drawn at dispatch, as the simulator does
        self.pipelined += self._lock.locked()  # sent while the batch before it still runs
        async with self._lock:
            await asyncio.sleep(ms / 1000)
        conf = self.record.confidence(subnet, "max_softmax")
        return (np.zeros((len(images), 10), np.float32),
                [{"subnet": subnet, "confidence": float(conf[s]), "margin": float(conf[s])} for s in samples])

    async def close(self) -> None:
        pass


def bursty_trace() -> list[SimRequest]:
    """Bursty (CV² 8) around the capacity of two workers, with accuracy floors (one unattainable) and some
    requests that set their own confidence threshold."""
    t = bursty(400.0, 900.0, 8.0, 2.0, seed=11)
    rng = np.random.default_rng(12)
    # Off the trace's microsecond grid: the engine's clock (seconds) and the simulator's (ms) round
    # differently in the last bit, so an exact tie between two deadlines could fall either way.
    arrivals = np.sort(np.asarray(t.arrivals_s) * 1000 + rng.random(len(t.arrivals_s)) * 1e-3)
    out = []
    for i, a in enumerate(arrivals):
        floor = rng.choice([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.92, 0.99])
        slo = float(rng.choice([15.0, 40.0, 60.0, 100.0, 150.0]))  # 15: below the slow subnets even at the median
        conf = float(rng.random()) if rng.random() < 0.1 else None
        out.append(SimRequest(float(a), slo, i, float(floor), conf))
    return out


def run_engine(make_engine: Callable[[VirtualClock, list[StandIn]], Engine], reqs: list[SimRequest],
               timeline: Timeline, record: SeededRecord, owner: dict[str, str] | None = None
               ) -> tuple[list, list, int]:
    """Replay ``reqs`` through the engine ``make_engine(clock, workers)`` builds: each request sent at its arrival
    (one sender, so requests arriving at the same time keep their order), every one awaited, the engine closed.
    Returns the batches (time, worker, subnet, samples), each request's fate ((subnet, stages, done ms) or (error
    class,)) and how many batches were sent to a worker still running one."""
    loop = VirtualLoop()
    clock, batches = VirtualClock(loop), []
    workers = [StandIn(k, timeline, record, clock, batches, owner) for k in range(WORKERS)]
    fates: list = [None] * len(reqs)

    async def one(i: int, r: SimRequest, engine: Engine) -> None:
        image = np.full((1, 1, 28, 28), float(i), np.float32)
        try:
            a = await engine.infer(image, RequestParams(r.slo_ms, r.min_accuracy, None, r.min_confidence), r.model)
        except ServeError as e:
            fates[i] = (type(e).__name__,)
            return
        fates[i] = (a.subnet, a.subnets, a.done_ms)

    async def main() -> None:
        engine = make_engine(clock, workers)
        tasks = []
        try:
            for i, r in enumerate(reqs):
                if r.arrival_ms / 1000 > loop.time():
                    await asyncio.sleep(r.arrival_ms / 1000 - loop.time())
                tasks.append(asyncio.create_task(one(i, r, engine)))
            await asyncio.wait_for(asyncio.gather(*tasks), 3600)
        finally:
            await engine.close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return batches, fates, sum(w.pipelined for w in workers)


def fates_of_sim(outs) -> list[tuple]:
    return [(o.error,) if o.error else (o.subnet, tuple(o.subnets), o.done_ms) for o in outs]


def same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= TOL_MS if isinstance(x, float) and isinstance(y, float) else x == y
                                    for x, y in zip(a, b))


def first_difference(xs: list, ys: list) -> str | None:
    for k, (x, y) in enumerate(zip(xs, ys)):
        if not same(x, y):
            return f"#{k}: engine {x} != simulator {y}"
    return None if len(xs) == len(ys) else f"engine {len(xs)} items, simulator {len(ys)}"
