"""The autoscaler and the fleet with local Triton processes (no Ray): scale up under load, a killed worker
started again and re-admitted, scale down with drain (scaling_scenario.py); and the drain itself: a worker
taken out of service finishes the calls it has in flight before its channel closes."""
from __future__ import annotations

import asyncio
import os
import signal

import numpy as np

from superserve.scheduler.sidecar.metered_worker import MeteredWorker
from tests.integration import scaling_scenario
from tests.integration.conftest import tritonserver_pids


def test_autoscale_local_processes(tmp_path):
    def kill(url: str, _log: str) -> None:
        pids = tritonserver_pids(int(url.rsplit(":", 1)[1]))
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)

    r = scaling_scenario.run(tmp_path, ["--triton-http-port", "0", "--triton-grpc-port", "0",
                                        "--triton-metrics-port", "0"], kill)
    assert r["restarted"] == r["second"], "a local worker comes back on its own ports"
    assert "exited (code -9); starting it again" in r["log"]
    assert r["exit"] == 0
    for url in (r["first"] | {r["second"]}):
        assert tritonserver_pids(int(url.rsplit(":", 1)[1])) == [], f"Triton of {url} left running"


def test_a_removed_worker_finishes_its_calls_in_flight_before_it_closes(triton_plain):
    async def scenario():
        w = MeteredWorker(triton_plain.cfg.grpc_url, drain_timeout_s=30)
        images = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
        calls = [asyncio.ensure_future(w.infer(images, "d3.3.3-w100.100.100", 30)) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert w.calls == 3
        await w.close()  # the drain: returns only once the calls in flight ended
        assert all(c.done() for c in calls) and w.calls == 0
        for c in calls:
            logits, infos = c.result()
            assert logits.shape == (64, 10) and len(infos) == 64
        assert w.busy_seconds() > 0
        return w

    w = asyncio.run(scenario())
    assert w.abandoned is False
