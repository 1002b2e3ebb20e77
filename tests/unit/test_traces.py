"""Arrival-trace generators: rates, burstiness (CV²), ramp shape, Azure replay shape, seeds, files."""
import argparse
import csv
import json
import math

import numpy as np
import pytest

from superserve.client import traces as T
from superserve.client.traces import Trace, azure, bursty, poisson, ramp, scaled


def cv2_of_gaps(arrivals: np.ndarray) -> float:
    gaps = np.diff(arrivals)
    return float(gaps.var() / gaps.mean() ** 2)


def sample_minute_counts(first=1, last=1440) -> np.ndarray:
    """Per-minute totals of the shipped sample, read independently of the module under test."""
    with open(T.AZURE_SAMPLE, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:5] == ["HashOwner", "HashApp", "HashFunction", "Trigger", "1"] and rows[0][-1] == "1440"
    return np.array([[int(x) for x in r[4:]] for r in rows[1:]]).sum(axis=0)[first - 1:last]


def check_invariants(t: Trace, duration_s: float):
    a = t.arrivals_s
    assert a.dtype == np.float64 and a.ndim == 1 and t.duration_s == duration_s
    assert np.all(np.diff(a) >= 0) and a[0] >= 0 and a[-1] < duration_s
    assert np.array_equal(a, np.round(a, 6))


def test_poisson_rate_and_cv2_near_one():
    t = poisson(200, 100, seed=3)
    check_invariants(t, 100)
    assert t.rate_rps == pytest.approx(200, rel=0.02)  # 20000 arrivals: one sd is 0.7%
    assert cv2_of_gaps(t.arrivals_s) == pytest.approx(1.0, abs=0.08)
    assert t.describe() == {"kind": "poisson", "seed": 3, "rate_rps": round(t.rate_rps, 4), "duration_s": 100.0,
                            "n_arrivals": len(t.arrivals_s), "target_rps": 200.0}


@pytest.mark.parametrize("cv2", [2, 4, 8])
def test_bursty_burst_stream_has_requested_cv2(cv2):
    # base stream negligible (expected 0.2 arrivals): the gaps are those of the Gamma stream
    t = bursty(1e-3, 200, cv2, 200, seed=5)
    check_invariants(t, 200)
    assert t.rate_rps == pytest.approx(200, rel=0.05)
    assert cv2_of_gaps(t.arrivals_s) == pytest.approx(cv2, rel=0.15)
    assert t.describe()["cv2"] == cv2


def test_bursty_mean_rate_is_base_plus_burst_and_burstier_than_poisson():
    t = bursty(50, 150, 4, 200, seed=1)
    assert t.rate_rps == pytest.approx(200, rel=0.05)
    merged = cv2_of_gaps(t.arrivals_s)
    assert 1.5 < merged < 4.5
    assert merged > cv2_of_gaps(poisson(200, 200, seed=1).arrivals_s) + 0.5
    assert [cv2_of_gaps(bursty(10, 190, c, 200, seed=2).arrivals_s) for c in (2, 4, 8)] == \
        sorted(cv2_of_gaps(bursty(10, 190, c, 200, seed=2).arrivals_s) for c in (2, 4, 8))


GENERATORS = {
    "poisson": lambda seed: poisson(50, 20, seed=seed),
    "bursty": lambda seed: bursty(10, 40, 4, 20, seed=seed),
    "ramp": lambda seed: ramp(10, 80, 5, 20, seed=seed),
    "azure": lambda seed: azure(T.AZURE_SAMPLE, 50, 20, seed=seed),
}


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_same_seed_same_arrivals_other_seed_differs(kind):
    a, b, c = GENERATORS[kind](7), GENERATORS[kind](7), GENERATORS[kind](8)
    assert a.kind == kind and a.seed == 7 and c.seed == 8
    assert np.array_equal(a.arrivals_s, b.arrivals_s) and a.params == b.params
    assert not (len(a.arrivals_s) == len(c.arrivals_s) and np.array_equal(a.arrivals_s, c.arrivals_s))
    check_invariants(a, 20)


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_save_load_round_trip(tmp_path, kind):
    t = scaled(GENERATORS[kind](11), 1.5)
    path = t.save(tmp_path / "sub" / f"{kind}.json")
    assert set(json.loads(path.read_text())) == {"kind", "seed", "duration_s", "params", "arrivals_s"}
    u = Trace.load(path)
    assert (u.kind, u.seed, u.duration_s, u.params) == (t.kind, t.seed, t.duration_s, t.params)
    assert np.array_equal(u.arrivals_s, t.arrivals_s)
    assert u.describe() == t.describe()
    with pytest.raises(ValueError):
        u.arrivals_s[0] = 1.0  # frozen: arrivals are read-only


def test_load_errors_name_file_and_field(tmp_path):
    good = json.loads(poisson(10, 5, seed=1).save(tmp_path / "good.json").read_text())
    cases = {"missing.json": None, "notjson.json": "{oops", "list.json": "[1, 2]"}
    for field in ("kind", "arrivals_s", "duration_s"):
        cases[f"no_{field}.json"] = json.dumps({k: v for k, v in good.items() if k != field})
    cases["unsorted.json"] = json.dumps({**good, "arrivals_s": [1.0, 0.5]})
    cases["late.json"] = json.dumps({**good, "arrivals_s": [0.5, 5.0]})
    cases["strings.json"] = json.dumps({**good, "arrivals_s": ["a"]})
    cases["kind.json"] = json.dumps({**good, "kind": "zipf"})
    expect = {"missing.json": "cannot read", "notjson.json": "not valid JSON", "list.json": "JSON object",
              "no_kind.json": "'kind'", "no_arrivals_s.json": "'arrivals_s'", "no_duration_s.json": "'duration_s'",
              "unsorted.json": "sorted", "late.json": "duration_s", "strings.json": "arrivals_s",
              "kind.json": "zipf"}
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=expect[name]) as e:
            Trace.load(tmp_path / name)
        assert name in str(e.value)


def expected_ramp_counts(r1, r2, acc, edges):
    """Integral of the intended rate over each window, written out here rather than taken from the module."""
    ramp_s = abs(r2 - r1) / acc
    slope = acc if r2 > r1 else -acc

    def cum(t):  # expected arrivals in [0, t]
        t_ramp = np.minimum(t, ramp_s)
        return r1 * t_ramp + slope * t_ramp ** 2 / 2 + r2 * np.maximum(t - ramp_s, 0)
    return np.diff(cum(np.asarray(edges, dtype=float)))


@pytest.mark.parametrize("r1,r2,acc", [(100, 1000, 100), (800, 50, 50)])
def test_ramp_starts_at_r1_moves_at_accel_and_holds_r2(r1, r2, acc):
    t = ramp(r1, r2, acc, 30, seed=9)
    check_invariants(t, 30)
    starts, rates = t.rates(1.0)
    expected = expected_ramp_counts(r1, r2, acc, np.append(starts, 30.0))
    first, last10 = rates[0], rates[-10:].sum()  # counts: one-second windows
    assert abs(first - (r1 + math.copysign(acc, r2 - r1) / 2)) < 4 * math.sqrt(first)   # near r1 at the start
    assert abs(last10 - 10 * r2) < 4 * math.sqrt(10 * r2)                               # held at r2 at the end
    # every one-second window within 4.5 Poisson standard deviations of the intended rate curve
    assert np.max(np.abs(rates - expected) / np.sqrt(expected)) < 4.5
    assert abs(len(t.arrivals_s) - expected.sum()) < 4 * math.sqrt(expected.sum())
    assert t.params["ramp_s"] == pytest.approx(abs(r2 - r1) / acc)


def test_azure_replay_rate_duration_and_shape():
    counts = sample_minute_counts()
    t = azure(T.AZURE_SAMPLE, 500, 144, seed=2)
    check_invariants(t, 144)
    assert abs(len(t.arrivals_s) - 500 * 144) <= 1
    assert t.params["minutes"] == [1, 1440] and t.params["azure_file"] == "azure_functions_sample.csv"
    # each minute is 0.1 s and gets its scaled count, rounded up or down
    _, rates = t.rates(0.1)
    got = rates * 0.1
    want = counts * 500 * 144 / counts.sum()
    assert np.max(np.abs(got - want)) <= 2.0
    assert got[np.argmax(counts)] > 3 * got[np.argmin(counts)]
    # within a minute arrivals are spread out (Poisson), not piled on the minute's start
    phase = (t.arrivals_s % 0.1) / 0.1
    assert np.mean(phase < 0.5) == pytest.approx(0.5, abs=0.01)


def test_azure_minutes_range_is_inclusive_column_labels():
    counts = sample_minute_counts(601, 660)  # includes the spike in columns 611, 612
    t = azure(T.AZURE_SAMPLE, 100, 30, seed=4, minutes=(601, 660))
    assert t.rate_rps == pytest.approx(100, abs=0.05)
    _, rates = t.rates(0.5)
    assert len(rates) == 60
    assert np.max(np.abs(rates * 0.5 - counts * 3000 / counts.sum())) <= 2.0
    assert set(np.argsort(rates)[-2:]) == {10, 11}


def test_azure_bad_file_and_columns(tmp_path):
    with pytest.raises(ValueError, match="nope.csv"):
        azure(tmp_path / "nope.csv", 10, 10)
    bad = tmp_path / "bad.csv"
    bad.write_text("Owner,App,Function,Trigger,1,2\nx,y,z,http,1,2\n")
    with pytest.raises(ValueError, match="HashOwner.*bad.csv|bad.csv.*HashOwner"):
        azure(bad, 10, 10)
    bad.write_text("HashOwner,HashApp,HashFunction,Trigger,1,2\nx,y,z,http,1,many\n")
    with pytest.raises(ValueError, match="line 2"):
        azure(bad, 10, 10)
    bad.write_text("HashOwner,HashApp,HashFunction,Trigger,1,2\nx,y,z,http,0,0\n")
    with pytest.raises(ValueError, match="no invocations"):
        azure(bad, 10, 10)
    with pytest.raises(ValueError, match="minutes"):
        azure(T.AZURE_SAMPLE, 10, 10, minutes=(0, 10))
    with pytest.raises(ValueError, match="minutes"):
        azure(T.AZURE_SAMPLE, 10, 10, minutes=(10, 1441))


def test_scaled_keeps_duration_and_shape_and_scales_rate():
    base = poisson(100, 200, seed=4)
    half, more = scaled(base, 0.5), scaled(base, 2.5)
    check_invariants(more, 200)
    assert half.rate_rps == pytest.approx(50, rel=0.03)
    assert more.rate_rps == pytest.approx(2.5 * base.rate_rps, rel=0.01)
    assert (more.kind, more.seed, more.duration_s, more.params["scale"]) == ("poisson", 4, 200, 2.5)
    assert scaled(half, 2.0).params["scale"] == 1.0
    assert np.array_equal(scaled(base, 2.5).arrivals_s, more.arrivals_s)
    assert set(scaled(base, 0.3).arrivals_s) <= set(scaled(base, 0.6).arrivals_s)  # nested thinning
    for f in (1.5, 2.5, 4.0):  # copies follow the local rate: Poisson stays Poisson
        assert cv2_of_gaps(scaled(base, f).arrivals_s) == pytest.approx(1.0, abs=0.1)
    up = ramp(100, 1000, 100, 30, seed=1)
    ratio = scaled(up, 2.0).rates(5.0)[1] / up.rates(5.0)[1]
    assert np.allclose(ratio, 2.0, rtol=0.1)


def test_rates_windows_cover_the_trace():
    t = poisson(100, 10.5, seed=0)
    starts, rates = t.rates(1.0)
    assert len(starts) == 11 and starts[-1] == 10.0
    widths = np.append(np.diff(starts), 0.5)
    assert np.isclose((rates * widths).sum(), len(t.arrivals_s))


@pytest.mark.parametrize("call,name", [
    (lambda: poisson(0, 10), "rate_rps"), (lambda: poisson(-1, 10), "rate_rps"),
    (lambda: poisson(float("nan"), 10), "rate_rps"), (lambda: poisson(True, 10), "rate_rps"),
    (lambda: poisson("10", 10), "rate_rps"), (lambda: poisson(10, 0), "duration_s"),
    (lambda: poisson(10, float("inf")), "duration_s"), (lambda: poisson(10, 10, seed=-1), "seed"),
    (lambda: poisson(1e9, 1e9), "exceeds"),
    (lambda: bursty(-1, 10, 2, 10), "base_rps"), (lambda: bursty(1, 0, 2, 10), "burst_rps"),
    (lambda: bursty(1, 10, 0, 10), "cv2"), (lambda: bursty(1, 10, 2, -5), "duration_s"),
    (lambda: ramp(0, 10, 1, 10), "r1_rps"), (lambda: ramp(1, -10, 1, 10), "r2_rps"),
    (lambda: ramp(1, 10, 0, 10), "accel_rps2"),
    (lambda: azure(T.AZURE_SAMPLE, 0, 10), "target_rate_rps"), (lambda: azure(T.AZURE_SAMPLE, 10, -1), "duration_s"),
    (lambda: scaled(poisson(10, 10), 0), "factor"), (lambda: poisson(10, 10).rates(0), "window_s"),
])
def test_bad_arguments_name_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_bad_value_is_quoted():
    with pytest.raises(ValueError, match=r"cv2 must be .* got -2\.5"):
        bursty(1, 1, -2.5, 1)


def test_trace_constructor_checks():
    with pytest.raises(ValueError, match="sorted"):
        Trace("poisson", 0, np.array([2.0, 1.0]), 5.0, {})
    with pytest.raises(ValueError, match="duration_s"):
        Trace("poisson", 0, np.array([1.0, 5.0]), 5.0, {})
    with pytest.raises(ValueError, match="float64"):
        Trace("poisson", 0, [1.0], 5.0, {})
    with pytest.raises(ValueError, match="JSON"):
        Trace("poisson", 0, np.array([1.0]), 5.0, {"x": object()})
    assert Trace("poisson", 0, np.array([], dtype=np.float64), 5.0, {}).rate_rps == 0.0


def test_cli_generates_and_saves(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="superserve")
    T.add_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "b.json"
    args = parser.parse_args(["trace", "bursty", "--base-rps", "20", "--burst-rps", "30", "--cv2", "8",
                              "--duration-s", "10", "--seed", "3", "--out", str(out)])
    assert args.func(args) == 0
    line = capsys.readouterr().out.strip()
    t = Trace.load(out)
    assert np.array_equal(t.arrivals_s, bursty(20, 30, 8, 10, seed=3).arrivals_s)
    assert line.startswith("bursty:") and f"{len(t.arrivals_s)} arrivals" in line and str(out) in line
    args = parser.parse_args(["trace", "azure", "--target-rate-rps", "40", "--minutes", "601", "660",
                              "--duration-s", "12", "--scale", "0.5", "--out", str(tmp_path / "a.json")])
    assert args.func(args) == 0
    a = Trace.load(tmp_path / "a.json")
    assert a.params["minutes"] == [601, 660] and a.params["scale"] == 0.5
    assert a.rate_rps == pytest.approx(20, rel=0.1)
    with pytest.raises(SystemExit):
        parser.parse_args(["trace", "poisson", "--out", "x.json"])  # --rate-rps is required
    args = parser.parse_args(["trace", "ramp", "--r1-rps", "10", "--r2-rps", "20", "--accel-rps2", "0",
                              "--out", str(tmp_path / "r.json")])
    assert args.func(args) == 2 and not (tmp_path / "r.json").exists()
    assert "accel_rps2" in capsys.readouterr().err
