"""Scheduler micro-benchmarks, written to results/ as JSON with the command that produced them.

``superserve bench-decide``: SlackFit's decision time (median and p99, microseconds) at queue
lengths 10, 100 and 1000, on the committed profile (pure function, no server).
(``superserve bench-overhead`` lives in overhead_bench.py.)
"""
from __future__ import annotations

import time

import numpy as np

from superserve.client import results
from superserve.scheduler.core.edf_queue import Pending
from superserve.scheduler.policies import SlackFit, WorkerView
from superserve.scheduler.core.profile import Profile
from superserve.scheduler.sidecar.server import find_profile


def _pct(a, q) -> float:
    return round(float(np.percentile(np.asarray(a), q)), 3)


def bench_decide(reps: int = 2000, lengths=(10, 100, 1000)) -> int:
    profile = Profile.load(find_profile(None))
    policy, rng, out = SlackFit(), np.random.default_rng(0), {}
    for n in lengths:
        slack = np.sort(rng.uniform(20, 300, n))
        queue = tuple(Pending(i, 0.0, float(s)) for i, s in enumerate(slack))
        policy.decide(queue, 0.0, profile, WorkerView(0, 0))  # builds the bucket table once
        times = []
        for _ in range(reps):
            t = time.perf_counter_ns()
            policy.decide(queue, 0.0, profile, WorkerView(0, 0))
            times.append((time.perf_counter_ns() - t) / 1000)
        out[str(n)] = {"median_us": _pct(times, 50), "p99_us": _pct(times, 99), "reps": reps}
        print(f"queue {n:5d}: SlackFit decide median {out[str(n)]['median_us']:.1f} us, "
              f"p99 {out[str(n)]['p99_us']:.1f} us")
    result = dict(results.header(), profile=profile.hardware, subnets=len(profile.subnets),
                  batch_sizes=list(profile.batch_sizes), decision_time=out)
    path = results.write(result, results.named("slackfit_decision"))
    print(f"wrote {path}")
    return 0
