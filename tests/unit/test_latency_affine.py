"""The affine latency model (latency_affine.py): observed = scale x profiled + offset plus an additive tail.
What it must get right that the ratio model does not: stalls of a few milliseconds on short batches are
planned as milliseconds, not as a factor applied to long batches; and, like the ratio model, it reacts to
a step slowdown within a few batches, ignores a spike and trusts a speed-up only slowly."""
from __future__ import annotations

import numpy as np
import pytest

from superserve.scheduler.core import latency_view
from superserve.scheduler.core.latency_affine import AffineLatencyModel
from superserve.scheduler.core.latency_model import LatencyModel, LatencyModelConfig
from tests.conftest import TOY_PROFILE

CFG = LatencyModelConfig(quantile=0.99, window=400)
LEVELS = (2.0, 5.0, 10.0, 20.0, 40.0)
"""Profiled batch latencies (ms) the synthetic host serves, in turn."""


def host(n: int, seed: int, scale: float = 1.0, offset: float = 1.5, stall_p: float = 0.05, stall_ms: float = 15.0,
         sigma: float = 0.03):
    """(profiled, observed) of ``n`` batches on a host that runs forwards at ``scale`` x the profile, pays
    ``offset`` ms per call and stalls ``stall_ms`` (exponential) in a share ``stall_p`` of calls."""
    rng = np.random.default_rng(seed)
    prof = rng.choice(LEVELS, n)
    obs = scale * prof * rng.lognormal(0, sigma, n) + offset + (rng.random(n) < stall_p) * rng.exponential(stall_ms, n)
    return list(zip(prof.tolist(), obs.tolist()))


def feed(m, pairs) -> None:
    for prof, obs in pairs:
        m.observe(8, obs, prof)


def true_quantile(prof: float, q: float, seed: int = 99, **kw) -> float:
    pairs = host(200_000, seed, **kw)
    return float(np.quantile([o for p, o in pairs if p == prof], q))


def test_stalls_are_planned_as_milliseconds_not_as_a_factor():
    """Stalls of ~15 ms on a 2 ms batch are 8x; the ratio model carries that to 40 ms batches."""
    cfg = LatencyModelConfig(quantile=0.99, window=2000)  # a p99 of 400 stalls-laden batches is too noisy to pin
    affine, ratio = AffineLatencyModel(TOY_PROFILE, cfg), LatencyModel((8,), cfg)
    pairs = host(2000, seed=1, scale=0.85)
    feed(affine, pairs)
    feed(ratio, pairs)
    assert affine.slope == pytest.approx(0.85, abs=0.05) and affine.offset_ms == pytest.approx(1.5, abs=0.6)
    for prof in (2.0, 40.0):  # the plan covers the true p99 of both short and long batches, without 2x to spare
        truth = true_quantile(prof, 0.99, scale=0.85)
        assert truth * 0.85 <= affine.plan_ms(prof) <= truth * 1.6, (prof, truth, affine.plan_ms(prof))
    long_truth = true_quantile(40.0, 0.99, scale=0.85)
    assert ratio.factor(8) * 40.0 > 2 * long_truth  # what the ratio model does with the same batches
    assert affine.plan_ms(40.0) < 0.6 * ratio.factor(8) * 40.0


def test_a_step_slowdown_is_planned_for_within_a_few_batches():
    m = AffineLatencyModel(TOY_PROFILE, CFG)
    feed(m, host(400, seed=2, stall_p=0))
    before = m.plan_ms(20.0)
    feed(m, host(6, seed=3, scale=2.0, stall_p=0))  # the host halves its speed
    assert m.plan_ms(20.0) >= 1.7 * before, (before, m.plan_ms(20.0))


def test_a_spike_or_a_short_stall_does_not_move_the_plan():
    m = AffineLatencyModel(TOY_PROFILE, CFG)
    feed(m, host(400, seed=4, stall_p=0))
    before = m.plan_ms(20.0)
    feed(m, [(20.0, 200.0)] * 2)  # the whole machine stalled for two batches (0.5% of the window)
    assert m.plan_ms(20.0) == pytest.approx(before, rel=0.1)
    feed(m, host(20, seed=5, stall_p=0))
    assert m.plan_ms(20.0) == pytest.approx(before, rel=0.1)


def test_a_speed_up_is_trusted_only_once_the_slow_batches_leave_the_window():
    m = AffineLatencyModel(TOY_PROFILE, CFG)
    feed(m, host(400, seed=6, scale=2.0, stall_p=0))
    slow = m.plan_ms(20.0)
    feed(m, host(150, seed=7, stall_p=0))  # fast again, a third of the window
    assert m.plan_ms(20.0) >= 0.9 * slow
    feed(m, host(400, seed=8, stall_p=0))
    assert m.plan_ms(20.0) <= 0.65 * slow


@pytest.mark.parametrize("q", (0.95, 0.99))
def test_the_plan_is_the_residual_quantile_on_a_known_host(q):
    m = AffineLatencyModel(TOY_PROFILE, LatencyModelConfig(quantile=q, window=4000))
    feed(m, host(4000, seed=9))
    for prof in LEVELS:
        truth = true_quantile(prof, q)
        # one tail for every length: multiplicative noise of long batches is planned for short ones too
        assert truth * 0.85 <= m.plan_ms(prof) <= max(truth * 1.25, truth + 3.0), (prof, truth, m.plan_ms(prof))


def test_one_latency_level_is_a_ratio():
    """One subnet at one batch size: no line to fit, the slope is the median ratio and the tail on top."""
    m = AffineLatencyModel(TOY_PROFILE, LatencyModelConfig(quantile=0.9, window=200))
    feed(m, [(10.0, 13.0 + 0.01 * i) for i in np.random.default_rng(12).permutation(200)])
    assert m.offset_ms == 0.0 and m.slope == pytest.approx(1.4, abs=0.02)
    assert 13.0 <= m.plan_ms(10.0) <= 15.5


def test_views_are_the_profile_through_the_plan_and_memoised():
    m = AffineLatencyModel(TOY_PROFILE, CFG)
    assert m.view() is TOY_PROFILE  # nothing seen: the profile as measured
    feed(m, host(400, seed=10))
    v = m.view()
    assert v is m.view()
    for s, t in zip(TOY_PROFILE.subnets, v.subnets):
        for b, ms in s.latency_ms.items():
            assert t.latency_ms[b] == pytest.approx(m.plan_ms(ms))
    m.forget()
    assert m.view() is TOY_PROFILE and m.observations == 0 and m.factor() == 1.0


@pytest.mark.parametrize("kind", latency_view.KINDS)
def test_every_kind_answers_the_life_cycle(kind):
    m = latency_view.build(kind, TOY_PROFILE, CFG)
    feed(m, host(100, seed=11, scale=1.5))
    assert m.view().subnets[0].name == TOY_PROFILE.subnets[0].name
    assert m.factor() >= (1.0 if kind != "off" else 1.0) and m.median_ms(8, 10.0) > 0
    if kind != "off":
        assert m.factor() > 1.2 and m.view() is not TOY_PROFILE
    with pytest.raises(ValueError, match="latency model must be one of"):
        latency_view.build("mean", TOY_PROFILE)
