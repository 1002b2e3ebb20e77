"""Triton workers as Ray actors on a local two-node Ray cluster (ray_scenario.py), run inside a network
namespace whose only interface is loopback: Ray binds the machine's interface address even when told to use
127.0.0.1, and no traffic of a test may leave loopback. Skipped, with the reason, only where Ray is not
installed (the extra superserve-triton[ray]), no namespace can be made, or Ray cannot start in it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_ray_cluster_scenario_in_a_loopback_namespace(tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("Ray is not installed (pip install 'superserve-triton[ray]'; scripts/setup.sh installs it)")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace (unshare -n): {probe.stderr.strip()[:200]}")
    inner = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
             str(ROOT / "tests/integration/ray_scenario.py"), "--basetemp", str(tmp_path / "inner")]
    env = dict(os.environ, SUPERSERVE_LOOPBACK_NETNS="1")
    r = subprocess.run(["unshare", "-n", "bash", "-c", 'ip link set lo up && exec "$@"', "bash", *inner],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=480)
    out = r.stdout + r.stderr
    if r.returncode == 0 and " skipped" in out and " passed" not in out:
        why = next((line for line in out.splitlines() if "SKIPPED" in line), out[-300:])
        pytest.skip("inside the namespace: " + why)
    assert r.returncode == 0, out[-6000:]
    assert "2 passed" in out, out[-3000:]
