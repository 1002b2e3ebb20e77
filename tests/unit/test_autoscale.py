"""The autoscaler policy (scheduler/core/autoscale.py) on a fake clock: a stand-in pool whose served accuracy and
misses follow the demand per worker, one sample per second, workers admitted a few seconds after the target
rises (as a Triton starts)."""
from __future__ import annotations

import pytest

from superserve.scheduler.core.autoscale import (AutoscaleConfig, ModelLoad, Sample, combined_sample, decide,
                                                  hot_reason, is_cold)

BEST = 0.939
CAPACITY_RPS = 300.0
"""One worker serves this many requests per second on the most accurate subnet."""
COST_MS = 1000.0 / CAPACITY_RPS


def pool_second(t_ms: float, target: int, workers: int, load: float, lossy_below: float = 0.8) -> Sample:
    """One second of a pool of ``workers`` under ``load`` (in units of one worker's capacity on the most
    accurate subnet): above ``lossy_below`` per worker SlackFit trades accuracy, above 1.0 it also misses."""
    per_worker = load / max(workers, 1)
    answered = int(round(load * CAPACITY_RPS))
    missed = int(answered * min(0.5, max(0.0, per_worker - 1.0)))
    ok = answered - missed
    acc = BEST - (0.03 if per_worker > 1.0 else 0.015 if per_worker > lossy_below else 0.0)
    return Sample(t_ms, 1000.0, target, workers, ok=ok, missed=missed, accuracy_sum=acc * ok, rows=answered,
                  best_accuracy=BEST, best_cost_ms=COST_MS)


def run(load, seconds: int, cfg: AutoscaleConfig, start: int = 1, admit_s: int = 5, lossy_below=lambda n: 0.8):
    """Drive decide() once a second; workers follow the target ``admit_s`` seconds after it rises (at once when
    it falls: a drained worker leaves rotation first). Returns (targets per second, decisions that changed)."""
    window, target, workers, pending_since = [], start, start, None
    targets, changes = [], []
    for sec in range(1, seconds + 1):
        now = sec * 1000.0
        if workers < target:
            pending_since = pending_since if pending_since is not None else now
            if now - pending_since >= admit_s * 1000:
                workers, pending_since = workers + 1, None
        workers = min(workers, target)
        window.append(pool_second(now, target, workers, load(sec), lossy_below(workers)))
        window = window[-int(cfg.memory_s):]
        d = decide(window, now, cfg)
        if d.target != target:
            changes.append((sec, target, d.target, d.kind, d.reason))
            target = d.target
        targets.append(target)
    return targets, changes


CFG = AutoscaleConfig(min_workers=1, max_workers=4)


def test_surge_adds_workers_until_demand_fits_then_decline_removes_them_one_at_a_time():
    load = lambda s: 0.5 if s < 20 or s >= 120 else 2.0  # noqa: E731 - a step to 2x one worker's capacity and back
    targets, changes = run(load, 260, CFG)
    assert targets[18] == 1, "no worker added before the surge"
    ups = [c for c in changes if c[2] > c[1]]
    assert [c[2] for c in ups] == [3], changes  # 2.0 needs 3 workers to sit below 0.8 each: both asked at once
    assert ups[0][0] <= 20 + CFG.up_hold_s + 1, "workers requested within the up hold"
    assert {c[3] for c in ups} <= {"accuracy", "misses", "demand"}
    downs = [c for c in changes if c[2] < c[1]]
    assert [c[2] for c in downs] == [2, 1], changes
    assert downs[0][0] >= 119 + CFG.down_hold_s, "no step down before the cold hold (from sample 120)"
    assert downs[1][0] - downs[0][0] >= CFG.down_hold_s, "one worker at a time, each after a full hold"
    assert all(c[3] == "idle" for c in downs)
    assert targets[-1] == 1


@pytest.mark.parametrize("load, start", [(0.5, 1), (0.75, 1), (1.2, 2), (1.5, 2), (2.0, 3), (0.0, 1)])
def test_steady_load_never_changes_a_settled_pool(load, start):
    targets, changes = run(lambda s: load, 600, CFG, start=start)
    assert changes == []


def test_steady_load_settles_once_from_too_few_and_from_too_many():
    _, up = run(lambda s: 1.5, 600, CFG, start=1)
    assert [c[2] for c in up] == [2], up
    _, down = run(lambda s: 0.3, 600, CFG, start=4)
    assert [c[2] for c in down] == [3, 2, 1], down


@pytest.mark.parametrize("period_s", [1, 2, 10, 40])
def test_oscillating_load_does_not_flap(period_s):
    load = lambda s: 1.6 if (s // period_s) % 2 else 0.4  # noqa: E731
    targets, changes = run(load, 900, CFG)
    # followed at most once: a step down that had to be undone doubles the down hold past the swing
    assert [c[2] for c in changes] in ([], [2], [2, 1, 2]), changes
    if period_s < CFG.up_hold_s:
        assert changes == [], "bursts shorter than the up hold are SlackFit's to absorb"


def test_a_worker_added_for_lost_accuracy_is_kept_while_the_load_that_cost_it_stays():
    # One worker loses accuracy at 0.55 of its capacity (bursts); two do not. Demand alone would call for one
    # worker again (0.55 < down_demand), but the regret rule keeps the second while the load is the same.
    lossy = lambda n: 0.5 if n == 1 else 0.8  # noqa: E731
    _, changes = run(lambda s: 0.55, 900, CFG, lossy_below=lossy)
    assert [(c[2], c[3]) for c in changes] == [(2, "accuracy")], changes
    # ... and removed once the load has fallen clearly below it
    _, changes = run(lambda s: 0.55 if s < 300 else 0.2, 900, CFG, lossy_below=lossy)
    assert [c[2] for c in changes] == [2, 1], changes


def test_bounds_are_held():
    cfg = AutoscaleConfig(min_workers=2, max_workers=3)
    targets, changes = run(lambda s: 10.0, 200, cfg, start=2)
    assert max(targets) == 3 and [c[2] for c in changes] == [3]
    targets, changes = run(lambda s: 0.0, 400, cfg, start=3)
    assert min(targets) == 2 and [c[2] for c in changes] == [2]
    # a target outside the bounds (e.g. the bounds were changed) is brought back at once
    d = decide([pool_second(1000, 5, 5, 1.0)], 1000, cfg)
    assert (d.target, d.kind) == (3, "bound")


def test_at_the_maximum_the_hot_reason_is_reported():
    cfg = AutoscaleConfig(min_workers=1, max_workers=1)
    window = [pool_second(t * 1000.0, 1, 1, 3.0) for t in range(1, 6)]
    d = decide(window, 5000, cfg)
    assert d.target == 1 and d.kind == "bound" and "maximum" in d.reason


def test_nothing_is_decided_while_a_worker_is_not_in_rotation():
    # the target is 2 but one worker is starting (or being restarted by Ray): hot or not, wait
    window = [pool_second(t * 1000.0, 2, 1, 3.0) for t in range(1, 30)]
    d = decide(window, 29000, CFG)
    assert (d.target, d.direction, d.kind) == (2, "hold", "waiting")
    # and the hold starts afresh once it is admitted
    window += [pool_second(30000, 2, 2, 3.0)]
    assert decide(window, 30000, CFG).direction == "hold"
    window += [pool_second(t * 1000.0, 2, 2, 3.0) for t in range(31, 34)]
    assert decide(window, 33000, CFG).target == 4  # demand 1.5 on 2 workers: 4 to sit below 0.8 each


def test_an_accuracy_shortfall_at_low_demand_neither_adds_nor_keeps_workers():
    # A slow worker (or a latency model still pessimistic after a surge) costs accuracy at any load; below
    # accuracy_min_demand another worker would not bring it back, so it is not hot, and the pool may shrink.
    def slow_second(t_ms, target, workers, load):
        s = pool_second(t_ms, target, workers, load)
        return Sample(s.t_ms, s.interval_ms, target, workers, ok=s.ok, missed=s.missed,
                      accuracy_sum=(BEST - 0.02) * s.ok, rows=s.rows, best_accuracy=BEST, best_cost_ms=COST_MS)
    low = slow_second(1000, 1, 1, 0.3)
    assert hot_reason(low, CFG) is None
    assert hot_reason(slow_second(1000, 1, 1, 0.6), CFG)[0] == "accuracy"
    window = [slow_second(t * 1000.0, 4, 4, 0.3) for t in range(1, 40)]
    assert all(is_cold(s, CFG) for s in window)
    assert decide(window, 39000, CFG).target == 3
    with pytest.raises(ValueError, match="accuracy_min_demand"):
        AutoscaleConfig(accuracy_min_demand=-1)


def test_signals():
    s = pool_second(1000, 1, 1, 0.5)
    assert s.demand == pytest.approx(0.5, abs=0.01) and hot_reason(s, CFG) is None
    assert hot_reason(pool_second(1000, 1, 1, 0.9), CFG)[0] == "accuracy"  # lossy above 0.8
    assert hot_reason(pool_second(1000, 1, 1, 0.9, lossy_below=1.0), CFG)[0] == "demand"
    missing = Sample(1000, 1000, 1, 1, ok=90, missed=10, accuracy_sum=90 * BEST, best_accuracy=BEST, best_cost_ms=0.1)
    assert hot_reason(missing, CFG)[0] == "misses"
    few = Sample(1000, 1000, 2, 2, ok=5, accuracy_sum=5 * 0.5, best_accuracy=BEST, best_cost_ms=0.1)
    assert hot_reason(few, CFG) is None and is_cold(few, CFG), "5 requests say nothing about accuracy"
    assert not is_cold(pool_second(1000, 1, 1, 0.1), CFG), "one worker is never cold: nothing to remove"
    assert decide([], 0, CFG).target == CFG.min_workers


@pytest.mark.parametrize("kwargs", [dict(min_workers=0), dict(min_workers=3, max_workers=2),
                                    dict(down_demand=0.9, up_demand=0.8), dict(up_hold_s=0),
                                    dict(regret_fraction=1.5), dict(max_miss_ratio=1.0)])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        AutoscaleConfig(**kwargs)


# -- several models on the same workers (combined_sample) ---------------------------------------------------

VIT_BEST, VIT_COST_MS = 0.90, 2 * COST_MS
"""A second model: less accurate at its best, twice the cost per row."""


def two_model_second(t_ms: float, target: int, workers: int, cnn_rps: float, vit_rps: float,
                     cnn_loss: float = 0.0, vit_loss: float = 0.0):
    """One second of a pool serving both models, each answered in full, each ``*_loss`` below its own best."""
    cnn, vit = int(cnn_rps), int(vit_rps)
    acc = cnn * (BEST - cnn_loss) + vit * (VIT_BEST - vit_loss)
    return combined_sample(t_ms, 1000.0, target, workers, missed=0, accuracy_sum=acc,
                           loads=[ModelLoad(cnn, cnn, BEST, COST_MS), ModelLoad(vit, vit, VIT_BEST, VIT_COST_MS)])


def drive(second, seconds: int, cfg: AutoscaleConfig, start: int = 1, admit_s: int = 3):
    """decide() once a second on ``second(now, target, workers)``; workers follow a rise after ``admit_s``."""
    window, target, workers, since, targets = [], start, start, None, []
    for sec in range(1, seconds + 1):
        now = sec * 1000.0
        if workers < target:
            since = now if since is None else since
            if now - since >= admit_s * 1000:
                workers, since = workers + 1, None
        workers = min(workers, target)
        window.append(second(now, target, workers))
        target = decide(window, now, cfg).target
        targets.append(target)
    return targets


def test_one_model_combined_is_that_models_sample():
    loads = [ModelLoad(ok=90, rows=120, best_accuracy=BEST, best_cost_ms=COST_MS)]
    s = combined_sample(5000, 1000, 2, 2, missed=10, accuracy_sum=90 * 0.93, loads=loads)
    assert s == Sample(5000, 1000, 2, 2, ok=90, missed=10, accuracy_sum=90 * 0.93, rows=120, best_accuracy=BEST,
                       best_cost_ms=COST_MS)
    with pytest.raises(ValueError, match="at least one model"):
        combined_sample(5000, 1000, 2, 2, missed=0, accuracy_sum=0.0, loads=[])


def test_demand_of_several_models_adds_up():
    # each model alone is 0.5 of one worker's capacity on its best subnet (150 rows at 1/300 s, 75 at 2/300 s):
    # together the one worker is full
    s = two_model_second(1000, 1, 1, cnn_rps=150, vit_rps=75)
    assert s.demand == pytest.approx(1.0)
    assert s.ok == 225 and s.rows == 225
    assert hot_reason(s, AutoscaleConfig())[0] == "demand"
    # neither model alone would ask for a worker
    for rps in ((150, 0), (0, 75)):
        assert hot_reason(two_model_second(1000, 1, 1, *rps), AutoscaleConfig()) is None


def test_the_accuracy_gap_is_each_request_against_its_own_models_best():
    cfg = AutoscaleConfig(up_demand=0.95)
    # both at their own best: no gap, although the transformer's best is far below the CNN's
    s = two_model_second(1000, 1, 1, cnn_rps=150, vit_rps=60)
    assert s.accuracy(cfg.min_requests) == pytest.approx((150 * BEST + 60 * VIT_BEST) / 210)
    assert s.best_accuracy - s.accuracy(cfg.min_requests) == pytest.approx(0.0)
    assert hot_reason(s, cfg) is None
    # the transformer 0.03 below its best on 60 of 210 requests: a mean shortfall of 0.0086 < 0.01
    assert hot_reason(two_model_second(1000, 1, 1, 150, 60, vit_loss=0.03), cfg) is None
    # both models 0.015 below their own best: hot for accuracy
    assert hot_reason(two_model_second(1000, 1, 1, 150, 60, 0.015, 0.015), cfg)[0] == "accuracy"


def test_two_models_scale_up_on_their_joint_surge_and_back_down_after_it():
    """Fake clock: each model at 0.25 of a worker (together 0.5); then each surges to 0.7 (together 1.4, the CNN
    losing accuracy as SlackFit trades it); then back. The pool grows to 2 within the up hold plus a start, and
    after the surge returns to 1 after the down hold; it never flaps."""
    cfg = AutoscaleConfig()

    def second(now, target, workers):
        sec = now / 1000
        share = 0.7 if 10 < sec <= 60 else 0.25  # of one worker's capacity, per model
        per_worker = 2 * share / workers
        loss = 0.02 if per_worker > cfg.up_demand else 0.0
        return two_model_second(now, target, workers, share * CAPACITY_RPS, share * CAPACITY_RPS / 2, cnn_loss=loss)

    targets = drive(second, 130, cfg)
    assert targets[:10] == [1] * 10, "0.5 of one worker: nothing to add"
    first_up = targets.index(2)
    assert 10 + cfg.up_hold_s <= first_up + 1 <= 10 + cfg.up_hold_s + 2, targets
    assert max(targets) == 2, "1.4 on two workers is 0.7 each: no third"
    assert targets[59] == 2, "the pool holds through the surge"
    assert targets[-1] == 1, "the surge over, one worker removed"
    changes = [b - a for a, b in zip(targets, targets[1:]) if a != b]
    assert changes == [1, -1], f"no flapping: {changes}"
