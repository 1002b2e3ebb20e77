"""`superserve bench-surge --quick` end to end: two real `serve` processes (SlackFit on one quota'd worker, and with
--autoscale), one step trace, the results file and plot. Asserts structure and that every request sent got one
answer, counted once by the client and once by the scheduler; not timings (a 2-core machine shared with others
decides those)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from superserve.client.surge_bench import QUICK_ARMS


@pytest.mark.slow
def test_bench_surge_quick_end_to_end(tmp_path):
    cmd = [sys.executable, "-m", "superserve.scheduler.cli", "bench-surge", "--quick", "--out-dir", str(tmp_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((tmp_path / "surge-quick.json").read_text())
    assert res["command"].startswith("superserve bench-surge --quick") and res["commit"] and res["hardware"]
    assert res["config"]["isolation"] in ("quota", "pin") and res["capacity"]["rps"] > 0
    n = res["trace"]["n_arrivals"]
    duration = res["config"]["duration_s"]
    assert n == sum(res["arrivals_per_s"]) > 100
    assert list(res["arms"]) == list(QUICK_ARMS)
    for arm, r in res["arms"].items():
        acct = r["accounting"]
        assert acct["sent"] == n and acct["all_accounted"], (arm, acct)
        assert acct["errors"] == 0, (arm, acct)  # every request answered: in time, late, dropped or refused
        assert r["scheduler_answered"] == n, (arm, r["scheduler_view"])  # and counted once by the scheduler
        assert sum(r["series"]["sent"]) == n and len(r["series"]["attainment"]) == int(duration)
        assert set(r["phases"]) == {"pre", "surge", "surge_last_third", "post"}
        assert sum(r["phases"][ph]["requests"] for ph in ("pre", "surge", "post")) == n
        w = r["workers"]
        assert len(w["t"]) >= duration and min(w["in_pool"]) >= 1, (arm, w)
        assert r["worker_seconds"] >= duration * 0.95  # at least one worker all along
    assert max(res["arms"]["slackfit-1"]["workers"]["target"]) == 1
    assert res["claim"]["worker_seconds_autoscaled"] == res["arms"]["slackfit-autoscale"]["worker_seconds"]
    assert (tmp_path / "surge-quick.png").stat().st_size > 5000
