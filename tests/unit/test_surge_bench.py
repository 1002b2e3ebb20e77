"""bench-surge's pure parts: the step trace, worker-seconds, accuracy recovery, the arms' serve options."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from superserve.client import surge_bench
from superserve.client.surge_bench import SurgeConfig, arm_args, recovery_s, step_arrivals, worker_seconds


def test_step_arrivals_follow_the_three_rates():
    a = step_arrivals(50.0, 200.0, 10.0, 20.0, 10.0, seed=0)
    assert np.all(np.diff(a) >= 0) and a[0] >= 0 and a[-1] < 40.0
    counts = [np.sum((a >= lo) & (a < hi)) / (hi - lo) for lo, hi in ((0, 10), (10, 30), (30, 40))]
    assert counts[0] == pytest.approx(50, rel=0.2) and counts[1] == pytest.approx(200, rel=0.1)
    assert counts[2] == pytest.approx(50, rel=0.2)
    assert np.array_equal(a, step_arrivals(50.0, 200.0, 10.0, 20.0, 10.0, seed=0))  # seeded


def test_worker_seconds_count_starting_serving_and_draining_workers():
    # (t, target, in pool, draining): 1 worker for 10 s, target 3 while 1 serves (2 starting) for 5 s, 3 serving
    # for 5 s, then 2 serving and 1 draining for 5 s
    samples = [(0.0, 1, 1, 0), (10.0, 3, 1, 0), (15.0, 3, 3, 0), (20.0, 2, 2, 1)]
    assert worker_seconds(samples, 0.0, 25.0) == 10 + 15 + 15 + 15
    assert worker_seconds(samples, 12.0, 18.0) == 3 * 6


def test_recovery_is_the_time_from_which_accuracy_stays_back():
    acc = [0.92] * 10 + [0.86] * 8 + [0.915] * 12  # surge from 10 s to 30 s
    assert recovery_s(acc, 0.92, 10, 30, 0.01) == 8.0
    dip = acc[:]
    dip[20] = 0.80  # a relapse in the surge: recovered only once the 5 s windows no longer hold it
    assert recovery_s(dip, 0.92, 10, 30, 0.01) == 11.0
    assert recovery_s([0.92] * 10 + [0.86] * 20, 0.92, 10, 30, 0.01) is None
    assert recovery_s(acc, None, 10, 30, 0.01) is None


def test_arms_and_the_peak_pool():
    cfg = SurgeConfig()
    assert cfg.peak_workers == 3  # 2x one worker at the autoscaler's 0.8 demand
    assert arm_args("slackfit-1", cfg, "b") == ["--workers", "1"]
    assert arm_args("slackfit-peak", cfg, "b") == ["--workers", "3"]
    assert "--autoscale" in arm_args("slackfit-autoscale", cfg, "b")
    fixed = arm_args("fixed-autoscale", cfg, "best")
    assert fixed[:4] == ["--policy", "fixed", "--subnet", "best"] and "--autoscale" in fixed


@pytest.mark.parametrize("kwargs, match", [({"arms": ("nope",)}, "arms must be among"),
                                           ({"surge_x": 0.2}, "base_x < surge_x"),
                                           ({"max_workers": 2}, "peak pool needs 3"),
                                           ({"pre_s": 0}, "must be > 0")])
def test_config_names_the_bad_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SurgeConfig(**kwargs)


def test_the_command_line_registers_bench_surge():
    from superserve.scheduler.cli import build_parser

    a = build_parser().parse_args(["bench-surge", "--quick"])
    cfg = surge_bench.config_from_args(a)
    assert cfg.quick and cfg.arms == surge_bench.QUICK_ARMS and cfg.name == "surge-quick"
    assert cfg.duration_s < 30
    full = surge_bench.config_from_args(build_parser().parse_args(["bench-surge", "--arms", "slackfit-1"]))
    assert full.arms == ("slackfit-1",) and full.name == "surge"
    assert isinstance(a, argparse.Namespace)
