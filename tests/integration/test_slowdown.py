"""A co-tenant slows Triton mid-run, then leaves: SlackFit shifts to smaller subnets without a burst of
misses, and comes back to larger ones after the speed-up.

Real processes: a Triton of our own, `superserve serve` (default flags) in front of it and an
open-loop Poisson stream (120 req/s, slo 50 ms) from the load generator. The pressure is a CFS quota on
Triton's whole process group (the server and its Python backend stub) in a cgroup v1 cpu group
(client/cpu_quota.py): unlimited, then from ONSET_S to RESTORE_S at most QUOTA_CORES of a core, then
unlimited again. The kernel enforces the quota, so the pressure does not grow with the host's load as
stopping the process from a thread did. The test's own processes (this one, which runs the load
generator, and the sidecar) run in a second group of the same high weight for the run, so a busy host
slows them less. Without root or a cgroup v1 cpu hierarchy the test falls back to that older pressure
(SIGSTOP/SIGCONT of the process group, 3 ms of every 5 ms) and to bounds loose enough for it, and says so
in a warning.

The bounds separate the latency model from planning with the profile as measured. Interleaved runs of the
default flags, ``--no-adapt-latency`` and ``--no-admission-shedding`` on this 2-core host at load average 1.1-3.1
(four runs each, ``python -m tests.integration.test_slowdown --reps 4``, results/slowdown-ab.json):

| per run | default flags (the test) | ``--no-adapt-latency`` | ``--no-admission-shedding`` | bound |
|---|---|---|---|---|
| served accuracy before | 0.929 | 0.929 | 0.928-0.929 | |
| ... under pressure | 0.862-0.881 | 0.903-0.914 | 0.848-0.858 | <= 0.895 |
| answered late under pressure | 0.005-0.010 | 0.320-0.496 | 0.003-0.021 | <= 0.10 |
| missed under pressure (all outcomes) | 0.011-0.083 | 0.344-0.585 | 0.056-0.208 | |
| worst second under pressure | 0.033-0.167 | 0.520-0.789 | 0.102-0.415 | <= 0.80 |
| served accuracy, 3 s after the restore | 0.896-0.917 | 0.928-0.929 | 0.880-0.901 | |
| ... less under pressure | +0.033 to +0.046 | +0.015 to +0.026 | +0.032 to +0.043 | >= 0.01 (xfail) |
| missed after the restore | 0.000 | 0.002-0.043 | 0.000-0.010 | <= 0.05 |

Earlier batches at load average 5.5-8.9 (before the median view and the whole-slack SlackFit) agreed on the
accuracy under pressure and the late share, but the latency model then missed up to 0.475 of the pressure's
requests in one run (dropped as infeasible); so all misses are bounded only against a collapse, and the late share
is what separates. Admission shedding was off in this test until it went by the median view: with it the planning
quantile refused a fifth of the requests under pressure and 37-50% after the restore while Triton was back at full
speed; the last bound catches that."""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from superserve.client.cpu_quota import CpuQuota
from superserve.client.loadgen import Record, Target, run_open_loop
from superserve.scheduler import paths
from superserve.scheduler.sidecar.server import serve_subprocess
from superserve.supernet.data import load_split
from tests.conftest import free_ports
from tests.integration.conftest import run_triton

RATE_RPS, SLO_MS = 120.0, 50.0
ONSET_S, RESTORE_S, SECONDS = 4.0, 9.0, 15.0
QUOTA_CORES = 0.3
"""About 3x slower forwards (Triton alone uses about one core: one torch thread plus the server's)."""
STOP_MS, RUN_MS = 3.0, 2.0
"""The fallback pressure: Triton's process group stopped 3 ms of every 5 ms."""
SERVE_ARGS: tuple[str, ...] = ()


@dataclass
class Run:
    """The records of one run and what the pressure was."""
    records: list[Record]
    pressure: str
    """'quota' (the CFS quota) or 'sigstop' (the fallback)."""
    throttled: dict[str, int]
    """The cgroup's throttling counters over the run (empty with the fallback)."""

    def per_second(self, what: str) -> dict[int, float]:
        """Per send second: the share missed ('miss') or the mean served accuracy ('acc', NaN if none)."""
        out = {}
        for s in range(int(SECONDS)):
            rs = [r for r in self.records if int(r.send_s) == s]
            if what == "miss":
                out[s] = float(np.mean([r.outcome != "ok" for r in rs])) if rs else 0.0
            else:
                acc = [r.accuracy for r in rs if r.outcome in ("ok", "late") and r.accuracy is not None]
                out[s] = float(np.mean(acc)) if acc else float("nan")
        return out

    def accuracy(self, lo: float, hi: float) -> float:
        """Mean (profiled) accuracy of the subnets that served the requests sent in [lo, hi)."""
        acc = [r.accuracy for r in self.records
               if lo <= r.send_s < hi and r.outcome in ("ok", "late") and r.accuracy is not None]
        return float(np.mean(acc)) if acc else float("nan")

    def missed(self, lo: float = 0.0, hi: float = SECONDS, outcome: str | None = None) -> float:
        """Share of the requests sent in [lo, hi) not answered in time (late, dropped, refused, failed), or
        of those with ``outcome``."""
        return float(np.mean([r.outcome != "ok" if outcome is None else r.outcome == outcome
                              for r in self.records if lo <= r.send_s < hi]))

    def recovered_after_s(self, within: float = 0.01) -> float | None:
        """Seconds from RESTORE_S to the first whole second whose served accuracy is back within ``within``
        of the accuracy before the pressure (None: not within the run)."""
        before, acc = self.accuracy(1.0, ONSET_S), self.per_second("acc")
        return next((s - RESTORE_S for s in range(int(RESTORE_S), int(SECONDS)) if acc[s] >= before - within), None)

    def summary(self) -> dict:
        acc_s, miss_s = self.per_second("acc"), self.per_second("miss")
        missed_before = self.missed(1.0, ONSET_S)
        return {"pressure": self.pressure, "throttled": self.throttled,
                "acc_before": round(self.accuracy(1.0, ONSET_S), 4),
                "acc_during": round(self.accuracy(ONSET_S + 1, RESTORE_S), 4),
                "acc_after": round(self.accuracy(RESTORE_S + 2, SECONDS), 4),
                "recovered_after_s": self.recovered_after_s(),
                "missed": round(self.missed(), 4), "missed_before": round(missed_before, 4),
                "missed_pressure": round(self.missed(ONSET_S, RESTORE_S + 1), 4),
                "missed_pressure_excess": round(self.missed(ONSET_S, RESTORE_S + 1) - missed_before, 4),
                "missed_after": round(self.missed(RESTORE_S + 1, SECONDS), 4),
                **{f"{o}_{phase}": round(self.missed(lo, hi, o), 4) for o in ("late", "dropped", "rejected")
                   for phase, lo, hi in (("before", 1.0, ONSET_S), ("pressure", ONSET_S, RESTORE_S + 1),
                                         ("after", RESTORE_S + 1, SECONDS))},
                "acc_back": round(self.accuracy(RESTORE_S, RESTORE_S + 3), 4),
                "max_second_missed": round(max(miss_s[s] for s in range(int(ONSET_S), int(SECONDS))), 4),
                "acc_per_second": {s: round(v, 4) for s, v in acc_s.items()},
                "missed_per_second": {s: round(v, 3) for s, v in miss_s.items()}}


async def _drive(target: Target, quota: CpuQuota | None, triton_pgid: int, images, labels) -> list[Record]:
    """The open-loop stream, with the pressure switched on at ONSET_S and off at RESTORE_S."""
    arrivals = np.cumsum(np.random.default_rng(3).exponential(1 / RATE_RPS, int(RATE_RPS * SECONDS)))
    arrivals = arrivals[arrivals < SECONDS]
    stop = threading.Event()

    def sigstop_pressure():
        try:
            while not stop.is_set():
                os.killpg(triton_pgid, signal.SIGSTOP)
                time.sleep(STOP_MS / 1000)
                os.killpg(triton_pgid, signal.SIGCONT)
                time.sleep(RUN_MS / 1000)
        finally:
            os.killpg(triton_pgid, signal.SIGCONT)

    async def schedule():
        await asyncio.sleep(ONSET_S)
        thread = None
        if quota is not None:
            quota.set_cores(QUOTA_CORES)
        else:
            thread = threading.Thread(target=sigstop_pressure)
            thread.start()
        try:
            await asyncio.sleep(RESTORE_S - ONSET_S)
        finally:  # restored also when the stream ends early or fails
            if quota is not None:
                quota.set_cores(None)
            else:
                stop.set()
                await asyncio.to_thread(thread.join)

    pressure = asyncio.create_task(schedule())
    try:
        return await run_open_loop(target, arrivals, np.full(len(arrivals), SLO_MS), images, labels)
    finally:
        pressure.cancel()
        await asyncio.gather(pressure, return_exceptions=True)


def run_slowdown(triton, groups: tuple[CpuQuota, CpuQuota] | None, tmp: Path,
                 serve_args: tuple[str, ...] = SERVE_ARGS) -> Run:
    """One run: a sidecar of its own in front of ``triton``, warmed, then the stream under pressure.
    ``groups``: (the group Triton's process group is in, unlimited; the group this process and the
    sidecar run in for the run), or None for the fallback pressure."""
    if groups is None:
        return _run(triton, None, tmp, serve_args)
    quota, shelter = groups
    shelter.add(os.getpid())  # the sidecar, started next, is born in it
    try:
        return _run(triton, quota, tmp, serve_args)
    finally:
        shelter.release()


def _run(triton, quota: CpuQuota | None, tmp: Path, serve_args: tuple[str, ...]) -> Run:
    http, grpc = free_ports(2)
    profile = sorted((paths.repo_root() / "profiles").glob("*.json"))[0]
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--worker", triton.cfg.grpc_url,
            "--profile", str(profile), "--default-slo-ms", str(SLO_MS), *serve_args]
    images, labels = load_split("test")
    with serve_subprocess(args, str(tmp / "serve.log")):
        target = Target(f"127.0.0.1:{grpc}")
        warm = np.arange(0, 3, 1 / RATE_RPS)  # the latency model sees a warm Triton before the run
        asyncio.run(run_open_loop(target, warm, np.full(len(warm), 5000.0), images, labels))
        before = quota.stat() if quota else {}
        recs = asyncio.run(_drive(target, quota, triton.proc.pid, images, labels))
        after = quota.stat() if quota else {}
    return Run(recs, "quota" if quota else "sigstop", {k: after[k] - before[k] for k in after})


@pytest.fixture(scope="module")
def own_triton(tmp_path_factory, weights_path):
    """A Triton of this module's own (the co-tenant must not slow a shared one for other tests)."""
    yield from run_triton(tmp_path_factory.mktemp("triton-slowdown"), None, models=("supernet",))


@pytest.fixture(scope="module")
def slowdown(own_triton, tmp_path_factory) -> Run:
    """One run under the CFS quota, or under the fallback pressure where cgroups cannot be made."""
    groups = CpuQuota.create(2)
    tmp = tmp_path_factory.mktemp("slowdown")
    if groups is None:
        warnings.warn(f"{CpuQuota.unavailable}: slowing Triton with SIGSTOP/SIGCONT instead, whose harshness grows "
                      "with the host's load, and checking only the served-accuracy drop and loose miss bounds",
                      stacklevel=2)
        return run_slowdown(own_triton, None, tmp)
    with groups[0], groups[1]:
        groups[0].add_process_group(own_triton.proc.pid)
        run = run_slowdown(own_triton, (groups[0], groups[1]), tmp)
    assert run.throttled["nr_throttled"] > 0, f"the quota never throttled Triton: {run.throttled}"
    return run


def test_slackfit_shifts_to_smaller_subnets_without_a_burst_of_misses(slowdown):
    s = slowdown.summary()
    # Under pressure it serves smaller subnets.
    assert s["acc_during"] <= s["acc_before"] - 0.01, s
    if slowdown.pressure == "sigstop":  # the fallback: the bounds of the test before the quota
        assert s["max_second_missed"] <= 0.80, s
        assert s["missed"] <= 0.35, s
        return
    assert s["acc_during"] <= 0.895, s
    # ... planned with latencies that hold: hardly an answer late (the profile as measured: a third or more) ...
    assert s["late_pressure"] <= 0.10, s
    # ... and no second under pressure that loses nearly all its requests.
    worst = max(v for t, v in s["missed_per_second"].items() if ONSET_S <= t <= RESTORE_S)
    assert worst <= 0.80, s
    # Once Triton is back at full speed, admission shedding refuses (nearly) nothing: it goes by the latency a batch
    # most likely takes, not the planning quantile (which refused 37-50% after the restore before the median view).
    assert s["missed_after"] <= 0.05, s


@pytest.mark.xfail(strict=False, reason=(
    "latency model (issue 13): on a host at load average 5.5-8.9, 3 of 17 runs stayed on the pressure's small subnets "
    "for all 6 s after the restore (served accuracy -0.006 to +0.002 against the pressure's), the quantile held up "
    "by the host's own stalls; 14 came back by +0.011 to +0.048 within 3 s"))
def test_slackfit_returns_to_larger_subnets_within_seconds_of_the_speed_up(slowdown):
    if slowdown.pressure != "quota":
        pytest.skip("the fallback pressure's shift is too uneven to time the way back (needs the CFS quota)")
    s = slowdown.summary()
    assert s["acc_back"] >= s["acc_during"] + 0.01, s


def _ab(argv: list[str]) -> None:
    """Interleaved runs of the latency model and --no-adapt-latency (and the default flags), one Triton;
    writes results/slowdown-ab.json."""
    from superserve.client import results
    from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess

    ap = argparse.ArgumentParser(prog="python -m tests.integration.test_slowdown")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(results.named("slowdown-ab")))
    a = ap.parse_args(argv)
    arms = {"default flags": SERVE_ARGS, "--no-adapt-latency": ("--no-adapt-latency", *SERVE_ARGS),
            "--no-admission-shedding": ("--no-admission-shedding", *SERVE_ARGS)}
    tmp = Path(tempfile.mkdtemp(prefix="superserve-slowdown-"))
    runs: list[dict] = []
    h, g, m = free_ports(3)
    with TritonProcess(TritonConfig(http_port=h, grpc_port=g, metrics_port=m, models=("supernet",),
                                    log_file=str(tmp / "triton.log"))) as triton:
        groups = CpuQuota.create(2)
        if groups is None:
            raise SystemExit(CpuQuota.unavailable)
        with groups[0], groups[1]:
            groups[0].add_process_group(triton.proc.pid)
            for rep in range(a.reps):
                for arm, serve_args in arms.items():
                    load = os.getloadavg()
                    d = tmp / f"{rep}-{len(runs)}"
                    d.mkdir()
                    s = run_slowdown(triton, (groups[0], groups[1]), d, serve_args).summary()
                    runs.append({"arm": arm, "serve_args": list(serve_args), "rep": rep,
                                 "loadavg_1m": [round(load[0], 2), round(os.getloadavg()[0], 2)], **s})
                    print(rep, arm, {k: s[k] for k in ("acc_before", "acc_during", "acc_back", "late_pressure",
                                                        "missed_pressure", "max_second_missed")}, flush=True)
    result = {**results.header("python -m tests.integration.test_slowdown " + " ".join(argv)),
              "cores": os.cpu_count(), "quota_cores": QUOTA_CORES, "rate_rps": RATE_RPS, "slo_ms": SLO_MS,
              "onset_s": ONSET_S, "restore_s": RESTORE_S, "seconds": SECONDS, "runs": runs}
    print(results.write(result, a.out))


if __name__ == "__main__":
    _ab(sys.argv[1:])
