"""The reproducible co-tenant (client/noise.py): its duty cycle and how cores above one are split."""
from __future__ import annotations

import os
import time

import pytest

from superserve.client import noise


def test_cores_above_one_are_split_evenly_over_processes():
    assert noise.shares(0) == []
    assert noise.shares(0.5) == [0.5]
    assert noise.shares(1.5) == [0.75, 0.75]
    assert noise.shares(2.0) == [1.0, 1.0]
    with pytest.raises(ValueError, match="noise must be in"):
        noise.shares((os.cpu_count() or 1) + 0.5)
    with pytest.raises(ValueError, match="noise must be in"):
        noise.shares(-0.1)


def test_each_cycle_spends_its_share_busy():
    c = noise.cycles(0.75, seed=3, n=200)
    assert (c[:, 0] / c.sum(axis=1) == pytest.approx(0.75))
    assert noise.MIN_CYCLE_MS <= c.sum(axis=1).min() and c.sum(axis=1).max() <= noise.MAX_CYCLE_MS


def test_the_cotenant_runs_one_process_per_share_and_stops_with_the_block():
    with noise.cotenant(1.5, seed=1, max_seconds=30) as procs:
        assert len(procs) == 2
        time.sleep(0.2)
        assert all(p.poll() is None for p in procs)
    assert all(p.poll() is not None for p in procs)
