"""Planning with the worker's free time: a policy measures slack from when the worker will be free
(WorkerView.free_at_ms, fake times), and the engine sends a second batch to a busy worker shortly
before the first is expected to end (in-process stand-in worker, no sockets)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from superserve.scheduler.core.admission import RequestParams
from superserve.scheduler.sidecar.triton_worker import SupernetWorker
from superserve.scheduler.core.edf_queue import Pending
from superserve.scheduler.sidecar.engine import Engine, EngineConfig
from superserve.scheduler.policies import Fixed, SlackFit, WorkerView
from superserve.scheduler.core.profile import Profile
from tests.conftest import TOY_PROFILE as PROFILE
from tests.conftest import pending_queue as queue


def test_slack_is_measured_from_when_the_worker_is_free():
    q = queue(1, now=0.0, slo=15)
    assert SlackFit().decide(q, 0.0, PROFILE, WorkerView(0, 0)).batch.subnet == "big"   # 15 ms: big@1 = 12
    busy = WorkerView(0, 1, free_at_ms=10.0)                                              # free in 10 ms
    d = SlackFit().decide(q, 0.0, PROFILE, busy)
    assert d.batch.subnet == "mid" and d.drop == ()                                       # 5 ms from then
    assert busy.start_ms(0.0) == 10.0 and busy.start_ms(12.0) == 12.0                     # never in the past
    assert Fixed("mid").decide(q, 0.0, PROFILE, busy).batch.expected_ms <= 5


def test_a_request_only_the_current_time_can_serve_is_kept_not_dropped_nor_batched():
    q = (Pending(0, 0, 3.0), Pending(1, 0, 80.0))   # request 0: 3 ms left, small@1 takes 1.1 ms
    busy = WorkerView(0, 1, free_at_ms=2.5)          # but this worker starts in 2.5 ms
    d = SlackFit().decide(q, 0.0, PROFILE, busy)
    assert d.drop == () and d.batch.requests == (1,)  # another (free) worker may still serve 0
    assert SlackFit().decide(q, 0.0, PROFILE, WorkerView(0, 0)).batch.requests[0] == 0
    late = WorkerView(0, 1, free_at_ms=90.0)
    d = SlackFit().decide(q, 0.0, PROFILE, late)     # nobody fits after 90 ms: nothing to pipeline
    assert d.batch is None and d.drop == ()


FLAT = Profile.from_dict({"hardware": "t", "supernet": "x", "batch_sizes": [1, 2, 4, 8],
                          "subnets": [{"name": "only", "accuracy": 0.9,
                                       "latency_ms": {str(b): {"mean": 200.0, "p99": 200.0} for b in (1, 2, 4, 8)}}]})


class Sleeper(SupernetWorker):
    """Takes 200 ms per batch (as FLAT says) and records how many calls overlap."""

    def __init__(self):
        self.url = "w"
        self.active = self.max_active = 0

    async def ready(self):
        return True

    async def infer(self, images, subnet, timeout_s):
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(0.2)
        finally:
            self.active -= 1
        return np.zeros((len(images), 10), np.float32), [{"subnet": subnet, "infer_ms": 200.0}] * len(images)

    async def close(self):
        pass


class Recording(SlackFit):
    def __init__(self):
        super().__init__()
        self.views = []

    def decide(self, queue, now_ms, profile, worker):
        self.views.append((now_ms, worker))
        return super().decide(queue, now_ms, profile, worker)


def serve_two_waves(pipeline: bool, min_rows: int = 1):
    """Two requests 20 ms apart, 2 s SLO: the second arrives while the first's batch runs."""
    worker, policy = Sleeper(), Recording()
    engine = Engine(EngineConfig(adapt_latency=False, margin_ms=0, pipeline=pipeline, pipeline_lead_ms=150,
                                 pipeline_min_rows=min_rows),
                    FLAT, policy, [worker])

    async def go():
        x = np.zeros((1, 1, 28, 28), np.float32)

        async def later(delay):
            await asyncio.sleep(delay)
            return await engine.infer(x, RequestParams(slo_ms=2000))
        try:
            return await asyncio.gather(later(0), later(0.02))
        finally:
            await engine.close()
    answers = asyncio.run(go())
    return worker, policy, answers


def test_the_engine_sends_the_next_batch_before_the_worker_is_free():
    worker, policy, answers = serve_two_waves(pipeline=True)
    assert len(answers) == 2 and worker.max_active == 2  # Triton had the second batch queued
    pipelined = [(now, v) for now, v in policy.views if v.free_at_ms is not None]
    assert pipelined, policy.views
    now, view = pipelined[0]
    # Sent 150 ms (the lead) before the first batch's expected end, planned to start at that end.
    assert view.inflight == 1 and view.free_at_ms - now > 100


def test_without_pipelining_one_batch_at_a_time():
    worker, policy, answers = serve_two_waves(pipeline=False)
    assert len(answers) == 2 and worker.max_active == 1
    assert all(v.free_at_ms is None for _, v in policy.views)


def test_no_pipelining_below_the_backlog_threshold():
    worker, policy, answers = serve_two_waves(pipeline=True, min_rows=2)  # one request waits: form it later
    assert len(answers) == 2 and worker.max_active == 1


def test_a_model_that_judges_everything_infeasible_while_idle_is_forgotten():
    from superserve.scheduler.core.errors import DeadlineInfeasible

    worker = Sleeper()
    engine = Engine(EngineConfig(margin_ms=0, latency_quantile=0.99), FLAT, SlackFit(), [worker])
    lc = engine.lifecycle
    for _ in range(50):  # once, the machine ran 20x slower than profiled
        lc.default.observe("only", 1, 4000.0)
    assert engine.policy.fastest_ms(Pending(0, 0, 1000), engine.profile) > 1000
    engine.pool.state(worker).last_done_ms = -10_000.0  # and no batch has run since

    async def go():
        try:
            return await engine.infer(np.zeros((1, 1, 28, 28), np.float32), RequestParams(slo_ms=1000))
        finally:
            await engine.close()
    answer = asyncio.run(go())  # served on the profile's plan, not refused forever
    assert answer.infos[0]["subnet"] == "only" and lc.default.latency.observations == 1
    w2 = Sleeper()
    engine2 = Engine(EngineConfig(margin_ms=0), FLAT, SlackFit(), [w2])
    lc2 = engine2.lifecycle
    for _ in range(50):
        lc2.default.observe("only", 1, 4000.0)
    engine2.pool.state(w2).last_done_ms = engine2.clock.now_ms()  # a batch just ran: the model is not stale
    with pytest.raises(DeadlineInfeasible):
        lc2.admit(engine2.clock.now_ms(), 1000.0)
