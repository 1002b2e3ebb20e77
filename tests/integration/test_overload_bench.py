"""`superserve bench-overload --compare` end to end for a few seconds at small rates: the file's structure and
every request accounted for, at the client and by the scheduler, in both arms (no timing asserted here: the
numbers are in results/)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_bench_overload_compare_writes_both_arms_and_accounts_for_every_request(tmp_path, weights_path):
    r = subprocess.run([sys.executable, "-m", "superserve.scheduler.cli", "bench-overload", "--compare",
                        "--capacity-rps", "30", "--overload-s", "3", "--recover-s", "2", "--warmup", "10",
                        "--scrape-s", "0.25", "--name", "overload-smoke", "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "overload-smoke.json").read_text())
    assert (tmp_path / "overload-smoke.png").stat().st_size > 0
    assert res["command"].startswith("superserve bench-overload") and res["commit"] and res["hardware"]
    assert res["capacity"]["rps"] == 30 and res["trace"]["overload_rps"] == 90
    assert list(res["arms"]) == ["shedding", "shedding-measured", "no-shedding"]
    assert res["arms"]["shedding-measured"]["serve_args"] == ["--shed-drain", "measured"]
    assert res["arms"]["no-shedding"]["serve_args"] == ["--no-admission-shedding"]
    n = res["trace"]["requests"]
    for arm in res["arms"].values():
        hot, cool, total = arm["overload"], arm["recover"], arm["all"]
        assert hot["sent"] + cool["sent"] == total["sent"] == n > 200
        assert hot["accounted"] and cool["accounted"] and total["accounted"]
        outcomes = sum(total[k] for k in ("ok", "late", "inaccurate", "dropped", "rejected", "error"))
        assert outcomes == n and total["error"] == 0
        assert sum(arm["scheduler_view"].values()) == n  # the sidecar counted each request once
        assert arm["scheduler_shed"] <= arm["scheduler_view"]["overloaded"] == total["rejected"]
        assert sum(arm["per_second"]["sent"]) == n and len(arm["per_second"]["sent"]) == 5
        assert len(arm["samples"]) >= 10 and all(s["sidecar_rss_mib"] > 0 for s in arm["samples"])
        assert arm["sidecar_rss_mib"]["start"] > 0 and len(arm["load_avg"]["start"]) == 3
        assert "recovery_s" in arm
        w = arm["where_time_went"]
        assert w["send_lag_ms_p99"] is not None and w["sidecar_metrics_rtt_ms_p50"] > 0
    assert res["arms"]["no-shedding"]["scheduler_shed"] == 0
