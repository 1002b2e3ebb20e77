"""add_worker/remove_worker on the engine's worker pool (the fleet's only calls into it), with stand-in workers: a
worker added at run time gets batches; a worker removed under load gets no new batch, its calls in flight end
and every request is answered once; and the fleet's cluster options are checked at the command line."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from superserve.scheduler import paths
from superserve.scheduler.core.admission import RequestParams
from superserve.scheduler.sidecar.triton_worker import SupernetWorker
from superserve.scheduler.sidecar.engine import Engine, EngineConfig
from superserve.scheduler.core.health import HealthConfig
from superserve.scheduler.core.stats import Stats
from superserve.scheduler.sidecar.metrics import render
from superserve.scheduler.policies import make_policy
from superserve.scheduler.core.profile import Profile


class Slow(SupernetWorker):
    """Answers like a TritonWorker after ``delay_s``, or, while ``gate`` is set to an unset event, only once it is
    set; ``close`` waits for its calls in flight (the drain)."""

    def __init__(self, url: str, delay_s: float = 0.03):
        self.url, self.delay_s = url, delay_s
        self.calls = self.finished = 0
        self.gate: asyncio.Event | None = None
        self.closed_with_calls = None

    async def ready(self) -> bool:
        return True

    async def infer(self, images, subnet, timeout_s):
        self.calls += 1
        try:
            await asyncio.sleep(self.delay_s)
            if self.gate is not None:
                await self.gate.wait()
        finally:  # a call cancelled (e.g. by the hang rule) has ended too
            self.finished += 1
        return np.zeros((len(images), 10), np.float32), [{"subnet": subnet, "url": self.url}] * len(images)

    async def close(self) -> None:
        self.closed_with_calls = self.calls - self.finished
        while self.finished < self.calls:
            await asyncio.sleep(0.005)


def profile() -> Profile:
    return Profile.load(sorted((paths.repo_root() / "profiles").glob("*.json"))[0])


def test_added_worker_serves_and_removed_worker_drains_with_every_request_answered_once():
    async def scenario():
        a, b = Slow("a"), Slow("b")
        engine = Engine(EngineConfig(adapt_latency=False, pipeline=False), profile(), make_policy("slackfit"), [a],
                        health=HealthConfig(probe_interval_s=0.05, max_backoff_s=0.1))
        engine.pool.start()
        m = engine.pool
        x = np.zeros((1, 1, 28, 28), np.float32)

        async def one():
            return (await engine.infer(x, RequestParams(slo_ms=5000))).infos[0]["url"]

        try:
            m.add_worker(b)
            with pytest.raises(ValueError, match="already"):
                m.add_worker(Slow("b"))
            first = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(200))), 60)
            assert set(first) == {"a", "b"}, "the added worker gets batches"
            await asyncio.sleep(0.2)  # its probe runs and keeps it in rotation
            assert engine.stats.worker_healthy["b"] == 1
            b.gate = asyncio.Event()  # b's next batch stays in flight until the test lets it end
            tasks = [asyncio.ensure_future(one()) for _ in range(200)]

            async def b_busy():
                while b.calls == b.finished:
                    await asyncio.sleep(0.001)
            await asyncio.wait_for(b_busy(), 30)
            calls_at_removal = b.calls
            removal = asyncio.ensure_future(m.remove_worker("b"))
            await asyncio.sleep(0.1)
            assert not removal.done(), "remove_worker returned while the worker still had a batch in flight"
            assert [w.url for w in engine.pool.workers] == ["a"], "out of rotation at once"
            b.gate.set()
            removed = await asyncio.wait_for(removal, 30)
            assert removed is b and b.closed_with_calls >= 1, "removed with a batch in flight"
            assert b.finished == b.calls, "remove_worker returned only after its calls in flight ended"
            second = await asyncio.wait_for(asyncio.gather(*tasks), 60)
            assert b.calls == calls_at_removal, "no batch went to the removed worker"
            assert "b" not in engine.stats.worker_healthy and [w.url for w in engine.pool.workers] == ["a"]
            with pytest.raises(KeyError):
                await m.remove_worker("b")
            return first + second, engine.stats
        finally:
            await engine.close()

    answers, stats = asyncio.run(scenario())
    assert len(answers) == 400 and set(answers) <= {"a", "b"}
    assert stats.requests["ok"] + stats.requests["late"] == 400
    assert sum(stats.requests.values()) == 400, "each request counted once"


def test_fleet_metrics_appear_only_when_the_scheduler_manages_its_workers():
    s = Stats()
    assert "sched_workers_target" not in render(s)
    s.workers_target, s.workers_actual, s.worker_demand = 2, 1, 1.25
    s.scaling_decisions[("up", "accuracy")] += 1
    text = render(s)
    for line in ("sched_workers_target 2", "sched_workers 1", "sched_workers_draining 0",
                 'sched_scaling_decisions_total{direction="up",reason="accuracy"} 1',
                 "sched_worker_demand_ratio 1.2500"):
        assert line in text.splitlines(), line


@pytest.mark.parametrize("argv, message", [
    (["--autoscale", "--worker", "127.0.0.1:1"], "not with --worker"),
    (["--autoscale", "--policy", "infaas"], "infaas"),
    (["--autoscale", "--workers", "5", "--max-workers", "4"], "within"),
    (["--autoscale", "--min-workers", "3", "--max-workers", "2"], "min_workers"),
    (["--autoscale", "--scale-down-demand", "0.9"], "down_demand"),
    (["--ray", "auto", "--worker-cpus", "0"], "worker_cpus"),
])
def test_cluster_options_are_checked(argv, message):
    from superserve.scheduler.sidecar import cluster
    from superserve.scheduler.cli import build_parser

    args = build_parser().parse_args(["serve", *argv])
    with pytest.raises(ValueError, match=message):
        cluster.from_args(args)


def test_no_cluster_options_keep_the_fixed_workers():
    from superserve.scheduler.sidecar import cluster
    from superserve.scheduler.cli import build_parser

    assert cluster.from_args(build_parser().parse_args(["serve", "--workers", "2"])) is None
    c = cluster.from_args(build_parser().parse_args(["serve", "--autoscale", "--max-workers", "3"]))
    assert (c.workers, c.autoscale.max_workers, c.ray) == (1, 3, None)


def test_gpu_repository_moves_the_instance_group_to_the_gpu(tmp_path):
    pytest.importorskip("ray", reason="the extra superserve-triton[ray] is not installed")
    from superserve.scheduler.sidecar.ray_workers import gpu_repository

    root = gpu_repository(paths.model_repository(), "supernet")
    try:
        text = (root / "supernet" / "config.pbtxt").read_text()
        assert "KIND_GPU" in text and "KIND_CPU" not in text
        assert (root / "supernet" / "1").is_dir()
        assert "KIND_CPU" in (paths.model_repository() / "supernet" / "config.pbtxt").read_text(), "source untouched"
    finally:
        import shutil

        shutil.rmtree(root)
