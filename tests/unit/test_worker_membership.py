"""Workers joining and leaving the pool while the engine serves (WorkerPool.add_worker / remove_worker), with
in-process stand-in workers (no sockets): a new worker takes batches at once; a removed one finishes its batch
in flight and gets no more; with none left, queued requests get 503 and new ones are refused with 503. The
scheduler's own state of a worker lives in the pool's roster, never on the worker object."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from superserve.scheduler.core.admission import RequestParams
from superserve.scheduler.sidecar.triton_worker import SupernetWorker
from superserve.scheduler.sidecar.engine import Engine, EngineConfig
from superserve.scheduler.core.errors import Overloaded
from superserve.scheduler.policies import make_policy
from tests.conftest import committed_profile as profile

X = np.zeros((1, 1, 28, 28), np.float32)


class Slow(SupernetWorker):
    """Answers after ``delay_s``, naming itself in INFO."""

    def __init__(self, url: str, delay_s: float = 0.02):
        self.url, self.delay_s, self.calls, self.closed = url, delay_s, 0, False

    async def ready(self) -> bool:
        return True

    async def infer(self, images, subnet, timeout_s):
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        return np.zeros((len(images), 10), np.float32), [{"subnet": subnet, "url": self.url}] * len(images)

    async def close(self) -> None:
        self.closed = True


def engine_with(*workers) -> Engine:
    return Engine(EngineConfig(adapt_latency=False, margin_ms=0, pipeline=False), profile(), make_policy("slackfit"),
                  list(workers))


async def ask(engine: Engine, slo_ms: float = 5000.0) -> str:
    try:
        return (await engine.infer(X, RequestParams(slo_ms=slo_ms))).infos[0]["url"]
    except Overloaded:
        return "Overloaded"


def test_a_worker_added_at_run_time_takes_batches():
    async def go():
        a, b = Slow("a", 0.05), Slow("b", 0.05)
        engine = engine_with(a)
        try:
            first = await asyncio.gather(*(ask(engine) for _ in range(3)))
            state = engine.pool.add_worker(b)
            assert state.url == "b" and state.healthy and not hasattr(b, "healthy") and not hasattr(b, "inflight")
            with pytest.raises(ValueError, match="already in the pool"):
                engine.pool.add_worker(Slow("b"))
            # One request at a time per worker: two requests at once go one to each.
            second = await asyncio.gather(ask(engine), ask(engine))
            return first, second, engine.stats.worker_healthy
        finally:
            await engine.close()

    first, second, healthy = asyncio.run(go())
    assert set(first) == {"a"} and sorted(second) == ["a", "b"] and healthy == {"a": 1, "b": 1}


def test_a_removed_worker_finishes_its_batch_and_gets_no_more():
    async def go():
        a, b = Slow("a", 0.2), Slow("b", 0.01)
        engine = engine_with(a, b)
        try:
            on_a = asyncio.create_task(ask(engine))  # goes to a (picked first), runs 200 ms
            await asyncio.sleep(0.05)
            assert engine.pool.state(a).inflight == 1
            removed = await engine.pool.remove_worker("a")
            assert removed is a and a.closed and [w.url for w in engine.pool.workers] == ["b"]
            with pytest.raises(KeyError):
                await engine.pool.remove_worker("a")
            later = await asyncio.gather(*(ask(engine) for _ in range(4)))
            return await on_a, later, a.calls, dict(engine.stats.worker_healthy)
        finally:
            await engine.close()

    in_flight, later, calls_a, healthy = asyncio.run(go())
    assert in_flight == "a" and set(later) == {"b"} and calls_a == 1 and healthy == {"b": 1}


def test_without_workers_queued_and_new_requests_get_503():
    async def go():
        a = Slow("a", 0.3)
        engine = engine_with(a)
        try:
            running = asyncio.create_task(ask(engine))           # on the worker
            await asyncio.sleep(0.05)
            queued = asyncio.create_task(ask(engine))             # waits in the queue behind it
            await asyncio.sleep(0.01)
            await engine.pool.remove_worker("a")
            out = [await queued, await ask(engine), await running]
            return out, dict(engine.stats.requests), engine.ready()
        finally:
            await engine.close()

    out, requests, ready = asyncio.run(go())
    assert out == ["Overloaded", "Overloaded", "a"] and not ready
    assert requests == {"overloaded": 2, "ok": 1}
