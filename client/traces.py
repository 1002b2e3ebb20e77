"""Open-loop arrival traces for benchmarks (docs/design.md, "Workloads").

Every trace is generated from a seed and saved to a JSON file, so every policy in a run is driven by
the same arrival times. Times are rounded to microseconds when generated, so a saved trace loads back
bit-identical. Kinds: ``poisson``; ``bursty`` (a Poisson base stream plus a Gamma renewal stream of
CV² 2, 4 or 8, as in SuperServe's synthetic traces); ``ramp`` (rate moving linearly from r1 to r2);
``azure`` (replay of an Azure Functions 2019 per-minute invocation file). ``scaled`` changes the rate
of any trace without changing its duration or shape.

The shipped ``data/azure_functions_sample.csv`` is small and synthetic (see ``data/README.md``). For the
real dataset, download AzureFunctionsDataset2019 from https://github.com/Azure/AzurePublicDataset and
pass one day's file, e.g.::

    superserve trace azure --file invocations_per_function_md.anon.d01.csv --minutes 600 659 \\
        --target-rate-rps 200 --duration-s 120 --out traces/azure_d01.json
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("poisson", "bursty", "ramp", "azure")
AZURE_SAMPLE = Path(__file__).parent / "data" / "azure_functions_sample.csv"
AZURE_KEYS = ["HashOwner", "HashApp", "HashFunction", "Trigger"]
MAX_ARRIVALS = 50_000_000  # a typo in a rate should fail fast, not exhaust memory
SCALE_SPAN = 16  # scaled(): copies spread over this many neighbouring arrivals either side


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _check_size(expected: float) -> None:
    if expected > MAX_ARRIVALS:
        raise ValueError(f"rate x duration_s = {expected:.3g} arrivals exceeds MAX_ARRIVALS = {MAX_ARRIVALS}")


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarrays with == is ambiguous; use np.array_equal
class Trace:
    kind: str
    seed: int
    arrivals_s: np.ndarray  # float64, sorted, seconds from trace start, all in [0, duration_s)
    duration_s: float
    params: dict            # generator parameters, JSON-serialisable

    def __post_init__(self):  # checks only; factories build the array
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        _check_seed(self.seed)
        _positive("duration_s", self.duration_s)
        a = self.arrivals_s
        if not isinstance(a, np.ndarray) or a.dtype != np.float64 or a.ndim != 1:
            raise ValueError(f"arrivals_s must be a 1-D float64 array, got {type(a).__name__} "
                             f"{getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}")
        if a.size and not (np.all(np.isfinite(a)) and a[0] >= 0 and a[-1] < self.duration_s):
            raise ValueError(f"arrivals_s must lie in [0, duration_s={self.duration_s}), got "
                             f"[{a.min()}, {a.max()}]")
        if a.size > 1 and np.any(np.diff(a) < 0):
            raise ValueError("arrivals_s must be sorted ascending")
        if not isinstance(self.params, dict):
            raise ValueError(f"params must be a dict, got {type(self.params).__name__}")
        try:
            json.dumps(self.params)
        except TypeError as e:
            raise ValueError(f"params must be JSON-serialisable: {e}") from None

    @property
    def rate_rps(self) -> float:
        return len(self.arrivals_s) / self.duration_s

    def describe(self) -> dict:
        """The results-JSON ``trace`` field. ``rate_rps`` is the realised rate; the requested one is
        in the params (``target_rps`` etc.), which never reuse these top-level keys."""
        return {"kind": self.kind, "seed": self.seed, "rate_rps": round(self.rate_rps, 4),
                "duration_s": self.duration_s, "n_arrivals": len(self.arrivals_s), **self.params}

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        obj = {"kind": self.kind, "seed": self.seed, "duration_s": self.duration_s, "params": self.params,
               "arrivals_s": np.round(self.arrivals_s, 6).tolist()}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(obj, separators=(",", ":")))
        os.replace(tmp, path)  # a reader never sees half a trace
        return path

    @classmethod
    def load(cls, path) -> "Trace":
        path = Path(path)
        try:
            obj = json.loads(path.read_text())
        except OSError as e:
            raise ValueError(f"cannot read trace file {path}: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"trace file {path} is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"trace file {path}: expected a JSON object, got {type(obj).__name__}")
        for field in ("kind", "seed", "duration_s", "params", "arrivals_s"):
            if field not in obj:
                raise ValueError(f"trace file {path}: missing field {field!r}")
        try:
            arrivals = np.asarray(obj["arrivals_s"], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"trace file {path}: field 'arrivals_s' must be a list of numbers") from None
        try:
            return _make(obj["kind"], obj["seed"], arrivals, obj["duration_s"], obj["params"], rounded=True)
        except ValueError as e:
            raise ValueError(f"trace file {path}: {e}") from None

    def rates(self, window_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(window start times, arrivals per second in each window); a short last window is
        divided by its own length, so it is not under-reported."""
        window_s = _positive("window_s", window_s)
        n = max(1, math.ceil(self.duration_s / window_s - 1e-9))
        starts = np.arange(n) * window_s
        edges = np.append(starts, self.duration_s)
        counts, _ = np.histogram(self.arrivals_s, bins=edges)
        return starts, counts / np.diff(edges)


def _make(kind, seed, arrivals, duration_s, params, rounded=False) -> Trace:
    """Round to microseconds (so save/load is exact), keep below duration_s, sort, freeze."""
    a = np.asarray(arrivals, dtype=np.float64)
    if not rounded:
        a = np.round(a, 6)
        last = math.floor(duration_s * 1e6) / 1e6
        last = last if last < duration_s else (math.floor(duration_s * 1e6) - 1) / 1e6
        a = np.sort(np.minimum(a, last))
    a.flags.writeable = False
    return Trace(kind, seed, a, duration_s, params)


def _renewal(draw, mean_gap: float, duration_s: float) -> np.ndarray:
    """Arrival times on [0, duration_s) of a renewal process whose gaps come from ``draw(n)``."""
    _check_size(duration_s / mean_gap)
    chunk = int(duration_s / mean_gap * 1.05) + 64
    times = np.cumsum(draw(chunk))
    while times[-1] < duration_s:
        times = np.concatenate([times, times[-1] + np.cumsum(draw(chunk))])
    return times[times < duration_s]


def poisson(rate_rps: float, duration_s: float, seed: int = 0) -> Trace:
    """Exponential gaps (CV² 1): the memoryless baseline that the other kinds are compared with."""
    rate, dur, seed = _positive("rate_rps", rate_rps), _positive("duration_s", duration_s), _check_seed(seed)
    rng = np.random.default_rng(seed)
    arr = _renewal(lambda n: rng.exponential(1 / rate, n), 1 / rate, dur)
    return _make("poisson", seed, arr, dur, {"target_rps": rate})


def bursty(base_rps: float, burst_rps: float, cv2: float, duration_s: float, seed: int = 0) -> Trace:
    """Poisson base stream plus a Gamma renewal stream (shape 1/cv2, scale cv2/burst_rps: mean gap
    1/burst_rps, gap CV² = cv2). The two streams use independent child seeds, so the burst stream
    does not change when only base_rps does."""
    base, burst = _positive("base_rps", base_rps), _positive("burst_rps", burst_rps)
    cv2, dur, seed = _positive("cv2", cv2), _positive("duration_s", duration_s), _check_seed(seed)
    base_rng, burst_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    a = _renewal(lambda n: base_rng.exponential(1 / base, n), 1 / base, dur)
    b = _renewal(lambda n: burst_rng.gamma(1 / cv2, cv2 / burst, n), 1 / burst, dur)
    return _make("bursty", seed, np.concatenate([a, b]), dur,
                 {"base_rps": base, "burst_rps": burst, "cv2": cv2, "target_rps": base + burst})


def ramp_rate(t, r1_rps: float, r2_rps: float, accel_rps2: float) -> np.ndarray:
    """The ramp's intended rate at time(s) t: r1, moving towards r2 at accel_rps2, then held at r2."""
    r = r1_rps + math.copysign(accel_rps2, r2_rps - r1_rps) * np.asarray(t, dtype=np.float64)
    return np.clip(r, min(r1_rps, r2_rps), max(r1_rps, r2_rps))


def ramp(r1_rps: float, r2_rps: float, accel_rps2: float, duration_s: float, seed: int = 0) -> Trace:
    """Non-homogeneous Poisson by thinning: candidates at max(r1, r2), each kept with probability
    rate(t) / max(r1, r2). If the ramp is longer than duration_s it never reaches r2."""
    r1, r2 = _positive("r1_rps", r1_rps), _positive("r2_rps", r2_rps)
    acc, dur, seed = _positive("accel_rps2", accel_rps2), _positive("duration_s", duration_s), _check_seed(seed)
    top = max(r1, r2)
    rng = np.random.default_rng(seed)
    cand = _renewal(lambda n: rng.exponential(1 / top, n), 1 / top, dur)
    keep = rng.random(len(cand)) * top < ramp_rate(cand, r1, r2, acc)
    return _make("ramp", seed, cand[keep], dur,
                 {"r1_rps": r1, "r2_rps": r2, "accel_rps2": acc, "ramp_s": abs(r2 - r1) / acc})


def azure_minute_counts(path) -> np.ndarray:
    """Invocations per minute summed over all functions of an Azure Functions 2019 per-minute file."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = csv.reader(f)
            header = next(rows, [])
            n = len(header) - 4
            if header[:4] != AZURE_KEYS or n < 1 or header[4:] != [str(i) for i in range(1, n + 1)]:
                raise ValueError(f"{path}: expected columns {','.join(AZURE_KEYS)},1,2,...,1440; "
                                 f"got {','.join(header[:6])}{',...' if len(header) > 6 else ''}")
            total = np.zeros(n)
            for line, row in enumerate(rows, start=2):
                if len(row) != len(header):
                    raise ValueError(f"{path}: line {line} has {len(row)} fields, expected {len(header)}")
                try:
                    counts = np.asarray(row[4:], dtype=np.float64)
                except ValueError:
                    raise ValueError(f"{path}: line {line} has a non-numeric count") from None
                if not np.all(np.isfinite(counts) & (counts >= 0)):
                    raise ValueError(f"{path}: line {line} has a negative or non-finite count")
                total += counts
    except OSError as e:
        raise ValueError(f"cannot read Azure invocation file {path}: {e.strerror or e}") from None
    return total


def azure(path, target_rate_rps: float, duration_s: float, seed: int = 0,
          minutes: tuple[int, int] | None = None) -> Trace:
    """Replay per-minute counts: minutes ``(first, last)`` are column labels, 1-based and inclusive
    (default: all). Each minute is compressed to duration_s / n_minutes seconds and gets
    counts * target_rate_rps * duration_s / sum(counts) arrivals, rounded up or down by systematic
    sampling (one seeded offset: unbiased per minute, total within 1 of the target), placed
    uniformly at random inside its compressed minute, i.e. Poisson given the count."""
    rate, dur, seed = _positive("target_rate_rps", target_rate_rps), _positive("duration_s", duration_s), \
        _check_seed(seed)
    _check_size(rate * dur)
    counts = azure_minute_counts(path)
    first, last = (1, len(counts)) if minutes is None else minutes
    if not (isinstance(first, int) and isinstance(last, int) and 1 <= first <= last <= len(counts)):
        raise ValueError(f"minutes must be (first, last) with 1 <= first <= last <= {len(counts)}, got {minutes!r}")
    counts = counts[first - 1:last]
    if counts.sum() <= 0:
        raise ValueError(f"{path}: no invocations in minutes {first}..{last}")
    rng = np.random.default_rng(seed)
    cum = np.floor(np.cumsum(counts * (rate * dur / counts.sum())) + rng.random())
    per_minute = np.diff(np.concatenate([[0.0], cum])).astype(np.int64)
    width = dur / len(counts)
    starts = np.repeat(np.arange(len(counts)) * width, per_minute)
    arr = starts + rng.random(len(starts)) * width
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return _make("azure", seed, arr, dur, {"azure_file": Path(path).name, "azure_sha256": digest,
                                           "minutes": [first, last], "target_rps": rate})


def scaled(trace: Trace, factor: float) -> Trace:
    """Same duration and rate-over-time shape, rate times ``factor``. Each arrival is kept floor(factor)
    or ceil(factor) times, seeded from trace.seed, so thinnings are nested: scaled(t, 0.3) is a subset of
    scaled(t, 0.6). An extra copy lands uniformly in the real-time span of its SCALE_SPAN neighbours
    either side: that follows the local rate and keeps a Poisson trace Poisson (one copy per gap would
    fill short and long gaps alike). Thinning and copies both move a bursty trace's gap CV² towards 1;
    to compare burstiness at several rates, call bursty() with the scaled rates instead."""
    factor = _positive("factor", factor)
    _check_size(len(trace.arrivals_s) * factor)
    t, n = trace.arrivals_s, len(trace.arrivals_s)
    rng = np.random.default_rng(np.random.SeedSequence([trace.seed, 0x5CA1E]))
    k = int(factor) + (rng.random(n) < factor - int(factor))
    extra = np.repeat(np.arange(n), np.maximum(k - 1, 0))
    pad = np.concatenate([[0.0], t, [trace.duration_s]])
    lo, hi = pad[np.maximum(extra + 1 - SCALE_SPAN, 0)], pad[np.minimum(extra + 1 + SCALE_SPAN, n + 1)]
    arr = np.concatenate([t[k >= 1], lo + rng.random(len(extra)) * (hi - lo)])
    params = {**trace.params, "scale": trace.params.get("scale", 1.0) * factor}
    return _make(trace.kind, trace.seed, arr, trace.duration_s, params)


def add_parser(subparsers) -> None:
    """``superserve trace {poisson,bursty,ramp,azure} [options] --out FILE``."""
    p = subparsers.add_parser("trace", help="generate a seeded arrival trace and save it as JSON")
    kinds = p.add_subparsers(dest="trace_kind", required=True)
    spec = {"poisson": [("--rate-rps", float, None)],
            "bursty": [("--base-rps", float, None), ("--burst-rps", float, None), ("--cv2", float, 4.0)],
            "ramp": [("--r1-rps", float, None), ("--r2-rps", float, None), ("--accel-rps2", float, None)],
            "azure": [("--target-rate-rps", float, None), ("--file", str, str(AZURE_SAMPLE))]}
    for kind, opts in spec.items():
        k = kinds.add_parser(kind, help=f"{kind} arrivals")
        for flag, typ, default in opts:
            k.add_argument(flag, type=typ, default=default, required=default is None)
        if kind == "azure":
            k.add_argument("--minutes", type=int, nargs=2, metavar=("FIRST", "LAST"),
                           help="1-based inclusive minute columns to replay (default: all)")
        k.add_argument("--duration-s", type=float, default=60.0)
        k.add_argument("--seed", type=int, default=0)
        k.add_argument("--scale", type=float, default=None, help="multiply the rate (see traces.scaled)")
        k.add_argument("--out", required=True, help="JSON file to write")
        k.set_defaults(func=run_cli)
    p.set_defaults(func=run_cli)


def run_cli(args) -> int:
    """Generate, save, print one line. A bad value exits 2 with the message, as argparse errors do."""
    kind, d, s = args.trace_kind, args.duration_s, args.seed
    try:
        if kind == "poisson":
            trace = poisson(args.rate_rps, d, s)
        elif kind == "bursty":
            trace = bursty(args.base_rps, args.burst_rps, args.cv2, d, s)
        elif kind == "ramp":
            trace = ramp(args.r1_rps, args.r2_rps, args.accel_rps2, d, s)
        else:
            trace = azure(args.file, args.target_rate_rps, d, s, tuple(args.minutes) if args.minutes else None)
        if args.scale is not None:
            trace = scaled(trace, args.scale)
    except ValueError as e:
        print(f"superserve trace {kind}: error: {e}", file=sys.stderr)
        return 2
    path = trace.save(args.out)
    print(f"{trace.kind}: {len(trace.arrivals_s)} arrivals, mean {trace.rate_rps:.2f} rps over "
          f"{trace.duration_s:g} s -> {path}")
    return 0
