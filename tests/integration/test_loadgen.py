"""The open-loop load generator against the real stack, and the triton-fixed baseline models."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from superserve.client.prometheus_text import by_label, scrape
from superserve.client import traces, triton_fixed
from superserve.client.loadgen import Target, assign_slos, run_open_loop, slo_classes
from superserve.scheduler.core.summary import summarize
from superserve.scheduler import paths
from superserve.scheduler.core.profile import Profile
from superserve.supernet.data import load_split


@pytest.fixture(scope="module")
def test_split():
    images, labels = load_split("test")
    return images[:500], labels[:500]


def outcomes(http_url):
    return by_label(scrape(http_url), "sched_requests_total", "outcome")


def test_every_request_of_an_open_loop_run_is_accounted_for(sidecar, test_split):
    http_url, grpc_url = sidecar
    images, labels = test_split
    trace = traces.poisson(60, 4.0, seed=3)
    slos = assign_slos(len(trace.arrivals_s), slo_classes("2000:0.8,0.01:0.2"), seed=3)
    before = outcomes(http_url)
    recs = asyncio.run(run_open_loop(Target(grpc_url), trace.arrivals_s, slos, images, labels))
    after = outcomes(http_url)
    assert len(recs) == len(trace.arrivals_s) > 150
    infeasible = int((slos < 1).sum())
    assert 0 < infeasible < len(recs)
    by = {o: sum(r.outcome == o for r in recs) for o in ("ok", "late", "dropped", "error")}
    # The 0.01 ms class is refused at admission (504); the 2 s class is served in time.
    assert by == {"ok": len(recs) - infeasible, "late": 0, "dropped": infeasible, "error": 0}, by
    assert all(r.status == "DEADLINE_EXCEEDED" for r in recs if r.slo_ms < 1)
    ok = [r for r in recs if r.outcome == "ok"]
    assert all(r.subnet and r.accuracy and r.batch_size >= 1 and r.correct is not None for r in ok)
    assert np.mean([r.correct for r in ok]) > 0.75  # real images, real labels, a trained supernet
    # The scheduler's own counts agree with what the client saw.
    d = {k: after.get(k, 0) - before.get(k, 0) for k in ("ok", "late", "dropped")}
    assert d["ok"] + d["late"] == len(ok) and d["dropped"] == infeasible, d
    # Open loop: requests went out on schedule, not paced by the answers.
    assert np.percentile([r.lag_ms for r in recs], 90) < 50
    s = summarize(recs)
    assert s["requests"] == len(recs) and s["slo_attainment"] == pytest.approx(len(ok) / len(recs), abs=1e-4)


def test_triton_fixed_models_serve_only_their_subnet(triton_plain, test_split):
    profile = Profile.load(sorted((paths.repo_root() / "profiles").glob("*.json"))[0])
    client = grpcclient.InferenceServerClient(triton_plain.cfg.grpc_url)
    images, _ = test_split
    for role in triton_fixed.ROLES:
        subnet = triton_fixed.pick(profile, role)
        model = triton_fixed.model_name(subnet)
        assert client.is_model_ready(model), f"{model} not in model_repository/; run 'superserve baselines'"
        cfg = client.get_model_config(model).config
        assert cfg.dynamic_batching.default_queue_policy.allow_timeout_override
        inp = grpcclient.InferInput("INPUT", [4, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(images[:4])
        r = client.infer(model, [inp], timeout=1_000_000)  # Triton's per-request queue timeout, in us
        assert [json.loads(v[0])["subnet"] for v in r.as_numpy("INFO")] == [subnet] * 4


def test_generator_drives_triton_directly_for_the_baseline(triton_plain, test_split):
    images, labels = test_split
    profile = Profile.load(sorted((paths.repo_root() / "profiles").glob("*.json"))[0])
    model = triton_fixed.model_name(triton_fixed.pick(profile, "smallest"))
    trace = traces.poisson(50, 2.0, seed=4)
    recs = asyncio.run(run_open_loop(Target(triton_plain.cfg.grpc_url, model=model, slo_param=False,
                                            triton_timeout=True), trace.arrivals_s,
                                     np.full(len(trace.arrivals_s), 2000.0), images, labels))
    assert len(recs) == len(trace.arrivals_s) and all(r.outcome == "ok" for r in recs), \
        {r.outcome + ":" + r.message for r in recs if r.outcome != "ok"}
