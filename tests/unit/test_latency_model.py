"""The latency model (latency_model.py): quantiles of observed/profiled batch latency, fast to react
to a slowdown, deaf to one spike, slow to trust a speed-up, per batch size with a global fallback."""
from __future__ import annotations

import math

import numpy as np
import pytest

from superserve.scheduler.core.latency_model import LatencyModel, LatencyModelConfig, ScaledProfiles
from tests.conftest import TOY_PROFILE, committed_profile

BATCHES = (1, 2, 4, 8, 16, 32, 64)


def feed(model: LatencyModel, ratios, rows: int = 8, profiled: float = 10.0) -> None:
    for r in ratios:
        model.observe(rows, r * profiled, profiled)


def steady(n: int, level: float = 1.0, seed: int = 0, sigma: float = 0.05) -> np.ndarray:
    return level * np.random.default_rng(seed).lognormal(0.0, sigma, n)


def test_a_step_slowdown_is_planned_for_within_a_few_batches():
    m = LatencyModel(BATCHES, LatencyModelConfig(quantile=0.99, window=400))
    feed(m, steady(400))
    before = m.factor(8)
    assert 1.0 < before < 1.25
    feed(m, steady(8, level=2.0, seed=1))  # the machine halves its speed
    assert m.factor(8) >= 1.8, m.factor(8)  # planned for after 8 slow batches, 2% of the window
    assert m.factors()[8] >= 1.8


def test_a_single_spike_does_not_move_the_plan():
    m = LatencyModel(BATCHES, LatencyModelConfig(quantile=0.99, window=400))
    feed(m, steady(400))
    before = m.factor(8)
    feed(m, [6.0])
    feed(m, steady(20, seed=2))
    assert m.factor(8) == pytest.approx(before, rel=0.05)


def test_a_speed_up_is_trusted_only_once_the_slow_batches_leave_the_window():
    m = LatencyModel(BATCHES, LatencyModelConfig(quantile=0.99, window=400))
    feed(m, steady(400, level=2.0))
    feed(m, steady(300, level=1.0, seed=3))  # three quarters of the window fast again
    assert m.factor(8) >= 1.8  # still planning for the slow machine
    feed(m, steady(400, level=1.0, seed=4))
    assert m.factor(8) < 1.25  # all slow batches gone: back to the fast plan


@pytest.mark.slow  # 10,000 observations through the online model (~5-10 s)
def test_quantile_matches_a_known_distribution():
    sigma = 0.3
    for q, z in ((0.99, 2.3263), (0.95, 1.6449)):
        # the long window alone
        exact = LatencyModel(BATCHES, LatencyModelConfig(quantile=q, window=5000, short=2, short_rank=1))
        feed(exact, steady(5000, sigma=sigma, seed=5))
        assert exact.factor(8) == pytest.approx(float(np.exp(z * sigma)), rel=0.05), q
        assert exact.median == pytest.approx(1.0, rel=0.03)
        planned = LatencyModel(BATCHES, LatencyModelConfig(quantile=q, window=5000))  # with the recent floor
        feed(planned, steady(5000, sigma=sigma, seed=5))
        assert float(np.exp(z * sigma)) * 0.95 <= planned.factor(8) <= float(np.exp(z * sigma)) * 1.2, q


def test_batch_sizes_keep_their_own_curve_and_fall_back_to_all_observations():
    m = LatencyModel(BATCHES, LatencyModelConfig(quantile=0.9, window=400, min_samples=30))
    feed(m, steady(100, level=2.0), rows=1)  # fixed call costs weigh on single requests
    feed(m, steady(100, level=1.0, seed=6), rows=64)
    assert m.factor(1) > 1.8 and m.factor(64) < 1.2
    assert m.factor(3) == m.factor(4)  # 3 rows are planned as the profile's batch 4 (Profile.at)
    assert 1.0 < m.factor(16) <= m.factor(1)  # never observed: the quantile over all batches


def test_factors_are_rounded_up_and_scaled_profiles_are_shared():
    m = LatencyModel(BATCHES, LatencyModelConfig(quantile=0.99, window=50, min_samples=10, step=0.05))
    feed(m, [1.21] * 50)
    assert m.factors()[8] == 1.25  # rounded up, never down
    prof = committed_profile()
    views = ScaledProfiles(prof)
    a, b = views.get(m.factors()), views.get(dict(m.factors()))
    assert a is b
    s = prof.subnets[0]
    assert a.get(s.name).latency_ms[8] == pytest.approx(s.latency_ms[8] * 1.25)


def test_bad_config_is_refused_with_the_values():
    with pytest.raises(ValueError, match="quantile"):
        LatencyModelConfig(quantile=1.0)
    with pytest.raises(ValueError, match="window"):
        LatencyModelConfig(window=5)


def test_the_simulator_plans_with_the_same_model_through_a_slowdown():
    """A machine that runs 2.5x slower from t = 3 s, with batch-to-batch variance: planning with the
    profile misses; planning with the model keeps attainment."""
    from superserve.scheduler.policies import SlackFit
    from superserve.scheduler.offline.sim import SimConfig, SimRequest, simulate
    from superserve.scheduler.core.summary import summarize

    arrivals = np.cumsum(np.random.default_rng(7).exponential(1000 / 150, 1500))  # 150 req/s, 10 s
    reqs = [SimRequest(float(t), 60.0) for t in arrivals]
    machine = dict(slowdown=lambda now: 1.0 if now < 3000 else 2.5, jitter_sigma=0.15, seed=1)
    blind = summarize(simulate(SlackFit(), TOY_PROFILE, reqs, cfg=SimConfig(**machine)))
    model = summarize(simulate(SlackFit(), TOY_PROFILE, reqs,
                               cfg=SimConfig(latency=LatencyModelConfig(quantile=0.99), **machine)))
    assert blind["slo_attainment"] < 0.9, blind
    assert model["slo_attainment"] >= 0.98, model


def test_forget_returns_to_the_profile():
    m = LatencyModel(BATCHES, LatencyModelConfig(quantile=0.99, window=50, min_samples=10))
    feed(m, steady(50, level=5.0))
    assert m.factor(8) > 4
    m.forget()
    assert m.factors() == {b: 1.0 for b in BATCHES} and m.median == 1.0
    feed(m, steady(10, level=2.0))
    assert m.factor(8) >= 1.9


def test_two_stalled_batches_do_not_raise_the_plan_four_slow_ones_do():
    m = LatencyModel(BATCHES, LatencyModelConfig(quantile=0.99, window=400, short=50, short_rank=4))
    feed(m, steady(400))
    before = m.factor(8)
    feed(m, [5.0, 5.0])  # the whole machine stalled once, for two batches
    feed(m, steady(10, seed=10))
    assert m.factor(8) == pytest.approx(before, rel=0.05)
    feed(m, steady(4, level=3.0, seed=11))  # four slow batches in a row: a new regime
    assert m.factor(8) >= 2.8


def test_the_sorted_windows_give_the_quantiles_of_a_full_sort():
    """The windows are kept sorted incrementally; every read must equal sorting the window's values afresh
    (ties, evictions of duplicates and the short window's rank included)."""
    cfg = LatencyModelConfig(window=40, short=12, min_samples=5)
    m = LatencyModel((1, 4, 16), cfg)
    rng = np.random.default_rng(7)
    history: dict[int, list[float]] = {1: [], 4: [], 16: []}
    everything: list[float] = []
    for _ in range(600):
        rows = int(rng.choice([1, 3, 4, 9, 16]))
        ratio = float(np.round(rng.lognormal(0.2, 0.4), 1))  # rounded: many ties
        m.observe(rows, ratio, 1.0)
        b = m.bucket(rows)
        ratio = min(cfg.hi, max(cfg.lo, ratio))
        history[b].append(ratio)
        everything.append(ratio)
        own, allw = sorted(history[b][-cfg.window:]), sorted(everything[-cfg.window:])
        assert m.median == allw[(len(allw) - 1) // 2]
        if len(own) >= cfg.min_samples:
            short = sorted(history[b][-cfg.short:])
            i = min(len(short) - cfg.short_rank, math.ceil(cfg.quantile * (len(short) - 1)))
            want = max(own[min(len(own) - 1, math.ceil(cfg.quantile * (len(own) - 1)))], short[i])
            assert m.factor(b) == want
            assert m.median_factor(b) == own[(len(own) - 1) // 2]


def test_a_steady_host_keeps_handing_policies_the_same_view_object():
    """Policies memoise their tables per profile object (slackfit.SlackFit.table): the quantile model must hand
    out the same object while its quantised factors and median stay put, not a new one per batch."""
    from superserve.scheduler.core.latency_view import PerBatchQuantile
    prof = committed_profile()
    v = PerBatchQuantile(prof, LatencyModelConfig(window=50, min_samples=10))
    s = prof.subnets[0]
    ratios = steady(200, level=1.3, seed=3)
    seen = []
    for r in ratios:
        v.observe(8, r * s.latency_ms[8], s.latency_ms[8])
        seen.append(v.view())
    assert seen[-1].likely is not seen[-1]  # the planning view carries a distinct median view
    assert len({id(p) for p in seen[100:]}) <= 10  # a new object per batch before (100)
