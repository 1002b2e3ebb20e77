"""Admission-time shedding wired into the engine (scheduler/core/shedding.py, EngineConfig.admission_shedding), with
a stand-in worker that never answers and a clock that stands still (no sockets): requests the queue ahead
certainly makes late get 503 (Overloaded) at arrival and are counted; the others are queued as before."""
from __future__ import annotations

import asyncio

import numpy as np

from superserve.scheduler.core.admission import RequestParams
from superserve.scheduler.sidecar.engine import Engine, EngineConfig
from superserve.scheduler.core.errors import Overloaded
from superserve.scheduler.sidecar.metrics import render
from superserve.scheduler.policies import make_policy
from superserve.scheduler.core.shedding import peak_rows_per_ms
from tests.conftest import committed_profile as profile
from tests.fakes import StandIn


class StillClock:
    def __init__(self):
        self.t = 1000.0

    def now_ms(self) -> float:
        return self.t


def flood(shedding: bool, n: int, slo_ms: float = 100.0, late_slo_ms: float | None = None, fraction: float = 1.0):
    """Send ``n`` requests of ``slo_ms`` at one instant to an engine whose only worker hangs, then one of
    ``late_slo_ms``; returns (queued, refused with Overloaded, the last one's fate, engine)."""
    cfg = EngineConfig(adapt_latency=False, admission_shedding=shedding, shed_peak_fraction=fraction)
    engine = Engine(cfg, profile(), make_policy("slackfit"), [StandIn("w", "hang")], clock=StillClock())
    x = np.zeros((1, 1, 28, 28), np.float32)

    async def go():
        tasks = [asyncio.create_task(engine.infer(x, RequestParams(slo_ms=slo_ms))) for _ in range(n)]
        if late_slo_ms is not None:
            tasks.append(asyncio.create_task(engine.infer(x, RequestParams(slo_ms=late_slo_ms))))
        await asyncio.sleep(0)  # every task has been admitted (queued) or refused by now
        await asyncio.sleep(0)
        refused = sum(1 for t in tasks if t.done() and isinstance(t.exception(), Overloaded))
        last = "refused" if tasks[-1].done() else "queued"
        queued = len(engine.queue)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await engine.close()
        return queued, refused, last

    return (*asyncio.run(go()), engine)


def test_a_flood_is_refused_at_admission_beyond_what_peak_throughput_can_drain():
    n = 2000
    queued, refused, _, engine = flood(True, n)
    prof, cfg = profile(), engine.cfg
    # What one worker could drain at peak speed before the deadline (minus margin and the request's own time).
    bound = (100.0 - cfg.margin_ms) * peak_rows_per_ms(prof)
    assert refused > 0 and queued + refused == n - 1  # one went to the (hanging) worker
    assert queued <= bound + 1
    assert queued >= 0.5 * bound  # it is not refusing what could be served
    assert engine.stats.shed == refused == engine.stats.requests["overloaded"]
    assert f"sched_shed_total {refused}\n" in render(engine.stats)


def test_without_admission_shedding_the_flood_is_queued():
    queued, refused, _, engine = flood(False, 2000)
    assert refused == 0 and queued == 1999 and engine.stats.shed == 0


def test_a_later_deadline_is_not_behind_the_flood():
    """EDF: only work with an earlier deadline is ahead, so a long-SLO request is still admitted."""
    _, refused, last, engine = flood(True, 2000, late_slo_ms=10_000)
    assert refused > 0 and last == "queued"
    _, _, last, _ = flood(True, 2000, late_slo_ms=100.0)
    assert last == "refused"


def test_a_lower_peak_fraction_refuses_earlier_in_proportion():
    full, _, _, _ = flood(True, 2000)
    half, refused, _, engine = flood(True, 2000, fraction=0.5)
    assert abs(half - full / 2) <= 2 and engine.stats.shed == refused == 1999 - half


def test_peak_fraction_out_of_range_is_refused_at_config():
    import pytest

    for bad in (0.0, -1.0, 1.5):
        with pytest.raises(ValueError, match="shed_peak_fraction"):
            EngineConfig(shed_peak_fraction=bad)


def test_with_a_measured_drain_rate_the_flood_is_refused_at_that_rate():
    """The engine uses its DrainRate once it has seen enough backlogged batches: the queue is cut at what the
    measured rate drains before the deadline, far below the peak bound (``--shed-drain measured``; the default,
    ``peak``, keeps the old bound)."""
    def flood_measured(drain: str, rate: float, n: int = 2000):
        cfg = EngineConfig(adapt_latency=False, shed_drain=drain)
        engine = Engine(cfg, profile(), make_policy("slackfit"), [StandIn("w", "hang")], clock=StillClock())
        for i in range(20):  # batch completions 40 ms apart with requests waiting: `rate` rows/ms
            engine.drain_rate.observe(i * 40.0, int(rate * 40), waiting=True)  # full batches (>= 32 rows)
        x = np.zeros((1, 1, 28, 28), np.float32)

        async def go():
            tasks = [asyncio.create_task(engine.infer(x, RequestParams(slo_ms=100.0))) for _ in range(n)]
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            refused = sum(1 for t in tasks if t.done() and isinstance(t.exception(), Overloaded))
            queued = len(engine.queue)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await engine.close()
            return queued, refused

        return asyncio.run(go())

    queued, refused = flood_measured("measured", 1.0)
    bound = (100.0 - EngineConfig().margin_ms) * 1.0  # rows 1.0 rows/ms drains before deadline minus margin
    assert bound - 10 <= queued <= bound and refused == 1999 - queued
    peak_queued, _ = flood_measured("peak", 1.0)
    assert peak_queued > 3 * queued  # the old bound ignores what was measured
