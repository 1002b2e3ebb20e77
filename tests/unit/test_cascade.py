"""The cascade policy, the escalation rule and the simulator: pure functions on a fake clock."""
from dataclasses import replace

import numpy as np
import pytest

from superserve.scheduler.core.edf_queue import Pending
from superserve.scheduler.core.escalation import escalate, threshold_for
from superserve.scheduler.core.gears import Gear, GearPlan, Stage
from superserve.scheduler.policies import CascadePolicy, SlackFit, WorkerView, make_policy
from superserve.scheduler.core.profile import Profile, ProfileError
from superserve.scheduler.offline.sim import SimConfig, SimRequest, simulate
from superserve.scheduler.core.summary import summarize
from superserve.supernet.validation import ValidationRecord

SIZES = (1, 2, 4, 8, 16, 32)
PROFILE = Profile.from_dict({
    "hardware": "test", "supernet": "abc", "batch_sizes": list(SIZES),
    "subnets": [{"name": n, "accuracy": a, "latency_ms": {str(b): {"mean": base + per * b, "p99": base + per * b}
                                                          for b in SIZES}}
                for n, a, base, per in (("small", 0.80, 1, 0.1), ("mid", 0.88, 3, 0.5), ("big", 0.93, 10, 2.0))]})
W = WorkerView(0, 0)
PLAN = GearPlan((Gear(0, 100, (Stage("small", 0.9), Stage("big", None)), 8),
                 Gear(100, 1e9, (Stage("small", 0.5), Stage("mid", None)), 32)))


def test_new_requests_start_on_the_first_stage_and_batch_up_to_the_trigger():
    q = tuple(Pending(i, 0, 100 + i) for i in range(20))
    d = CascadePolicy(PLAN).decide(q, 0.0, PROFILE, W)
    assert d.batch.subnet == "small" and d.batch.requests == tuple(range(8))  # gear 0 batches at most 8


def test_escalated_requests_run_on_the_next_stage_with_first_stage_requests_left_alone():
    q = (Pending(0, 0, 50, stage=1, above_accuracy=0.80), Pending(1, 0, 60), Pending(2, 0, 70, stage=1, above_accuracy=0.80))
    d = CascadePolicy(PLAN).decide(q, 0.0, PROFILE, W)
    assert d.batch.subnet == "big" and d.batch.requests == (0, 2)


def test_a_stage_that_no_longer_fits_the_slack_falls_back_to_the_best_that_does():
    q = (Pending(0, 0, 8, stage=1, above_accuracy=0.80),)  # big needs 12 ms, mid 3.5 fits
    d = CascadePolicy(PLAN).decide(q, 0.0, PROFILE, W)
    assert d.batch.subnet == "mid"
    q = (Pending(0, 0, 2, stage=1, above_accuracy=0.80),)  # nothing above small fits: dropped
    assert CascadePolicy(PLAN).decide(q, 0.0, PROFILE, W).drop == (0,)


def test_gear_follows_the_arrival_rate():
    p = CascadePolicy(PLAN, window_ms=1000)
    for t in range(0, 1000, 5):  # 200 req/s
        p.on_arrival(float(t))
    q = tuple(Pending(i, 900, 1100 + i) for i in range(40))
    assert p.decide(q, 1000.0, PROFILE, W) == p.decide(q, 1000.0, PROFILE, W)  # decide alone changes nothing
    assert p.gear is PLAN.gears[0]
    p.advance(1000.0, PROFILE)  # the driver's step before decide: the gear follows the rate
    d = p.decide(q, 1000.0, PROFILE, W)
    assert p.gear is PLAN.gears[1] and len(d.batch.requests) == 32
    assert p.escalation_threshold("small") == 0.5 and p.escalation_threshold("mid") is None


def test_check_rejects_a_plan_naming_unprofiled_subnets():
    bad = GearPlan((Gear(0, 1, (Stage("tiny", 0.5), Stage("big", None)), 8),))
    with pytest.raises(ProfileError, match="tiny"):
        CascadePolicy(bad).check(PROFILE)
    with pytest.raises(ValueError, match="needs a gear plan"):
        make_policy("cascade")


def test_escalation_rule():
    p = Pending(0, 0, 100)
    sf = SlackFit()
    up = escalate(p, 0.80, 0.5, 0.9, 0.0, sf, PROFILE)
    assert up.stage == 1 and up.above_accuracy == 0.80 and up.id == 0
    assert sf.fastest_ms(up, PROFILE) == PROFILE.get("mid").at(1)
    assert escalate(p, 0.80, 0.95, 0.9, 0.0, sf, PROFILE) is None        # confident enough
    assert escalate(p, 0.80, 0.5, None, 0.0, sf, PROFILE) is None        # no threshold anywhere
    assert escalate(p, 0.93, 0.5, 0.9, 0.0, sf, PROFILE) is None         # nothing more accurate
    assert escalate(p, 0.80, 0.5, 0.9, 97.0, sf, PROFILE) is None        # 3 ms left < mid's 3.1 ms
    assert escalate(replace(p, subnet="small"), 0.80, 0.5, 0.9, 0.0, sf, PROFILE) is None  # pinned


def test_threshold_precedence_request_then_policy_then_server():
    c = CascadePolicy(PLAN)
    assert threshold_for(Pending(0, 0, 1, min_confidence=0.99), "small", c, 0.3) == 0.99
    assert threshold_for(Pending(0, 0, 1), "small", c, 0.3) == 0.9
    assert threshold_for(Pending(0, 0, 1), "big", c, 0.3) == 0.3
    assert threshold_for(Pending(0, 0, 1), "small", SlackFit(), None) is None


def _record(n=1000):
    """small is right on 80% of images and sure (0.95) exactly then; mid right on 90%; big on all."""
    labels = np.zeros(n, dtype=np.int64)
    i = np.arange(n)
    preds = np.stack([np.where(i % 5 == 0, 1, 0), np.where(i % 10 == 0, 1, 0), np.zeros(n)]).astype(np.int16)
    conf = np.stack([np.where(i % 5 == 0, 0.4, 0.95), np.full(n, 0.7), np.full(n, 0.99)]).astype(np.float32)
    return ValidationRecord("abc", ("small", "mid", "big"), labels, preds, conf, conf / 2)


def test_simulator_escalates_unsure_answers_and_replays_correctness():
    rec = _record()
    reqs = [SimRequest(t * 50.0, 100.0, sample=t) for t in range(200)]  # 20 req/s: never queued
    out = simulate(CascadePolicy(PLAN), PROFILE, reqs, rec)
    s = summarize(out)
    assert s["slo_attainment"] == 1.0 and s["real_accuracy"] == 1.0
    assert s["escalated"] == 40  # exactly the images small is unsure of (i % 5 == 0)
    assert all(o.subnets == (["small", "big"] if i % 5 == 0 else ["small"]) for i, o in enumerate(out))
    assert out[0].done_ms == pytest.approx(PROFILE.get("small").at(1) + PROFILE.get("big").at(1))


def test_simulator_answers_with_the_previous_stage_when_escalation_cannot_run_in_time():
    rec = _record()
    # a 13 ms SLO: small (1.1 ms) then big (12 ms) does not fit, mid (3.5 ms) does: SlackFit + min_confidence
    reqs = [SimRequest(t * 50.0, 13.0, sample=t, min_confidence=0.99) for t in range(20)]
    out = simulate(SlackFit(), PROFILE, reqs, rec, SimConfig(margin_ms=0))
    assert {o.outcome for o in out} == {"ok"}
    assert all(o.subnets == ["big"] for o in out)  # SlackFit starts on big: nothing more accurate to escalate to
    out = simulate(make_policy("fixed", subnet="small"), PROFILE, reqs, rec)
    assert all(o.subnets == ["small"] for o in out)  # fixed admits no bigger subnet: never escalates


def test_simulator_is_deterministic_and_drops_what_cannot_be_served():
    rec = _record()
    reqs = [SimRequest(0.0, 5.0, sample=t) for t in range(100)]  # 100 at once, 5 ms SLO
    a = summarize(simulate(CascadePolicy(PLAN), PROFILE, reqs, rec))
    b = summarize(simulate(CascadePolicy(PLAN), PROFILE, reqs, rec))
    assert a == b and a["dropped"] > 0 and a["requests"] == 100


def test_gear_lookup_scales_the_rate_by_how_much_slower_the_profile_runs_than_planned():
    plan = GearPlan(PLAN.gears, reference=("big", 32, PROFILE.get("big").at(32)))
    p = CascadePolicy(plan, window_ms=1000)
    for t in range(0, 1000, 20):  # 50 req/s: gear 0 as planned
        p.on_arrival(float(t))
    p.advance(1000.0, PROFILE)
    assert p.gear is PLAN.gears[0] and p.slowdown(PROFILE) == 1.0
    slow = PROFILE.scaled(2.5)  # the engine saw forwards 2.5x slower than profiled: 50 req/s acts like 125
    p.advance(1000.0, slow)
    assert p.slowdown(slow) == pytest.approx(2.5) and p.gear is PLAN.gears[1]
