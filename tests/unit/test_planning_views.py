"""Two views of the profile (issue 13): policies plan with a high quantile of the latency a batch takes, and drop,
shed or give up on a request only when it most likely cannot be served (``Profile.likely``, the median view).
Planning views at a quantile taken per batch made the life cycle refuse and drop what it could serve: on a
simulated host with stalls the per-batch quantile model shed 5-13% of a 1.5x trace at admission."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from superserve.client import traces
from superserve.scheduler.core.edf_queue import Pending
from superserve.scheduler.core.latency_model import LatencyModelConfig
from superserve.scheduler.policies import make_policy
from superserve.scheduler.policies.base import WorkerView, drop_infeasible_head
from superserve.scheduler.offline.sim import SimConfig, SimRequest, simulate
from superserve.scheduler.core.summary import summarize
from tests.conftest import TOY_PROFILE, committed_profile

W = WorkerView(0, 0)
PLAN = TOY_PROFILE.mapped(lambda ms: 2 * ms + 20).with_median(TOY_PROFILE)
"""A planning view twice as slow plus 20 ms, carrying the profile itself as its median view."""


def fastest(profile) -> float:
    return min(s.at(1) for s in profile.subnets)


def test_a_view_without_a_median_is_its_own_likely_view():
    assert TOY_PROFILE.likely is TOY_PROFILE and PLAN.likely is TOY_PROFILE and PLAN.median is TOY_PROFILE
    assert PLAN == TOY_PROFILE.mapped(lambda ms: 2 * ms + 20)  # the median view is not part of equality


def test_a_request_is_dropped_only_when_it_most_likely_cannot_be_served():
    slack = (fastest(TOY_PROFILE) + fastest(PLAN)) / 2  # fits the median, not the plan
    q = (Pending(1, 0.0, slack), Pending(2, 0.0, fastest(TOY_PROFILE) / 2))  # the second fits neither
    policy = make_policy("slackfit")
    assert drop_infeasible_head(policy, q[:1], 0.0, PLAN) == ((), 0)
    assert drop_infeasible_head(policy, q[1:], 0.0, PLAN) == ((2,), 1)


def test_slackfit_drops_at_decide_time_what_fits_only_the_median_view_if_told_to():
    slack = (fastest(TOY_PROFILE) + fastest(PLAN)) / 2
    d = make_policy("slackfit", overflow="drop").decide((Pending(1, 0.0, slack),), 0.0, PLAN, W)
    assert d.batch is None and d.drop == (1,), d


@pytest.mark.parametrize("name", ["slackfit", "fixed", "cascade", "infaas"])
def test_a_request_that_fits_only_the_median_view_is_served_best_effort(name):
    kw = {"fixed": {"subnet": TOY_PROFILE.subnets[0].name}, "cascade": {}, "infaas": {}, "slackfit": {}}[name]
    if name == "cascade":
        pytest.importorskip("superserve.scheduler.core.gears")
        from superserve.scheduler.core.gears import Gear, GearPlan, Stage
        kw = {"plan": GearPlan((Gear(0, 1e9, (Stage(TOY_PROFILE.subnets[-1].name, None),), 8),))}
    policy = make_policy(name, **kw)
    slack = (fastest(TOY_PROFILE) + fastest(PLAN)) / 2
    d = policy.decide((Pending(1, 0.0, slack),), 0.0, PLAN, W)
    assert d.batch is not None and d.batch.requests == (1,) and not d.drop, d
    assert TOY_PROFILE.get(d.batch.subnet).at(1) <= slack  # a point that fits the median view


def stalled_host_trace(seed: int) -> list[SimRequest]:
    t = traces.bursty(270.0, 270.0, 8.0, 15.0, seed)
    return [SimRequest(float(a) * 1000, 100.0, i) for i, a in enumerate(t.arrivals_s)]


@pytest.mark.parametrize("kind", ["quantile", "affine"])
def test_a_host_with_stalls_is_not_shed_for_its_tail(kind, caplog):
    """1.5x of the committed profile's capacity on a host with per-call cost and 10% stalls of ~25 ms: planned at a
    0.99 quantile taken per batch, shedding by that view refused 800-2,100 of 16,000 requests (5-13%) while the
    worker could serve them; by the median view it refuses none and attainment stays high."""
    caplog.set_level(logging.ERROR)
    profile, reqs = committed_profile(), stalled_host_trace(62)
    host = dict(jitter_sigma=0.05, call_ms=1.5, stall_share=0.1, stall_ms=25.0, seed=62, margin_ms=10.0)
    out = simulate(make_policy("slackfit"), profile, reqs,
                   cfg=SimConfig(latency=LatencyModelConfig(quantile=0.99), latency_kind=kind, **host))
    s = summarize(out)
    refused = sum(o.error == "Overloaded" for o in out)
    assert refused <= 0.005 * len(reqs), (refused, s)
    if kind == "quantile":  # the default; the affine model drops more here (attainment 0.82: SlackFit drops at
        assert s["slo_attainment"] >= 0.9, s  # decide time what fits only the median view)


def test_the_affine_view_plans_long_batches_below_the_ratio_views_plan():
    """The same stalled host: the ratio model's plan for the largest batch runs at several times what it takes."""
    from superserve.scheduler.core import latency_view
    rng = np.random.default_rng(3)
    profile = committed_profile()
    models = {k: latency_view.build(k, profile, LatencyModelConfig(quantile=0.99)) for k in ("quantile", "affine")}
    points = [(s, b) for s in profile.subnets for b in profile.batch_sizes]
    for _ in range(600):
        s, b = points[rng.integers(len(points))]
        prof = s.at(b)
        obs = prof + 1.5 + (rng.random() < 0.1) * rng.exponential(25.0)
        for m in models.values():
            m.observe(b, obs, prof)
    top = profile.subnets[-1]
    truth = top.at(profile.max_batch) + 1.5 + 25.0 * np.log(10)  # p99: 10% stall, exponential tail
    ratio_plan = models["quantile"].view().get(top.name).at(profile.max_batch)
    affine_plan = models["affine"].view().get(top.name).at(profile.max_batch)
    assert affine_plan <= 1.35 * truth < ratio_plan, (truth, affine_plan, ratio_plan)
