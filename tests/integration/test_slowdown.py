"""A co-tenant slows Triton mid-run: SlackFit (latency model + pipelining) shifts to smaller subnets
without a burst of misses. Real processes: a Triton of our own, `superserve serve` in front of it and
an open-loop Poisson stream from the load generator. From a fixed moment on, Triton gets the CPU only
40% of the time (its process group is stopped 3 ms of every 5 ms, as when a co-tenant holds the core or
a CPU quota throttles it): about 2.5-3x slower. Bounded: about 20 s of load."""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import numpy as np
import pytest

from superserve.client.loadgen import Target, run_open_loop
from superserve.scheduler import paths
from superserve.scheduler.server import serve_subprocess
from superserve.supernet.data import load_split
from tests.conftest import free_ports
from tests.integration.conftest import run_triton

RATE_RPS, SECONDS, ONSET_S, SLO_MS = 120.0, 15.0, 6.0, 50.0
STOP_MS, RUN_MS = 3.0, 2.0


@pytest.fixture(scope="module")
def own_triton(tmp_path_factory, weights_path):
    """A Triton of this module's own (the co-tenant must not slow a shared one for other tests)."""
    yield from run_triton(tmp_path_factory.mktemp("triton-slowdown"), None, models=("supernet",))


def test_slackfit_shifts_to_smaller_subnets_without_a_burst_of_misses(own_triton, tmp_path):
    http, grpc = free_ports(2)
    profile = sorted((paths.repo_root() / "profiles").glob("*.json"))[0]
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--worker", own_triton.cfg.grpc_url,
            "--profile", str(profile), "--default-slo-ms", str(SLO_MS), "--batch-log", str(tmp_path / "b.jsonl")]
    images, labels = load_split("test")
    arrivals = np.cumsum(np.random.default_rng(3).exponential(1 / RATE_RPS, int(RATE_RPS * SECONDS)))
    slos = np.full(len(arrivals), SLO_MS)
    pressure = threading.Event()
    with serve_subprocess(args, str(tmp_path / "serve.log")):
        target = Target(f"127.0.0.1:{grpc}")
        warm = np.arange(0, 3, 1 / RATE_RPS)  # the latency model sees a warm Triton before the run
        asyncio.run(run_open_loop(target, warm, np.full(len(warm), 5000.0), images, labels))

        def throttle():  # from ONSET_S on, until the load ends
            pgid = own_triton.proc.pid
            if pressure.wait(ONSET_S):
                return
            try:
                while not pressure.is_set():
                    os.killpg(pgid, signal.SIGSTOP)
                    time.sleep(STOP_MS / 1000)
                    os.killpg(pgid, signal.SIGCONT)
                    time.sleep(RUN_MS / 1000)
            finally:
                os.killpg(pgid, signal.SIGCONT)
        t = threading.Thread(target=throttle)
        t.start()
        try:
            recs = asyncio.run(run_open_loop(target, arrivals, slos, images, labels))
        finally:
            pressure.set()
            t.join()
    acc = {r.index: r.accuracy for r in recs if r.outcome in ("ok", "late")}
    before = [acc[r.index] for r in recs if 1.0 <= r.send_s < ONSET_S and r.index in acc]
    after = [acc[r.index] for r in recs if ONSET_S + 2.0 <= r.send_s and r.index in acc]
    assert before and after
    # Under pressure it serves smaller subnets: mean served accuracy drops by at least a point (measured:
    # 0.916 -> 0.890; planning with the profile as measured (--no-adapt-latency --no-pipeline), 0.917 -> 0.912).
    assert np.mean(after) < np.mean(before) - 0.01, (np.mean(before), np.mean(after))
    # ... and the switch costs a bounded transient: no second after the onset loses nearly all its requests, and
    # over the run most are served in time. The bounds are loose on purpose: the pressure itself (SIGSTOP/SIGCONT
    # driven by sleeps in this process) grows harsher when the host is busy. Measured over the run, on 2 cores:
    # 0.014 and 0.024 on an idle host; 0.15-0.29 at load average 1.2-4.5 (before and after the life-cycle rewrite
    # alike, interleaved A/B); with --no-adapt-latency 0.13-0.16 while its served accuracy does not drop (the
    # assertion above is the one that tells the model's work apart; the bounds catch a collapse).
    sec = np.array([int(r.send_s) for r in recs])
    missed = np.array([r.outcome != "ok" for r in recs])
    per_second = {s: float(missed[sec == s].mean()) for s in range(int(ONSET_S), int(SECONDS)) if (sec == s).any()}
    assert max(per_second.values()) <= 0.80, per_second
    assert missed.mean() <= 0.35, (missed.mean(), per_second)
