"""Several models in one life cycle (issue 17 item 5): one EDF queue, batches of one model each, the model of the
earliest deadline decides first with its own policy instance and its own planning view; min_accuracy, subnet
pinning, the latency model, the deadline sweep and cascades per model; metrics labelled by model. On a fake
clock (the life cycle takes ``now`` as an argument), then the live engine against the simulator on one bursty
trace of two models (the real CNN and ViT profiles)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from superserve.scheduler.sidecar.engine import Engine, EngineConfig
from superserve.scheduler.core.errors import DeadlineInfeasible, InvalidInput
from superserve.scheduler.core.gears import Gear, GearPlan, Stage
from superserve.scheduler.core.latency_model import LatencyModelConfig
from superserve.scheduler.core.lifecycle import Lifecycle, LifecycleConfig, ModelSpec
from superserve.scheduler.sidecar.metrics import render
from superserve.scheduler.policies import make_policy
from superserve.scheduler.core.profile import Profile, SubnetProfile
from superserve.scheduler.core.roster import Roster
from superserve.scheduler.offline.sim import SimConfig, SimRequest, simulate
from superserve.scheduler import paths
from tests import virtual_engine as ve

BATCHES = (1, 2, 4, 8)
CNN = Profile("test", "cnn-sha", BATCHES, (
    SubnetProfile("a-small", 0.80, {1: 2.0, 2: 3.0, 4: 4.0, 8: 6.0}),
    SubnetProfile("a-big", 0.92, {1: 10.0, 2: 14.0, 4: 20.0, 8: 30.0})))
VIT = Profile("test", "vit-sha", BATCHES, (
    SubnetProfile("b-small", 0.75, {1: 5.0, 2: 7.0, 4: 9.0, 8: 12.0}),
    SubnetProfile("b-big", 0.85, {1: 20.0, 2: 25.0, 4: 35.0, 8: 50.0})))


def lifecycle(latency: LatencyModelConfig | None = None, policy: str = "slackfit") -> Lifecycle:
    cfg = LifecycleConfig(margin_ms=0.0, latency=latency, pipeline=False, admission_shedding=False)
    roster = Roster()
    roster.add(0, "w0")
    return Lifecycle(cfg, None, None, roster, models=[ModelSpec("cnn", CNN, make_policy(policy)),
                                                       ModelSpec("vit", VIT, make_policy(policy))])


def finish(lc: Lifecycle, d, at: float) -> list:
    lc.release(d, at)
    return lc.complete(d, at, [None] * len(d.jobs), lambda v, m: 1.0)


def test_a_batch_holds_one_model_and_the_earliest_deadline_decides_first():
    lc = lifecycle()
    a1 = lc.admit(0.0, 100.0, model="cnn")
    b1 = lc.admit(0.0, 50.0, model="vit")
    a2 = lc.admit(0.0, 120.0, model="cnn")
    b2 = lc.admit(0.0, 60.0, model="vit")
    (d,) = lc.pump(0.0).dispatches
    assert d.model == "vit" and d.jobs == [b1, b2] and d.batch.subnet in ("b-small", "b-big")
    assert d.slot.end_ms <= 50.0  # the subnet and batch fit the head's slack on the vit's own profile
    assert not lc.pump(0.0).dispatches  # one worker, busy
    finish(lc, d, d.slot.end_ms)
    (d2,) = lc.pump(d.slot.end_ms).dispatches
    assert d2.model == "cnn" and d2.jobs == [a1, a2] and d2.batch.subnet in ("a-small", "a-big")


def test_each_model_plans_with_its_own_profile():
    lc = lifecycle()
    for model, expect in (("cnn", "a-big"), ("vit", "b-small")):  # 12 ms: the CNN's big subnet fits, the ViT's not
        lc.admit(0.0, 12.0, model=model)
        (d,) = lc.pump(0.0).dispatches
        assert (d.model, d.batch.subnet) == (model, expect)
        finish(lc, d, d.slot.end_ms)
    with pytest.raises(DeadlineInfeasible, match="fastest admissible point"):  # below the ViT's fastest (5 ms)
        lc.admit(100.0, 4.0, model="vit")
    lc.admit(100.0, 4.0, model="cnn")  # the CNN's fastest is 2 ms


def test_min_accuracy_and_subnet_pinning_are_per_model():
    lc = lifecycle()
    with pytest.raises(InvalidInput, match=r"of model 'vit': 0\.85"):
        lc.admit(0.0, 100.0, min_accuracy=0.9, model="vit")
    lc.admit(0.0, 100.0, min_accuracy=0.9, model="cnn")
    (d,) = lc.pump(0.0).dispatches
    assert (d.model, d.batch.subnet) == ("cnn", "a-big")
    finish(lc, d, d.slot.end_ms)
    with pytest.raises(InvalidInput, match=r"'a-big' is not a profiled subnet of model 'vit'.*b-small"):
        lc.admit(50.0, 100.0, subnet="a-big", model="vit")
    lc.admit(50.0, 100.0, subnet="b-small", model="vit")
    (d,) = lc.pump(50.0).dispatches
    assert (d.model, d.batch.subnet) == ("vit", "b-small")
    assert lc.stats.model_requests[("vit", "invalid")] == 2 and lc.stats.model_requests[("cnn", "invalid")] == 0


def test_the_latency_model_and_its_view_are_per_model():
    lc = lifecycle(latency=LatencyModelConfig(quantile=0.9))
    now = 0.0
    for _ in range(30):  # the ViT's batches run 3x slower than profiled; no CNN batch runs
        lc.admit(now, 200.0, model="vit")
        (d,) = lc.pump(now).dispatches
        now += 3 * VIT.get(d.batch.subnet).at(d.rows)
        finish(lc, d, now)
    vit, cnn = lc.models["vit"], lc.models["cnn"]
    assert vit.factor >= 2.5 and vit.profile is not vit.base_profile
    assert cnn.factor == 1.0 and cnn.profile is cnn.base_profile
    text = render(lc.stats)
    assert f'sched_model_profile_latency_scale{{model="vit"}} {vit.factor}' in text
    assert 'sched_model_profile_latency_scale{model="cnn"} 1.0' in text
    assert 'sched_model_requests_total{model="vit",outcome="ok"} 30' in text
    assert 'sched_subnet_selected_total{model="vit",subnet="b-big"}' in text


def test_the_sweep_drops_an_infeasible_head_of_either_model():
    lc = lifecycle()
    lc.admit(0.0, 200.0, subnet="a-big", model="cnn")
    (busy,) = lc.pump(0.0).dispatches  # the one worker is busy until 10 ms
    lc.admit(1.0, 80.0, subnet="a-big", model="cnn")  # deadlines 81 and 8: the ViT's is the head
    job = lc.admit(1.0, 7.0, model="vit")
    step = lc.pump(1.0)
    assert not step.dispatches and step.sweep_changed and step.sweep_at == pytest.approx(8.0 - 5.0 + 0.05)
    (r,) = lc.on_sweep(step.sweep_at).resolved
    assert r.job is job and isinstance(r.error, DeadlineInfeasible)
    assert lc.stats.model_requests[("vit", "dropped")] == 1 and len(lc.queue) == 1


def test_unknown_model_names_are_a_key_error_not_a_new_label():
    lc = lifecycle()
    with pytest.raises(KeyError):
        lc.admit(0.0, 100.0, model="nope")  # the front end refuses unknown names first (404 / NOT_FOUND)
    with pytest.raises(ValueError, match="must differ"):
        Lifecycle(LifecycleConfig(), None, None, models=[ModelSpec("x", CNN, make_policy("slackfit"))] * 2)


# -- the simulator and the live engine on two models ---------------------------------------------------------
def real_profiles() -> dict[str, Profile]:
    root = paths.repo_root() / "profiles"
    return {"supernet": Profile.load(sorted(root.glob("*.json"))[0]),
            "vit": Profile.load(sorted((root / "vit").glob("*.json"))[0])}


PROFILES = real_profiles()
OWNER = {s.name: m for m, p in PROFILES.items() for s in p.subnets}
"""Subnet -> model (the two families' subnet names differ)."""


def two_model_trace() -> list[SimRequest]:
    """The equivalence test's bursty trace, each request for one model or the other (a seeded half each), the ViT's
    with a looser SLO (x1.5)."""
    rng = np.random.default_rng(21)
    out = []
    for r in ve.bursty_trace():
        vit = bool(rng.random() < 0.5)
        out.append(SimRequest(r.arrival_ms, r.slo_ms * (1.5 if vit else 1.0), r.sample,
                              min(r.min_accuracy, 0.8) if vit and r.min_accuracy < 0.99 else r.min_accuracy,
                              r.min_confidence, "vit" if vit else "supernet"))
    return out


def plans() -> dict[str, GearPlan]:
    """One cascade plan per model, on that model's own subnets."""
    out = {}
    for m, p in PROFILES.items():
        s = [x.name for x in p.subnets]
        out[m] = GearPlan((Gear(0, 500, (Stage(s[2], 0.5), Stage(s[len(s) // 2], 0.6), Stage(s[-1], None)), 8),
                           Gear(500, 1e9, (Stage(s[0], 0.4), Stage(s[-3], None)), 32)))
    return out


def specs(policy: str) -> list[ModelSpec]:
    make = {"slackfit": lambda m: make_policy("slackfit"),
            "clipper": lambda m: make_policy("clipper", subnet=PROFILES[m].subnets[-5].name),
            "cascade": lambda m: make_policy("cascade", plan=plans()[m])}[policy]
    return [ModelSpec(m, p, make(m)) for m, p in PROFILES.items()]


def run_sim2(policy: str, reqs, record):
    batches: list = []
    cfg = SimConfig(workers=ve.WORKERS, margin_ms=ve.MARGIN_MS, default_min_confidence=0.3, jitter_sigma=ve.SIGMA,
                    seed=ve.SEED, latency=LatencyModelConfig(quantile=ve.QUANTILE))
    outs = simulate(None, None, reqs, {m: record for m in PROFILES}, cfg, batches, models=specs(policy))
    return [(b.at_ms, b.worker, b.subnet, b.requests) for b in batches], ve.fates_of_sim(outs), outs, batches


def run_engine2(policy: str, reqs, record):
    cfg = EngineConfig(margin_ms=ve.MARGIN_MS, default_min_confidence=0.3, latency_quantile=ve.QUANTILE,
                       queue_capacity=100_000)
    timeline = ve.Timeline(lambda subnet, rows: PROFILES[OWNER[subnet]].get(subnet).at(rows))
    batches, fates, _ = ve.run_engine(lambda clock, workers: Engine(cfg, None, None, workers, clock=clock,
                                                                     models=specs(policy)),
                                      reqs, timeline, record, OWNER)
    return batches, fates


@pytest.mark.parametrize("policy", ["slackfit", "clipper", "cascade"])
def test_engine_and_simulator_agree_on_two_models(policy):
    reqs = two_model_trace()
    accuracy = {s.name: s.accuracy for p in PROFILES.values() for s in p.subnets}
    record = ve.SeededRecord({s: accuracy[s] for s in OWNER}, len(reqs))
    eb, ef = run_engine2(policy, reqs, record)
    sb, sf, outs, batches = run_sim2(policy, reqs, record)
    assert ve.first_difference(eb, sb) is None, "batches differ: " + ve.first_difference(eb, sb)
    assert ve.first_difference(ef, sf) is None, "fates differ: " + ve.first_difference(ef, sf)
    # Every batch is one model's, on that model's subnets; both models were served, in batches of several.
    for b in batches:
        assert {reqs[i].model for i in b.requests} == {b.model} and OWNER[b.subnet] == b.model
    for m in PROFILES:
        served = [o for o, r in zip(outs, reqs) if r.model == m and o.error is None]
        assert len(served) >= 50 and all(OWNER[s] == m for o in served for s in o.subnets)
        assert max(len(b.requests) for b in batches if b.model == m) >= 4
    if policy == "cascade":  # escalations in each model, within its own subnets
        for m in PROFILES:
            assert sum(len(o.subnets) > 1 for o, r in zip(outs, reqs) if r.model == m) >= 10


# -- input specs from the family: admission and the warm-up ---------------------------------------------------
def test_admission_takes_the_input_shape_from_the_models_spec():
    from superserve.scheduler.core.admission import check_input
    from superserve.scheduler.core.admission import InputSpec

    spec = InputSpec("INPUT", "FP32", (3, 32, 32))
    x = np.zeros((2, 3, 32, 32), np.float32)
    assert check_input("INPUT", "FP32", [2, 3, 32, 32], x.ravel(), 8, spec, "ofa").shape == (2, 3, 32, 32)
    with pytest.raises(InvalidInput, match=r"of model 'ofa' must have shape \[B, 3, 32, 32\] with 1 <= B <= 8, "
                                           r"got \[1, 1, 28, 28\]"):
        check_input("INPUT", "FP32", [1, 1, 28, 28], np.zeros(784, np.float32), 8, spec, "ofa")


def test_the_warm_up_sends_each_models_own_input_shape():
    from superserve.scheduler.policies.factories import PolicyOptions, factory_for

    calls = []

    class Recorder:
        async def infer(self, images, subnet, timeout_s, model=None):
            calls.append((model, images.shape, subnet))
            return np.zeros((len(images), 10), np.float32), [b"{}"] * len(images)

    factory = factory_for(PolicyOptions("slackfit", models=("cnn", "ofa")))
    warm = factory.warmup(CNN, 5.0, {"cnn": (CNN, (1, 28, 28)), "ofa": (VIT, (3, 32, 32))})
    asyncio.run(warm(Recorder()))
    assert calls == [("cnn", (1, 1, 28, 28), "a-small"), ("ofa", (1, 3, 32, 32), "b-small")]


def test_models_and_profiles_options():
    from superserve.scheduler.sidecar.served_models import DEFAULT_MODELS, model_files, parse_models, parse_profiles

    assert parse_models(None) == DEFAULT_MODELS == ("supernet",)
    assert parse_models("supernet, vit") == ("supernet", "vit")
    for bad in ("supernet,supernet", "a b", "../x"):
        with pytest.raises(ValueError, match="--models"):
            parse_models(bad)
    assert parse_profiles("p.json", ("vit", "supernet")) == {"vit": "p.json"}
    assert parse_profiles("vit=a.json,supernet=b.json", ("supernet", "vit")) == {"vit": "a.json", "supernet": "b.json"}
    with pytest.raises(ValueError, match="MODEL=FILE"):
        parse_profiles("resnet=a.json", ("supernet", "vit"))
    vit = model_files("vit")
    assert (vit.family, vit.input.dims, vit.weights.name) == ("elastic-vit", (1, 28, 28), "vit.pt")
    with pytest.raises(ValueError, match=r"no model 'resnet' in .*supernets there: \['supernet', 'vit'\]"):
        model_files("resnet")


def test_a_batch_is_pipelined_only_behind_a_batch_of_the_same_model():
    cfg = LifecycleConfig(margin_ms=0.0, latency=None, pipeline=True, pipeline_lead_ms=3.0, pipeline_min_rows=1,
                          admission_shedding=False)
    roster = Roster()
    roster.add(0, "w0")
    lc = Lifecycle(cfg, None, None, roster, models=[ModelSpec("cnn", CNN, make_policy("slackfit")),
                                                    ModelSpec("vit", VIT, make_policy("slackfit"))])
    lc.admit(0.0, 200.0, subnet="a-big", model="cnn")
    (first,) = lc.pump(0.0).dispatches  # runs until 10 ms
    lc.admit(1.0, 100.0, model="cnn")
    (second,) = lc.pump(8.0).dispatches  # 3 ms before the end: the CNN's next batch goes behind it
    assert second.model == "cnn" and roster.get(0).inflight == 2
    finish(lc, first, 10.0)
    lc.admit(11.0, 60.0, model="vit")  # the head now is the ViT's
    lc.admit(11.0, 150.0, model="cnn")
    assert not lc.pump(second.slot.end_ms - 1.0).dispatches  # not behind the CNN's batch, nor the CNN jumping it
    finish(lc, second, second.slot.end_ms)
    (third,) = lc.pump(second.slot.end_ms).dispatches
    assert third.model == "vit"


def test_simulate_command_with_two_models(tmp_path, capsys):
    import json

    from superserve.scheduler.cli import main

    out = tmp_path / "sim.json"
    assert main(["simulate", "--models", "supernet,vit", "--policy", "slackfit", "--rate", "300", "--duration", "2",
                 "--slo-ms", "supernet=40,vit=80", "--margin-ms", "5", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    s = r["policies"]["slackfit"]
    assert r["models"] == ["supernet", "vit"] and r["slo_ms"] == {"supernet": 40.0, "vit": 80.0}
    assert s["models"]["supernet"]["requests"] + s["models"]["vit"]["requests"] == s["requests"] > 400
    cnn, vit = (s["models"][m]["real_accuracy"] for m in ("supernet", "vit"))  # each has a validation record
    assert 0.7 < vit < cnn < 1 and min(cnn, vit) <= s["real_accuracy"] <= max(cnn, vit)
    assert min(s["models"][m]["slo_attainment"] for m in ("supernet", "vit")) > 0.5
    assert "  vit " in capsys.readouterr().out
