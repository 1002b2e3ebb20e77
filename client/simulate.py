"""``superserve simulate``: policies side by side on one trace, on a virtual clock (scheduler/sim.py):
batch latencies from the profile, each request's answers replayed from the validation record
(one image per request, drawn with the trace's seed). No Triton, no sockets: a fast way to see how
a policy or gear plan behaves before running ``superserve bench`` on the real stack."""
from __future__ import annotations

import time

import numpy as np

from superserve.client import results, traces, triton_fixed
from superserve.scheduler import paths, policy_names
from superserve.scheduler.policies.factories import PolicyOptions, factory_for
from superserve.scheduler.profile import Profile
from superserve.scheduler.server import find_profile
from superserve.scheduler.sim import SimConfig, SimRequest, simulate
from superserve.scheduler.summary import describe, summarize
from superserve.supernet.validation import ValidationRecord, default_path


def main(args) -> int:
    try:
        specs = policy_names.parse_list(args.policy, policy_names.SIMULATED, "--policy")
    except policy_names.PolicyNameError as e:
        raise SystemExit(f"superserve simulate: {e}") from None
    profile = Profile.load(find_profile(args.profile))
    record = ValidationRecord.load(default_path(paths.repo_root(), profile.supernet), profile.supernet)
    trace = traces.Trace.load(args.trace) if args.trace else \
        traces.bursty(args.rate / 2, args.rate / 2, 8.0, args.duration, args.seed)
    rng = np.random.default_rng(args.seed)
    samples = rng.integers(0, len(record.labels), len(trace.arrivals_s))
    reqs = [SimRequest(float(t) * 1000, args.slo_ms, int(s), min_confidence=args.min_confidence)
            for t, s in zip(trace.arrivals_s, samples)]
    result = {**results.header(), "profile": profile.hardware, "trace": trace.describe(),
              "slo_ms": args.slo_ms, "workers": args.workers, "policies": {}}
    for spec in specs:
        name = spec.label
        subnet, plan = (None, spec.arg) if spec.kind == "cascade" else (spec.arg or args.subnet, None)
        if subnet in triton_fixed.ROLES:  # smallest, middle, largest, as bench reads them
            subnet = triton_fixed.pick(profile, subnet)
        opts = PolicyOptions(spec.kind, subnet=subnet, plan=plan or args.plan)
        policy = factory_for(opts).policy(profile)
        t = time.perf_counter()
        s = summarize(simulate(policy, profile, reqs, record,
                               SimConfig(workers=args.workers, margin_ms=args.margin_ms)))
        s["wall_s"] = round(time.perf_counter() - t, 2)
        result["policies"][name] = s
        print(f"{name:28} {describe(s)}")
    if args.out:
        results.write(result, args.out)
    return 0
