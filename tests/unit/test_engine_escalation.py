"""The engine's escalation bookkeeping with in-process stand-in workers (no sockets): an escalated
request whose next stage cannot run is answered once, with its previous stage's answer."""
from __future__ import annotations

import asyncio

import numpy as np

from superserve.scheduler.core.admission import RequestParams
from superserve.scheduler.sidecar.triton_worker import SupernetWorker
from superserve.scheduler.sidecar.engine import Engine, EngineConfig
from superserve.scheduler.core.errors import WorkerFailed
from superserve.scheduler.core.gears import Gear, GearPlan, Stage
from superserve.scheduler.core.health import HealthConfig
from superserve.scheduler.policies import CascadePolicy
from tests.conftest import committed_profile as profile


class Unsure(SupernetWorker):
    """Answers every row with confidence 0.1; from call ``fail_from`` on, fails like a dead worker."""

    def __init__(self, fail_from: int = 10**9):
        self.url, self.calls, self.fail_from = "w", 0, fail_from
        self.subnets = []

    async def ready(self):
        return True

    async def infer(self, images, subnet, timeout_s):
        self.calls += 1
        self.subnets.append(subnet)
        if self.calls >= self.fail_from:
            raise WorkerFailed("worker w: connection refused")
        await asyncio.sleep(0.001)
        return np.zeros((len(images), 10), np.float32), [{"subnet": subnet, "confidence": 0.1, "margin": 0.0}] * len(images)

    async def close(self):
        pass


def run(worker, n=3, **params):
    prof = profile()
    first, last = prof.subnets[0].name, prof.subnets[-1].name
    plan = GearPlan((Gear(0, 1e9, (Stage(first, 0.5), Stage(last, None)), 8),))
    engine = Engine(EngineConfig(adapt_latency=False, margin_ms=0), prof, CascadePolicy(plan), [worker],
                    health=HealthConfig(max_attempts=1))

    async def go():
        try:
            return await asyncio.gather(*(engine.infer(np.zeros((1, 1, 28, 28), np.float32),
                                                       RequestParams(slo_ms=1000, **params)) for _ in range(n)))
        finally:
            await engine.close()
    return asyncio.run(go()), engine.stats, first, last


def test_unsure_answers_escalate_to_the_next_stage_in_one_batch():
    w = Unsure()
    answers, stats, first, last = run(w)
    assert [a.infos[0]["subnets"] for a in answers] == [[first, last]] * 3
    assert all(a.infos[0]["escalations"] == 1 for a in answers)
    assert w.subnets.count(first) + w.subnets.count(last) == len(w.subnets) <= 4  # batched, never one by one
    assert stats.escalations == 3 and stats.requests["ok"] == 3


def test_an_escalation_that_cannot_run_returns_the_previous_answer_once():
    w = Unsure(fail_from=2)  # the second stage's batch fails and may not be retried
    answers, stats, first, _ = run(w, n=1)
    assert [a.infos[0]["subnets"] for a in answers] == [[first]]
    assert stats.escalation_fallbacks == 1 and stats.requests["ok"] == 1 and stats.requests["error"] == 0


def test_confident_enough_by_request_parameter_does_not_escalate():
    answers, stats, first, _ = run(Unsure(), min_confidence=0.05)
    assert [a.infos[0]["subnets"] for a in answers] == [[first]] * 3 and stats.escalations == 0
