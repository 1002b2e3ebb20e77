"""Gear plans: lookup by rate, the arrival-rate window and hysteresis, all on a fake clock."""
import pytest

from superserve.scheduler.core.gears import Gear, GearPlan, GearSwitcher, PlanError, RateWindow, Stage

PLAN = GearPlan((
    Gear(0, 100, (Stage("small", 0.9), Stage("big", None)), 8),
    Gear(100, 200, (Stage("small", 0.6), Stage("mid", None)), 16),
    Gear(200, 300, (Stage("small", None),), 32),
))


def test_lookup_by_rate_and_above_the_last_range():
    assert [PLAN.index(r) for r in (0, 50, 99.9, 100, 150, 200, 250, 10_000)] == [0, 0, 0, 1, 1, 2, 2, 2]
    assert PLAN.subnets() == {"small", "mid", "big"}


def test_plan_validation():
    with pytest.raises(PlanError, match="no gears"):
        GearPlan(())
    with pytest.raises(PlanError, match="no threshold on the last"):
        GearPlan((Gear(0, 10, (Stage("a", 0.5),), 8),))
    with pytest.raises(PlanError, match="ascending"):
        GearPlan((PLAN.gears[1], PLAN.gears[0]))
    with pytest.raises(PlanError, match="missing field"):
        GearPlan.from_dict({"gears": [{"min_rps": 0}]})


def test_plan_round_trips_through_json_dict():
    d = {"measure": "margin", "gears": [{"min_rps": 0, "max_rps": 5, "max_batch": 4,
                                          "stages": [{"subnet": "a", "threshold": 0.5}, {"subnet": "b"}]}]}
    p = GearPlan.from_dict(d)
    assert p.measure == "margin" and p.gears[0].stages == (Stage("a", 0.5), Stage("b", None))
    assert p.gears[0].name == "a@0.5 > b"


def test_rate_window_counts_rows_in_the_last_window_only():
    w = RateWindow(window_ms=1000)
    for t in range(0, 1000, 10):  # 100 arrivals in the first second
        w.add(t)
    assert w.rate(999) == pytest.approx(100)
    w.add(1000, n=4)
    assert w.rate(1000) == pytest.approx(99 + 4)  # the arrival at t=0 left the window
    assert w.rate(2500) == 0


def test_switches_up_at_once():
    s = GearSwitcher(PLAN, down_hold_ms=500, hysteresis=0.1)
    assert s.update(50, 0) is PLAN.gears[0]
    assert s.update(250, 1) is PLAN.gears[2] and s.switches == 1


def test_switches_down_only_after_the_hold_and_below_the_band():
    s = GearSwitcher(PLAN, down_hold_ms=500, hysteresis=0.1)
    s.update(250, 0)
    # 190 rps is gear 1's range but within 10% of gear 2's lower edge (200): no switch, ever
    for t in range(0, 3000, 100):
        assert s.update(190, t) is PLAN.gears[2]
    # 150 rps is clearly below: switch only once it has held for 500 ms
    assert s.update(150, 3000) is PLAN.gears[2]
    assert s.update(150, 3400) is PLAN.gears[2]
    assert s.update(150, 3500) is PLAN.gears[1]
    assert s.switches == 2


def test_a_short_dip_does_not_switch_down():
    s = GearSwitcher(PLAN, down_hold_ms=500, hysteresis=0.1)
    s.update(250, 0)
    s.update(50, 100)
    s.update(250, 300)  # back up before the hold: the timer restarts
    s.update(50, 400)
    assert s.update(50, 800) is PLAN.gears[2]
    assert s.update(50, 900) is PLAN.gears[0]  # 500 ms after the dip that lasted
