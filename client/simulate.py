"""``superserve simulate``: policies side by side on one trace, on a virtual clock (scheduler/offline/sim.py):
batch latencies from the profile, each request's answers replayed from the validation record
(one image per request, drawn with the trace's seed). No Triton, no sockets: a fast way to see how
a policy or gear plan behaves before running ``superserve bench`` on the real stack."""
from __future__ import annotations

import time

import numpy as np

from superserve.client import results, traces, triton_fixed
from superserve.scheduler import paths
from superserve.scheduler.core import policy_names
from superserve.scheduler.core.latency_model import LatencyModelConfig
from superserve.scheduler.policies.factories import PolicyOptions, factory_for
from superserve.scheduler.policies.slackfit import PAPER_BUCKETS
from superserve.scheduler.core.profile import Profile
from superserve.scheduler.sidecar.server import find_profile
from superserve.scheduler.offline.sim import SimConfig, SimRequest, simulate
from superserve.scheduler.core.summary import describe, summarize
from superserve.supernet.validation import ValidationRecord, default_path


def main(args) -> int:
    if getattr(args, "models", None):
        return main_models(args)
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
    slo_ms = float(args.slo_ms)
    reqs = [SimRequest(float(t) * 1000, slo_ms, int(s), min_confidence=args.min_confidence)
            for t, s in zip(trace.arrivals_s, samples)]
    result = {**results.header(), "profile": profile.hardware, "trace": trace.describe(),
              "slo_ms": slo_ms, "workers": args.workers, "policies": {}}
    result["host"] = host_description(args)
    for spec in specs:
        name = spec.label
        variant = spec.kind in policy_names.SERVED_AS  # slackfit with other options (its arg: a quantile)
        subnet, plan = (None, spec.arg) if spec.kind == "cascade" else (None if variant else spec.arg or args.subnet,
                                                                         None)
        if subnet in triton_fixed.ROLES:  # smallest, middle, largest, as bench reads them
            subnet = triton_fixed.pick(profile, subnet)
        opts = policy_options(spec.kind, subnet=subnet, plan=plan or args.plan)
        policy = factory_for(opts).policy(profile)
        t = time.perf_counter()
        s = summarize(simulate(policy, profile, reqs, record, sim_config(args, spec)))
        s["wall_s"] = round(time.perf_counter() - t, 2)
        result["policies"][name] = s
        print(f"{name:28} {describe(s)}")
    if args.out:
        results.write(result, args.out)
    return 0


def policy_options(kind: str, **kw) -> PolicyOptions:
    """How ``serve`` would run the simulated kind: a SlackFit variant is policy slackfit with its own options."""
    buckets = PAPER_BUCKETS if kind == "slackfit-paper" else PolicyOptions.slackfit_buckets
    overflow = "drop" if kind == "slackfit-drop" else PolicyOptions.slackfit_overflow
    return PolicyOptions(policy_names.SERVED_AS.get(kind, kind), slackfit_buckets=buckets, slackfit_overflow=overflow,
                         **kw)


LATENCY_VARIANTS = {"slackfit-affine": "affine", "slackfit-quantile": "quantile"}
"""``simulate --policy slackfit-affine[:q]``: SlackFit planning with that latency model (at quantile q)."""


def sim_config(args, spec=None) -> SimConfig:
    """The simulated machine and the life cycle's settings from ``simulate``'s options (and a policy variant's
    latency model): the latency model as ``serve`` would run it, unless --no-adapt-latency."""
    o = vars(args)  # every option, with the defaults of the command line (scheduler/commands/offline.py)
    kind, q = o["latency_model"], o["latency_quantile"]
    if spec is not None and spec.kind in LATENCY_VARIANTS:
        kind, q = LATENCY_VARIANTS[spec.kind], float(spec.arg) if spec.arg else q
    host = o["host_scale"]
    return SimConfig(workers=o["workers"], margin_ms=o["margin_ms"], seed=o["seed"],
                     latency=LatencyModelConfig(quantile=q) if o["adapt_latency"] else None, latency_kind=kind,
                     slowdown=None if host == 1.0 else (lambda now: host), jitter_sigma=o["jitter"],
                     call_ms=o["call_ms"], stall_share=o["stall_share"], stall_ms=o["stall_ms"])


def host_description(args) -> dict:
    o = vars(args)
    return {"scale": o["host_scale"], "jitter_sigma": o["jitter"], "call_ms": o["call_ms"],
            "stall_share": o["stall_share"], "stall_ms": o["stall_ms"],
            "latency_model": o["latency_model"] if o["adapt_latency"] else "off",
            "latency_quantile": o["latency_quantile"]}


def model_slos(text: str, models: tuple[str, ...]) -> dict[str, float]:
    """``--slo-ms 50`` (every model) or ``--slo-ms supernet=50,vit=100`` -> {model: slo_ms}."""
    if "=" not in str(text):
        return {m: float(text) for m in models}
    out = {}
    for part in str(text).split(","):
        name, _, ms = part.partition("=")
        if name not in models:
            raise SystemExit(f"--slo-ms: {part!r} must be MODEL=MS with MODEL one of {list(models)}")
        out[name] = float(ms)
    missing = set(models) - set(out)
    if missing:
        raise SystemExit(f"--slo-ms names no SLO for {sorted(missing)}")
    return out


def main_models(args) -> int:
    """``simulate --models supernet,vit``: one trace, each request for one model (a seeded equal share), one queue
    and the same workers for all, as ``serve --models``; a summary over every request and one per model. A model
    without a validation record is simulated without answers (no escalation, real accuracy unknown)."""
    from superserve.scheduler.core.lifecycle import ModelSpec
    from superserve.scheduler.sidecar.served_models import model_files, parse_models, parse_profiles

    models = parse_models(args.models)
    explicit = parse_profiles(args.profile, models)
    files = {m: model_files(m) for m in models}
    profiles = {m: Profile.load(f.profile_path(explicit.get(m), measure=False), expect_supernet=f.sha256)
                for m, f in files.items()}
    records = {}
    for m, prof in profiles.items():
        path = default_path(paths.repo_root(), prof.supernet)
        if path.exists():
            records[m] = ValidationRecord.load(path, prof.supernet)
    slos = model_slos(args.slo_ms, models)
    trace = traces.Trace.load(args.trace) if args.trace else \
        traces.bursty(args.rate / 2, args.rate / 2, 8.0, args.duration, args.seed)
    rng = np.random.default_rng(args.seed)
    which = rng.integers(0, len(models), len(trace.arrivals_s))
    draws = rng.random(len(trace.arrivals_s))
    reqs = []
    for t, k, u in zip(trace.arrivals_s, which, draws):
        m = models[int(k)]
        n = len(records[m].labels) if m in records else 1
        reqs.append(SimRequest(float(t) * 1000, slos[m], int(u * n), min_confidence=args.min_confidence, model=m))
    result = {**results.header(), "models": list(models), "profiles": {m: p.hardware for m, p in profiles.items()},
              "trace": trace.describe(), "slo_ms": slos, "workers": args.workers, "policies": {}}
    try:
        policies = policy_names.parse_list(args.policy, policy_names.SIMULATED, "--policy")
    except policy_names.PolicyNameError as e:
        raise SystemExit(f"superserve simulate: {e}") from None
    for spec in policies:
        name, kind, arg = spec.label, spec.kind, spec.arg
        factory = factory_for(policy_options(kind, subnet=arg or args.subnet, plan=args.plan, models=models))
        specs = [ModelSpec(m, profiles[m], factory.policy(profiles[m], m)) for m in models]
        t = time.perf_counter()
        outs = simulate(None, None, reqs, records, sim_config(args),
                        models=specs)
        s = summarize(outs)
        s["wall_s"] = round(time.perf_counter() - t, 2)
        s["models"] = {m: summarize([o for o, r in zip(outs, reqs) if r.model == m]) for m in models}
        if set(records) != set(models):  # a model without labels: the share answered right is unknown overall
            s["real_accuracy"] = None
        result["policies"][name] = s
        print(f"{name:28} {describe(s)}")
        for m in models:
            print(f"  {m:26} {describe(s['models'][m])}")
    if args.out:
        results.write(result, args.out)
    return 0
