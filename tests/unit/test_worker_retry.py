"""The engine's answer to a failing or hanging worker, with in-process stand-in workers (no sockets):
retried on another worker while deadlines allow, else an explicit error; each request answered once."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from superserve.scheduler.core.admission import RequestParams
from superserve.scheduler.sidecar.engine import Engine, EngineConfig
from superserve.scheduler.core.errors import ServeError
from superserve.scheduler.core.health import HealthConfig
from superserve.scheduler.policies import make_policy
from tests.conftest import committed_profile as profile
from tests.fakes import StandIn


async def serve(workers, n: int, slo_ms: float, health: HealthConfig):
    engine = Engine(EngineConfig(adapt_latency=False), profile(), make_policy("slackfit"), workers, health=health)
    x = np.zeros((1, 1, 28, 28), np.float32)

    async def one():
        try:
            return (await engine.infer(x, RequestParams(slo_ms=slo_ms))).infos[0]["url"]
        except ServeError as e:
            return type(e).__name__

    try:
        return await asyncio.gather(*(one() for _ in range(n))), engine.stats
    finally:
        await engine.close()


def test_failed_worker_batches_are_retried_on_the_other_worker():
    bad, good = StandIn("bad", "fail"), StandIn("good")
    out, stats = asyncio.run(serve([bad, good], 40, 1000.0, HealthConfig()))
    assert out == ["good"] * 40
    assert bad.calls >= 1
    assert stats.worker_healthy == {"bad": 0, "good": 1}
    assert stats.worker_failures[("bad", "error")] >= 1 and stats.batch_retries >= 1
    assert stats.requests["ok"] == 40 and stats.requests["error"] == 0


def test_hung_call_is_cancelled_and_its_batch_served_elsewhere():
    hung, good = StandIn("hung", "hang"), StandIn("good")
    out, stats = asyncio.run(serve([hung, good], 20, 2000.0, HealthConfig(hang_floor_ms=50)))
    assert out == ["good"] * 20
    # With pipelining a second batch may already sit on the hung worker; it is cancelled with the first.
    assert hung.calls in (1, 2) and hung.cancelled == hung.calls and stats.worker_healthy["hung"] == 0
    assert stats.worker_failures[("hung", "hang")] == 1 and stats.worker_batches[("hung", "hung")] == 1


@pytest.mark.parametrize("modes,expect", [(("fail", "fail"), "Overloaded"), (("fail",), "Overloaded")])
def test_no_worker_left_means_explicit_errors_each_counted_once(modes, expect):
    workers = [StandIn(f"w{i}", m) for i, m in enumerate(modes)]
    out, stats = asyncio.run(serve(workers, 10, 1000.0, HealthConfig()))
    assert len(out) == 10 and set(out) == {expect}
    assert stats.requests["overloaded"] == 10 and sum(stats.requests.values()) == 10


def test_retries_stop_at_max_attempts_with_worker_failed():
    # One good worker is left, but max_attempts=1 allows no retry: the failed batch gets WorkerFailed.
    bad, good = StandIn("bad", "fail"), StandIn("good")
    out, stats = asyncio.run(serve([bad, good], 1, 1000.0, HealthConfig(max_attempts=1)))
    assert out == ["WorkerFailed"] and stats.requests["error"] == 1 and stats.batch_retries == 0


@pytest.mark.parametrize("mode", ["deadline", "cancelled"])
def test_a_calls_own_deadline_or_cancellation_never_takes_the_worker_out(mode):
    # Issue 12: one request whose gRPC deadline overflowed failed at once with DEADLINE_EXCEEDED, and the
    # worker was marked down for everyone. The call's own deadline or cancellation is not the worker's fault.
    w = StandIn("only", mode)
    out, stats = asyncio.run(serve([w], 5, 1000.0, HealthConfig()))
    assert w.calls >= 1 and stats.worker_healthy == {"only": 1}
    assert not stats.worker_failures and stats.worker_batches[("only", "deadline")] == w.calls
    assert "Overloaded" not in out and len(out) == 5
