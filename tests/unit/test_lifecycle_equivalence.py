"""The live engine and the simulator drive one request life cycle: on the same bursty trace, with stand-in
workers on a virtual clock, every policy makes the same batches (time, worker, subnet, requests) and every
request meets the same fate (answer subnet, stages run, error class, time) on both sides.

The engine runs for real (asyncio tasks, futures, timers, the worker pool and its hang rule) on an event
loop whose clock jumps to the next timer instead of sleeping; its stand-in workers run one batch at a time,
taking the profile's latency times a seeded lognormal draw, as the simulator's workers do. A rule changed
in the engine's driver or the simulator's alone (when to pump, the sweep, pipelining, escalation, Clipper's
feedback) changes one of the two sequences and fails this test."""
from __future__ import annotations

import asyncio
import selectors

import numpy as np
import pytest

from superserve.client.traces import bursty
from superserve.scheduler.core.admission import RequestParams
from superserve.scheduler.sidecar.triton_worker import SupernetWorker
from superserve.scheduler.sidecar.engine import Engine, EngineConfig
from superserve.scheduler.core.errors import ServeError
from superserve.scheduler.core.gears import Gear, GearPlan, Stage
from superserve.scheduler.core.latency_model import LatencyModelConfig
from superserve.scheduler.policies import make_policy
from superserve.scheduler.offline.sim import SimConfig, SimRequest, simulate
from tests.conftest import committed_profile as profile

PROFILE = profile()
SUBNETS = [s.name for s in PROFILE.subnets]
MID = SUBNETS[len(SUBNETS) // 2]
SLOW = SUBNETS[-5]
SIGMA, SEED, WORKERS, MARGIN_MS, QUANTILE = 0.2, 5, 2, 2.0, 0.9
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


class Record:
    """A validation record stand-in: a seeded confidence and correctness per (subnet, sample)."""

    def __init__(self, n: int):
        rng = np.random.default_rng(3)
        self._conf = {s: rng.random(n) for s in SUBNETS}
        self._correct = {s: rng.random(n) < PROFILE.get(s).accuracy for s in SUBNETS}

    def confidence(self, subnet: str, measure: str) -> np.ndarray:
        return self._conf[subnet]

    def correct(self, subnet: str) -> np.ndarray:
        return self._correct[subnet]


class Timeline:
    """The jitter both sides draw, in dispatch order (the simulator's rule: one lognormal draw per batch)."""

    def __init__(self):
        self.rng = np.random.default_rng(SEED)

    def ms(self, subnet: str, rows: int) -> float:
        return PROFILE.get(subnet).at(rows) * float(self.rng.lognormal(0.0, SIGMA))


class StandIn(SupernetWorker):
    """One Triton instance: batches run one after another, each for the profile's latency times the draw."""

    def __init__(self, index: int, timeline: Timeline, record: Record, clock: VirtualClock, batches: list):
        self.url, self.index, self.timeline, self.record, self.clock, self.batches = \
            f"standin-{index}", index, timeline, record, clock, batches
        self._lock = asyncio.Lock()
        self.pipelined = 0

    async def ready(self) -> bool:
        return True

    async def infer(self, images, subnet, timeout_s):
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


def trace() -> list[SimRequest]:
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


def plan() -> GearPlan:
    return GearPlan((Gear(0, 500, (Stage(SUBNETS[4], 0.5), Stage(MID, 0.6), Stage(SUBNETS[-1], None)), 8),
                     Gear(500, 1e9, (Stage(SUBNETS[0], 0.4), Stage(SUBNETS[8], None)), 32)))


POLICIES = {"slackfit": lambda: make_policy("slackfit"),
            "fixed": lambda: make_policy("fixed", subnet=SLOW),
            "clipper": lambda: make_policy("clipper", subnet=SLOW),
            "cascade": lambda: make_policy("cascade", plan=plan()),
            "infaas": lambda: make_policy("infaas", load_ms=5000.0)}


def fates_of_sim(outs) -> list[tuple]:
    return [(o.error,) if o.error else (o.subnet, tuple(o.subnets), o.done_ms) for o in outs]


def run_sim(policy, reqs, record) -> tuple[list, list]:
    batches: list = []
    cfg = SimConfig(workers=WORKERS, margin_ms=MARGIN_MS, default_min_confidence=0.3, jitter_sigma=SIGMA, seed=SEED,
                    latency=LatencyModelConfig(quantile=QUANTILE))
    outs = simulate(policy, PROFILE, reqs, record, cfg, batches)
    return [(b.at_ms, b.worker, b.subnet, b.requests) for b in batches], fates_of_sim(outs)


def run_engine(policy, reqs, record) -> tuple[list, list, int]:
    loop = VirtualLoop()
    clock, batches, timeline = VirtualClock(loop), [], Timeline()
    workers = [StandIn(k, timeline, record, clock, batches) for k in range(WORKERS)]
    cfg = EngineConfig(margin_ms=MARGIN_MS, default_min_confidence=0.3, latency_quantile=QUANTILE,
                       queue_capacity=100_000)
    fates: list = [None] * len(reqs)

    async def one(i: int, r: SimRequest, engine: Engine) -> None:
        image = np.full((1, 1, 28, 28), float(i), np.float32)
        try:
            a = await engine.infer(image, RequestParams(r.slo_ms, r.min_accuracy, None, r.min_confidence))
        except ServeError as e:
            fates[i] = (type(e).__name__,)
            return
        fates[i] = (a.subnet, a.subnets, a.done_ms)

    async def main() -> None:
        engine = Engine(cfg, PROFILE, policy, workers, clock=clock)
        tasks = []
        try:
            for i, r in enumerate(reqs):  # one sender, so requests arriving at the same time keep their order
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


def same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= TOL_MS if isinstance(x, float) and isinstance(y, float) else x == y
                                    for x, y in zip(a, b))


def first_difference(xs: list, ys: list) -> str | None:
    for k, (x, y) in enumerate(zip(xs, ys)):
        if not same(x, y):
            return f"#{k}: engine {x} != simulator {y}"
    return None if len(xs) == len(ys) else f"engine {len(xs)} items, simulator {len(ys)}"


@pytest.mark.parametrize("name", list(POLICIES))
def test_engine_and_simulator_make_the_same_decisions(name):
    reqs = trace()
    record = Record(len(reqs))
    eb, ef, pipelined = run_engine(POLICIES[name](), reqs, record)
    sb, sf = run_sim(POLICIES[name](), reqs, record)
    assert first_difference(eb, sb) is None, "batches differ: " + first_difference(eb, sb)
    assert first_difference(ef, sf) is None, "fates differ: " + first_difference(ef, sf)
    # The trace exercises what could differ: batching, drops, floors, and per policy its own rules.
    errors = {f[0] for f in ef if len(f) == 1}
    assert max(len(b[3]) for b in eb) >= 4 and "InvalidInput" in errors, (errors, len(eb))
    if name != "clipper":  # Clipper serves late rather than drop
        assert "DeadlineInfeasible" in errors
    if name in ("slackfit", "cascade"):
        assert sum(len(f) == 3 and len(f[1]) > 1 for f in ef) >= 10  # escalations
    if name in ("slackfit", "fixed"):  # batches sent to a worker still running one
        assert pipelined >= 10, pipelined
    if name == "clipper":  # the AIMD cap grew from 1: observe() ran on both sides
        assert max(len(b[3]) for b in eb) >= 8
