"""A quick profile of this machine through a real Triton (local_profile.measure_quick), bounded to two
batch sizes and two timed calls per point so it stays fast; loadable by the scheduler."""
from __future__ import annotations

import json

from superserve.scheduler.sidecar import local_profile
from superserve.scheduler.core.profile import Profile


def test_quick_profile_measures_every_pareto_subnet_and_loads(tmp_path, weights_path):
    out = local_profile.measure_quick(tmp_path / "cache" / "cpu-test-2c-abc.json", "cpu-test-2c", reps=2,
                                      batch_sizes=(1, 4))
    raw = json.loads(out.read_text())
    meta = json.loads(weights_path.with_suffix(".json").read_text())
    assert raw["hardware"] == "cpu-test-2c" and raw["supernet"] == meta["sha256"]
    assert raw["quick"]["reps"] == 2 and raw["quick"]["seconds"] > 0
    assert not list(out.parent.glob("*.tmp"))
    prof = Profile.load(out, expect_supernet=meta["sha256"])
    assert prof.batch_sizes == (1, 4) and 1 < len(prof.subnets) <= len(meta["pareto"])
    assert all(0 < s.latency_ms[1] <= 1000 for s in prof.subnets)
