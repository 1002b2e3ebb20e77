"""`superserve bench --quick` end to end: real servers per policy, one saved trace, results and plots.
A smoke test of the machinery (every request accounted for, the file complete), not of performance."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from superserve.scheduler import paths


@pytest.mark.slow
def test_bench_quick_end_to_end(tmp_path):
    cmd = [sys.executable, "-m", "superserve.scheduler.cli", "bench", "--quick", "--duration", "6", "--rate", "0.3",
           "--out-dir", str(tmp_path), "--name", "smoke", "--slo-ms", "150:0.7,400:0.3",
           "--profile", str(sorted((paths.repo_root() / "profiles").glob("*.json"))[0])]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((tmp_path / "smoke.json").read_text())
    assert res["command"].startswith("superserve bench --quick") and len(res["commit"]) >= 7 and res["hardware"]
    assert res["capacity"]["rps"] > 0
    trace = json.loads((tmp_path / "smoke.trace.json").read_text())
    n = len(trace["arrivals_s"])
    assert n > 20 and res["trace"]["kind"] == "bursty" and res["trace"]["cv2"] == 8
    assert set(res["policies"]) == {"slackfit", "clipper", "triton-fixed:largest"}
    for name, s in res["policies"].items():
        assert s["requests"] == n, name
        ok = round(s["slo_attainment"] * n)
        assert ok + s["late"] + s["inaccurate"] + s["dropped"] + s["rejected"] + s["errors"] == n, (name, s)
        assert s["errors"] == 0, (name, s)
        assert 0 < s["slo_attainment"] <= 1 and 0.8 < s["mean_served_accuracy"] < 0.95, (name, s)
        assert sum(res["series"][name]["sent"]) == n
    # The fixed baseline served only the largest subnet; SlackFit is free to choose.
    assert list(res["policies"]["triton-fixed:largest"]["subnets"]) == [res["capacity"]["subnet"]]
    for what in ("summary", "timeline", "latency_cdf"):
        assert (tmp_path / f"smoke-{what}.png").stat().st_size > 5000
