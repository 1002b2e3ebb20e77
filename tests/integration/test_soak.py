"""`superserve bench-soak` end to end, for a few seconds (the real run is 30 minutes and not in CI)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_bench_soak_samples_every_process_and_counts_every_request(tmp_path, weights_path):
    r = subprocess.run([sys.executable, "-m", "superserve.scheduler.cli", "bench-soak", "--duration", "4",
                        "--rps", "40", "--sample-s", "1", "--slo-ms", "2000", "--name", "soak-smoke",
                        "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "soak-smoke.json").read_text())
    s = res["summary"]
    outcomes = sum(s[k] for k in ("ok", "late", "dropped", "rejected", "invalid", "error"))
    assert s["requests"] == outcomes > 100 and s["ok"] >= 0.9 * s["requests"] and s["error"] == 0
    assert sum(res["scheduler_view"].values()) == s["requests"]  # the sidecar counted each request once
    procs = res["processes"]
    assert {"sidecar", "tritonserver", "stub-0"} <= set(procs)
    for p in procs.values():
        assert p["start"]["rss_mib"] > 0 and p["end"]["fds"] > 0 and p["end"]["threads"] > 0
    assert len(res["samples"]) >= 4 and res["serve_exit_code"] == 0
    assert res["config"]["duration_s"] == 4 and res["command"].startswith("superserve bench-soak")
