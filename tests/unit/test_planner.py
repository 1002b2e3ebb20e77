"""The cascade planner on a small synthetic profile and validation record with a known best cascade."""
import pytest

from superserve.scheduler.offline import planner
from superserve.scheduler.core.gears import GearPlan, Stage
from tests.conftest import CASCADE_PROFILE, cascade_record

CFG = planner.PlanConfig(slo_ms=100, margin_ms=0, n_gears=4, peak_rps=4000, max_sim_requests=600)


def test_enumeration_counts_and_exact_accuracy_and_reach():
    rec = cascade_record()
    every = planner.enumerate_cascades(rec, ["small", "mid", "big"], thresholds=(0.5, 0.99))
    assert len(every) == 3 + 3 * 2 + 1 * 2 * 2  # singles, pairs x thresholds, the triple x threshold pairs
    by_name = {c.name: c for c in every}
    assert by_name["small"].accuracy == pytest.approx(0.8) and by_name["big"].accuracy == 1.0
    best = by_name["small@0.5 > big"]  # small is unsure (0.4) exactly on the 20% it gets wrong
    assert best.accuracy == 1.0 and best.reach == pytest.approx((1.0, 0.2))
    assert best.cost_ms(CASCADE_PROFILE, 1) == pytest.approx(1.1 + 0.2 * 12)
    assert by_name["small@0.99 > big"].reach == pytest.approx((1.0, 1.0))  # everything escalates
    tri = by_name["small@0.5 > mid@0.5 > big"]  # mid is sure (0.7) of all it sees: half of those are wrong
    assert tri.accuracy == pytest.approx(0.9) and tri.reach == pytest.approx((1.0, 0.2, 0.0))
    assert planner.evaluate(best, rec) == (pytest.approx(1.0), pytest.approx((1.0, 0.2)))


def test_pareto_front_leads_with_the_known_best_cascade_and_report_compares_with_the_largest():
    every = planner.enumerate_cascades(cascade_record(), ["small", "mid", "big"], thresholds=(0.5, 0.99))
    front = planner.pareto(every, CASCADE_PROFILE)
    assert front[0].name == "small@0.5 > big"
    assert all(c.name != "small@0.99 > big" for c in front)  # as accurate, but dearer: dominated
    rep = planner.report(every, CASCADE_PROFILE)
    assert rep["largest"]["name"] == "big"
    assert rep["batch_1"]["best_at_equal_cost"]["name"] == "small@0.5 > big"
    assert rep["batch_1"]["cheapest_as_accurate"]["cost_ratio"] == pytest.approx(3.5 / 12, abs=1e-3)


def test_gear_plan_is_accurate_at_low_rates_and_cheaper_at_high_ones():
    rec = cascade_record()
    plan = planner.build_plan(CASCADE_PROFILE, rec, CFG, thresholds=(0.5, 0.99))
    gears = plan["gears"]
    assert gears[0]["min_rps"] == 0 and gears[0]["stages"] == [{"subnet": "small", "threshold": 0.5},
                                                                {"subnet": "big", "threshold": None}]
    assert all(a["accuracy"] >= b["accuracy"] for a, b in zip(gears, gears[1:]))
    assert all(g["simulated"]["quantile_ms"] <= 100 for g in gears)
    assert len(gears) > 1, "4000 req/s is beyond small > big here: a cheaper gear must take over"
    p = GearPlan.from_dict(plan)  # loads as the cascade policy will
    assert p.gears[0].stages == (Stage("small", 0.5), Stage("big", None))


def test_an_slo_no_cascade_meets_is_reported_infeasible():
    cfg = planner.PlanConfig(slo_ms=1.0, margin_ms=0, n_gears=2, peak_rps=100, max_sim_requests=300)
    plan = planner.build_plan(CASCADE_PROFILE, cascade_record(), cfg, thresholds=(0.5,))
    assert plan["gears"] == [] and plan["infeasible_above_rps"] == 50.0
