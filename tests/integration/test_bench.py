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
    # Where each answer's time went, on one clock: every answered request of the sidecar's policies is joined with
    # the sidecar's request log (none of the warm-up's), each phase is a duration, and the warm-up is not counted.
    for name in ("slackfit", "clipper"):
        s, ph = res["policies"][name], res["policies"][name]["phases"]
        answered = s["requests"] - s["dropped"] - s["rejected"] - s["errors"]
        assert ph["n"] == answered and ph["late"] == s["late"], (name, ph)
        for phase in ("to_scheduler", "in_scheduler", "encode", "to_client"):
            assert 0 <= ph["all"][phase]["p50"] <= ph["all"][phase]["p99"], (name, phase, ph)
        assert sum(ph["late_blame"].values()) == ph["late"], ph
    assert "phases" not in res["policies"]["triton-fixed:largest"]
    # The fixed baseline served only the largest subnet; SlackFit is free to choose.
    assert list(res["policies"]["triton-fixed:largest"]["subnets"]) == [res["capacity"]["subnet"]]
    for what in ("summary", "timeline", "latency_cdf"):
        assert (tmp_path / f"smoke-{what}.png").stat().st_size > 5000


@pytest.mark.slow
def test_mixed_bench_end_to_end(tmp_path):
    """``bench --models``: both models' shares of one trace through one sidecar and through one Triton of pinned
    models; every request accounted for, per model, each answered by its own model's subnets."""
    cmd = [sys.executable, "-m", "superserve.scheduler.cli", "bench", "--models", "supernet,vit", "--duration", "3",
           "--capacity-rps", "80", "--policies", "slackfit,triton-fixed:smallest", "--slo-ms", "supernet=200,vit=400",
           "--out-dir", str(tmp_path), "--name", "mixed"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((tmp_path / "mixed.json").read_text())
    assert res["command"].startswith("superserve bench --models") and res["models"] == ["supernet", "vit"]
    assert res["slo_ms"] == {"supernet": 200.0, "vit": 400.0} and res["capacity"]["rps"] == 80
    n = res["trace"]["n_arrivals"]
    for policy, s in res["policies"].items():
        per = s["models"]
        assert s["requests"] == n == per["supernet"]["requests"] + per["vit"]["requests"], policy
        assert min(per[m]["requests"] for m in per) >= n // 4, per
        assert s["errors"] == 0 and s["slo_attainment"] > 0, (policy, s)
    from superserve.scheduler.core.profile import Profile

    smallest = {m: Profile.load(paths.repo_root() / f).subnets[0].name for m, f in res["profiles"].items()}
    assert res["policies"]["triton-fixed:smallest"]["fixed_subnets"] == smallest
