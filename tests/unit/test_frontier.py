"""The fixed frontier and the headline ratios (client/frontier.py) on hand-made results with known answers,
the stopping rule for the frontier runs, the sweep's plan, and the report's table and verdicts."""
from __future__ import annotations

import json

import pytest

from superserve.client import frontier, sweep, sweep_report
from superserve.client.frontier import Point


def fixed(acc, att, real=None):
    return {"slo_attainment": att, "mean_served_accuracy": acc if att else None, "fixed_accuracy": acc,
            "real_accuracy": real if real is not None else round(acc * att, 4)}


def result(fixed_pts, slackfit=None, seed=1, point=None):
    pols = {f"triton-fixed:s{int(a * 1000)}": fixed(a, t) for a, t in fixed_pts}
    if slackfit:
        att, acc, real = slackfit
        pols["slackfit"] = {"slo_attainment": att, "mean_served_accuracy": acc, "real_accuracy": real}
    r = {"policies": pols, "pareto_accuracy_range": [0.80, 0.93], "trace": {"seed": seed, "kind": "bursty", "cv2": 8,
                                                                           "rate_rps": 100.0, "duration_s": 10},
         "rate_x": 1.0, "slo_ms": "100", "commit": "abc", "hardware": "h", "noise": {"fraction_of_core": 0.0}}
    if point:
        r["sweep"] = {"point": list(point)}
    return r


# Fixed subnets: the most accurate collapse, the less accurate keep up. 0.90 is dominated by 0.91.
FIXED = [(0.93, 0.50), (0.92, 0.80), (0.91, 0.995), (0.90, 0.99), (0.88, 1.0)]


def test_envelope_drops_dominated_points_and_orders_by_accuracy():
    env = frontier.envelope([Point(f"s{a}", a, t) for a, t in FIXED])
    assert [(p.accuracy, p.attainment) for p in env] == [(0.88, 1.0), (0.91, 0.995), (0.92, 0.80), (0.93, 0.50)]


def test_interpolation_both_ways():
    env = frontier.envelope([Point(f"s{a}", a, t) for a, t in FIXED])
    assert frontier.attainment_at(env, 0.915) == pytest.approx((0.995 + 0.80) / 2)
    assert frontier.attainment_at(env, 0.85) == 1.0  # below the least accurate: the best attainment
    assert frontier.attainment_at(env, 0.94) is None  # no fixed subnet that accurate
    assert frontier.accuracy_at(env, 0.65) == pytest.approx(0.925)
    assert frontier.accuracy_at(env, 0.2) == 0.93
    assert frontier.accuracy_at(env, 1.0) == 0.88
    assert frontier.accuracy_at([Point("a", 0.9, 0.9)], 0.95) is None


def test_headline_numbers_against_the_frontier():
    h = frontier.headline(result(FIXED, slackfit=(0.995, 0.915, 0.90)), "slackfit")
    assert h["best_fixed_at_target"] == "triton-fixed:s910"  # the most accurate reaching 0.99, not 0.92 nor 0.88
    assert h["gain_at_target"] == pytest.approx(0.005)
    assert h["real_gain_at_target"] == pytest.approx(0.90 - round(0.91 * 0.995, 4), abs=1e-4)
    assert h["gain_at_target_share_of_range"] == pytest.approx(0.005 / 0.13, abs=1e-4)
    assert h["attainment_ratio"] == pytest.approx(0.995 / 0.8975, abs=1e-4)
    assert h["gain_at_equal_attainment"] == pytest.approx(0.005, abs=1e-6)  # the frontier is at 0.91 for 0.995
    assert "why" not in h


def test_headline_undefined_numbers_say_why():
    h = frontier.headline(result(FIXED, slackfit=(0.97, 0.925, 0.89)), "slackfit")
    assert h["gain_at_target"] is None and "0.97" in h["why"]["gain_at_target"]
    assert h["attainment_ratio"] == pytest.approx(0.97 / 0.65, abs=1e-4)
    h = frontier.headline(result([(0.93, 0.0), (0.92, 0.5)], slackfit=(0.6, 0.93, 0.5)), "slackfit")
    assert h["best_fixed_at_target"] is None and "no fixed subnet reaches" in h["why"]["gain_at_target"]
    assert h["attainment_ratio"] is None and "unbounded" in h["why"]["attainment_ratio"]


def test_spread_over_seeds():
    s = frontier.spread([1.0, 1.2, None, 1.4])
    assert s["n"] == 3 and s["of"] == 4 and s["mean"] == pytest.approx(1.2) and s["sd"] == pytest.approx(0.2)
    assert frontier.spread([None])["mean"] is None


def test_stopping_rule_gives_the_same_numbers_as_every_subnet():
    """Run in decreasing accuracy and stop by frontier_done: the ratios equal those of the full frontier."""
    sf = (0.995, 0.915, 0.90)
    full = frontier.headline(result(FIXED, slackfit=sf), "slackfit")
    adaptive = [Point("slackfit", sf[1], sf[0])]
    run = []
    for a, t in FIXED:
        run.append(Point(f"s{a}", a, t))
        if frontier.frontier_done(run, adaptive):
            break
    assert len(run) == 3  # 0.91 reaches 0.995 >= 0.99 and slackfit's attainment, and is below 0.915
    cut = frontier.headline(result([(p.accuracy, p.attainment) for p in run], slackfit=sf), "slackfit")
    for k in ("gain_at_target", "attainment_ratio", "gain_at_equal_attainment", "best_fixed_at_target"):
        assert cut[k] == full[k], k


def test_stopping_rule_keeps_going_while_a_less_accurate_subnet_could_matter():
    adaptive = [Point("slackfit", 0.90, 0.999)]
    assert not frontier.frontier_done([Point("a", 0.93, 0.5)], adaptive)  # more accurate than slackfit
    # the best already at 1: nothing less accurate can join the envelope, the last one may be dominated
    assert frontier.frontier_done([Point("a", 0.93, 1.0), Point("b", 0.89, 0.995)], adaptive)
    # last point a point below the best, best below 1: a less accurate one could still join the envelope
    assert not frontier.frontier_done([Point("a", 0.90, 0.98), Point("b", 0.89, 0.97)], [Point("s", 0.9, 0.9)])
    # ... within half a point it could not change a ratio by more than that
    assert frontier.frontier_done([Point("a", 0.90, 0.995), Point("b", 0.89, 0.991)], [Point("s", 0.9, 0.9)])
    # the best is not as good as slackfit's attainment, or does not reach 0.99 (exactly)
    assert not frontier.frontier_done([Point("a", 0.89, 0.99)], adaptive)
    assert not frontier.frontier_done([Point("a", 0.89, 0.989)], [Point("s", 0.9, 0.5)])
    assert frontier.frontier_done([Point("a", 0.89, 0.995)], adaptive)
    assert not frontier.frontier_done([], adaptive)


def test_star_and_grid_plans():
    cfg = sweep.SweepConfig(traces=("cv8", "azure"), rates=(1.0, 2.0), slos=("5x",), noises=(0.0, 0.5), seeds=(1, 2))
    star = sweep.cells(cfg)
    assert len(star) == (1 + 1 + 1 + 1) * 2 and star[0].point == ("cv8", 1.0, "5x", 0.0)
    assert {c.point for c in star} == {("cv8", 1.0, "5x", 0.0), ("azure", 1.0, "5x", 0.0), ("cv8", 2.0, "5x", 0.0),
                                       ("cv8", 1.0, "5x", 0.5)}
    grid = sweep.cells(sweep.SweepConfig(**{**cfg.__dict__, "design": "grid"}))
    assert len(grid) == 2 * 2 * 2 * 2 and len({c.name for c in grid}) == len(grid)
    assert sweep.trace_kind("cv4") == ("bursty", 4.0) and sweep.trace_kind("azure") == ("azure", 0.0)
    for bad in ({"traces": ("cvx",)}, {"slos": ("fast",)}, {"design": "cube"}, {"seeds": ()}, {"noises": (999.0,)},
                {"noises": (-0.5,)}, {"rates": (0.0,)}):
        with pytest.raises(ValueError):
            sweep.SweepConfig(**bad)


def test_a_cell_runs_the_bench_with_the_sweeps_client_priority_and_noise():
    from superserve.scheduler.core.profile import Profile
    from superserve.scheduler.sidecar.server import find_profile

    profile = Profile.load(str(find_profile(None)))
    cfg = sweep.SweepConfig(traces=("cv8",), rates=(1.0,), slos=("100",), noises=(1.0,), seeds=(1,), client_nice=-10)
    (cell,) = sweep.cells(cfg)
    b = sweep.bench_config(cfg, cell, profile, {"rps": 300.0}, 12.0)
    assert b.client_nice == -10 and b.noise == 1.0
    command = sweep.bench_command(b)
    assert "--client-nice -10" in command and "--noise 1" in command
    assert "--client-nice" not in sweep.bench_command(sweep.bench_config(
        sweep.SweepConfig(**{**cfg.__dict__, "client_nice": None}), cell, profile, {"rps": 300.0}, 12.0))


def test_default_plan_fits_the_budget():
    cfg = sweep.SweepConfig()
    plan = sweep.cells(cfg)
    assert len(plan) == 11 * 3  # centre + 3 rates + 3 traces + 2 SLOs + 2 noise levels, 3 seeds each
    d = sweep.fit_duration(cfg, plan)
    assert 8 <= d <= 60
    assert len(plan) * sweep.cell_estimate_s(cfg, d) + sweep.overhead_s(cfg, plan) <= 90 * 60
    assert len(plan) * sweep.cell_estimate_s(cfg, d + 2) + sweep.overhead_s(cfg, plan) > 90 * 60  # the longest


def test_report_finds_the_star_centre():
    plan = sweep.cells(sweep.SweepConfig())
    points = list(dict.fromkeys(c.point for c in plan))[::-1]  # whatever the order
    assert sweep_report.centre_of(points) == ("cv8", 1.0, "5x", 0.0)


def test_resume_skips_complete_cells_only(tmp_path):
    good, partial, broken = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    good.write_text(json.dumps({"policies": {"slackfit": {}}, "frontier": {"run": ["triton-fixed:x"]},
                                "trace": {"duration_s": 12.0}}))
    partial.write_text(json.dumps({"policies": {"slackfit": {}}}))
    broken.write_text('{"policies": ')
    assert sweep.done(good, ("slackfit",)) and sweep.done(good, ("slackfit",), 12.0)
    assert not sweep.done(good, ("slackfit",), 20.0)  # another duration: run again
    assert not sweep.done(partial, ("slackfit",)) and not sweep.done(broken, ("slackfit",))
    assert not sweep.done(tmp_path / "missing.json", ("slackfit",)) and not sweep.done(good, ("slackfit", "cascade"))


def test_report_groups_seeds_gives_spread_verdict_and_readme_block(tmp_path):
    p = ("cv8", 1.0, "5x", 0.0)
    q = ("cv8", 2.0, "5x", 0.0)
    for seed, sf in ((1, (0.995, 0.915, 0.90)), (2, (0.996, 0.917, 0.91))):
        (tmp_path / f"p-s{seed}.json").write_text(json.dumps(result(FIXED, slackfit=sf, seed=seed, point=p)))
    (tmp_path / "q-s1.json").write_text(json.dumps(result(FIXED, slackfit=(0.6, 0.92, 0.5), seed=1, point=q)))
    # more punctual than every fixed subnet run (the less accurate ones skipped by the frontier rule), and more
    # accurate than the best of them at 0.99: a win, judged by the gain at the target
    punctual = [(a, t) for a, t in FIXED if a >= 0.90]
    r = ("cv8", 1.0, "5x", 0.5)
    (tmp_path / "r-s1.json").write_text(json.dumps(result(punctual, slackfit=(0.999, 0.915, 0.91), seed=1, point=r)))
    (tmp_path / "r-s2.json").write_text(json.dumps(result(punctual, slackfit=(0.999, 0.905, 0.90), seed=2, point=r)))
    (tmp_path / "p-s1.trace.json").write_text("{}")
    rows = sweep_report.summarize(sweep_report.load(tmp_path))
    by_point = {tuple(r["point"]): r for r in rows}
    assert [(r["point"][1], r["point"][3], r["seeds"]) for r in rows] == [(1.0, 0.0, [1, 2]), (1.0, 0.5, [1, 2]),
                                                                          (2.0, 0.0, [1])]
    m = by_point[p]["metrics"]["attainment_ratio"]
    assert m["n"] == 2 and m["sd"] is not None and m["min"] < m["max"]
    assert by_point[p]["verdict"] == "wins" and by_point[q]["verdict"] == "loses"  # 0.6 vs the frontier's 0.8 at 0.92
    assert by_point[r]["metrics"]["gain_at_equal_attainment"]["n"] == 0
    assert by_point[r]["metrics"]["gain_at_target"]["mean"] == 0.0  # 0.915 and 0.905 against 0.91
    assert by_point[r]["verdict"] == "ties"
    (tmp_path / "r-s2.json").write_text(json.dumps(result(punctual, slackfit=(0.999, 0.925, 0.92), seed=2, point=r)))
    rows = sweep_report.summarize(sweep_report.load(tmp_path))
    assert {tuple(x["point"]): x["verdict"] for x in rows}[r] == "wins"  # +0.5 and +1.5 points at 0.99
    text = sweep_report.table(rows)
    assert text.count("\n") == 4 and "**wins**" in text and "**loses**" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{sweep_report.BEGIN}\nold table\n{sweep_report.END}\nafter\n")
    assert sweep_report.update_readme(readme, text, "results/x")
    body = readme.read_text()
    assert "old table" not in body and body.startswith("intro\n") and body.endswith("after\n") and "**wins**" in body
    assert sweep_report.update_readme(readme, "again", "results/x") and "**wins**" not in readme.read_text()
    plain = tmp_path / "plain.md"
    plain.write_text("no markers")
    assert not sweep_report.update_readme(plain, text, "x") and plain.read_text() == "no markers"


def test_report_plots_a_star(tmp_path):
    centre = ("cv8", 1.0, "5x", 0.0)
    points = [centre, ("cv8", 2.0, "5x", 0.0), ("cv2", 1.0, "5x", 0.0), ("azure", 1.0, "5x", 0.0),
              ("cv8", 1.0, "2x", 0.0), ("cv8", 1.0, "5x", 0.5)]
    for k, p in enumerate(points):
        for seed in (1, 2):
            sf = (0.99 - 0.05 * k, 0.90 + 0.002 * seed, 0.88)
            (tmp_path / f"c{k}-s{seed}.json").write_text(json.dumps(result(FIXED, slackfit=sf, seed=seed, point=p)))
    rows = sweep_report.summarize(sweep_report.load(tmp_path))
    assert len(rows) == len(points) and all(r["metrics"]["attainment_ratio"]["n"] == 2 for r in rows)
    pngs = sweep_report.plots(rows, tmp_path)
    assert sorted(p.name for p in pngs) == ["frontier_per_load.png", "ratio_vs_burstiness.png", "ratio_vs_load.png",
                                            "ratio_vs_slo_noise.png"]
    assert all(p.stat().st_size > 5000 for p in pngs)
