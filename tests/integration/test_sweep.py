"""`superserve bench-sweep --quick` end to end against real Tritons and the real sidecar: one point, two
trace seeds, SlackFit then Triton's batcher down the Pareto subnets until the frontier rule stops; then
`superserve report` on the files. A smoke test of the machinery (files complete, every request accounted
for, the ratios computed, resumable), not of performance."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from superserve.client import frontier
from superserve.scheduler import paths


def cli(*args, timeout=400):
    return subprocess.run([sys.executable, "-m", "superserve.scheduler.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_sweep_quick_then_report(tmp_path):
    out = tmp_path / "sweep"
    profile = str(sorted((paths.repo_root() / "profiles").glob("*.json"))[0])
    t0 = time.monotonic()
    p = cli("bench-sweep", "--quick", "--out-dir", str(out), "--profile", profile)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-3000:]
    assert "sweep plan (star): 2 cells" in p.stdout and "estimated time" in p.stdout and "[sweep 2/2]" in p.stdout
    print(f"bench-sweep --quick took {took:.0f} s")
    assert json.loads((out / "capacity.json").read_text())["rps"] > 0
    cells = sorted(f for f in out.glob("cv2-r0.3-slo20x-n0-s*.json") if not f.name.endswith(".trace.json"))
    assert [c.name for c in cells] == ["cv2-r0.3-slo20x-n0-s1.json", "cv2-r0.3-slo20x-n0-s2.json"]
    pareto = [s["name"] for s in reversed(json.loads(open(profile).read())["subnets"])]
    for c in cells:
        r = json.loads(c.read_text())
        assert r["command"].startswith("superserve bench --policies slackfit,triton-fixed:pareto") and r["commit"]
        assert r["sweep"]["point"] == ["cv2", 0.3, "20x", 0.0]
        assert r["sweep"]["command"].startswith("superserve bench-sweep")
        assert float(r["slo_ms"]) == round(20 * r["sweep"]["largest_b1_ms"], 1)
        fr = r["frontier"]
        # most accurate first, every Pareto subnet either run or skipped by the rule, none twice
        assert fr["run"] + fr["skipped"] == [f"triton-fixed:{s}" for s in pareto] and fr["run"]
        assert set(r["policies"]) == {"slackfit", *fr["run"]}
        n = r["trace"]["n_arrivals"]
        for name, s in r["policies"].items():
            assert s["requests"] == n, name
            assert round(s["slo_attainment"] * n) + s["late"] + s["inaccurate"] + s["dropped"] + s["rejected"] \
                + s["errors"] == n, (name, s)
        for f in fr["run"]:
            assert list(r["policies"][f]["subnets"]) in ([f.split(":")[1]], []), f  # only its pinned subnet
        if fr["skipped"]:  # the rule held where it stopped
            pts = frontier.fixed_points(r)
            done = [next(q for q in pts if q.name == f) for f in fr["run"]]
            sf = r["policies"]["slackfit"]
            assert frontier.frontier_done(done, [frontier.Point("slackfit", sf["mean_served_accuracy"],
                                                                sf["slo_attainment"])])
        h = r["headline"]["slackfit"]
        assert h["fixed_runs"] == len(fr["run"])
        assert h["attainment_ratio"] is not None and h["attainment_ratio"] > 0  # a fixed subnet is as accurate
        assert (h["gain_at_target"] is None) == ("gain_at_target" in h.get("why", {}))
        assert (out / f"{c.stem}-frontier.png").stat().st_size > 5000
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["points"]
    assert row["policy"] == "slackfit" and row["seeds"] == [1, 2] and row["verdict"] in ("wins", "ties", "loses")
    assert row["metrics"]["attainment"]["n"] == 2 and row["metrics"]["attainment"]["sd"] is not None
    assert row["metrics"]["attainment_ratio"]["n"] == 2

    # resumable: both cells are done, a rerun plans nothing
    p = cli("bench-sweep", "--quick", "--out-dir", str(out), "--profile", profile, "--dry-run", timeout=60)
    assert p.returncode == 0 and "2 already done" in p.stdout and "for the 0 cells" in p.stdout, p.stdout

    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- sweep-summary:begin -->\nstale\n<!-- sweep-summary:end -->\ntail\n")
    p = cli("report", "--results", str(out), "--readme", str(readme), timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    body = readme.read_text()
    assert "stale" not in body and "| cv2 | 0.3x | 20x" in body and body.endswith("tail\n")
    for png in ("frontier_per_load", "ratio_vs_load", "ratio_vs_burstiness", "ratio_vs_slo_noise"):
        assert (out / f"{png}.png").stat().st_size > 5000, png
