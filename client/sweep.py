"""``superserve bench-sweep``: SlackFit against the whole frontier of fixed baselines over load,
burstiness, latency target and co-tenant noise, with several trace seeds per point.

A *cell* is one ``superserve bench`` run: one trace (kind, rate, seed), one SLO, one noise level, the
adaptive policies and then Triton's dynamic batcher on every Pareto subnet, most accurate first,
stopped once the less accurate ones cannot change the headline ratios (client/frontier.py). Each cell
writes its own ``<out>/<cell>.json``, so a rerun skips the cells already done (resumable), and the
summary is always recomputed from the files (``superserve report``).

Axes (issue 16): rates 0.5x/1.0x/1.5x/2.0x of measured capacity; bursty Gamma CV² 2/4/8 and the
Azure-Functions-style replay; SLOs of 2x/5x/10x the largest subnet's batch-1 latency (``5x``) or in
ms (``100``); noise 0/0.25/0.5 of a core. ``design="star"`` (default) varies one axis at a time around
the first value of each (the centre), ``"grid"`` runs every combination (e.g. issue 13's matrix:
``--preset issue13``). The plan, with its estimated time, is printed before anything runs; without
``--duration`` the trace duration is chosen so the estimate fits ``--budget-min``.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from superserve.client import noise
from superserve.scheduler import paths
from superserve.scheduler.core import policy_names
from superserve.scheduler.provenance import command_line
from superserve.scheduler.core.profile import Profile

# Seconds of fixed cost on top of each trace, measured here (2 shared cores, load average 6-11, the
# validation run in results/sweep/validation): a fresh sidecar with its embedded Triton per adaptive
# run; per fixed run, the warm-up and the drain on the sweep's one Triton for the fixed models
# (bench.fixed_pool), which loads each subnet's model once per SLO. The progress line re-estimates
# from the cells already run.
START_S = {"sidecar": 16.0, "fixed": 1.0, "load": 10.0}
CAPACITY_S = 20.0
EXPECTED_FIXED_RUNS = 6
"""Fixed subnets run per cell before the stopping rule ends the frontier (estimate; at most all)."""
EXPECTED_LOADS = 10
"""Fixed models loaded per SLO over a sweep (the union of the cells' frontiers; at most all)."""


@dataclass(frozen=True)
class Cell:
    trace: str
    """``cv8`` (bursty, Gamma CV² 8), ``cv2``, ``cv4``, ``azure`` or ``poisson``."""
    rate_x: float
    slo: str
    """``5x`` (times the largest subnet's batch-1 latency) or milliseconds."""
    noise: float
    seed: int

    @property
    def point(self) -> tuple:
        return (self.trace, self.rate_x, self.slo, self.noise)

    @property
    def name(self) -> str:
        return f"{self.trace}-r{self.rate_x:g}-slo{self.slo}-n{self.noise:g}-s{self.seed}"


@dataclass(frozen=True)
class SweepConfig:
    traces: tuple[str, ...] = ("cv8", "cv2", "cv4", "azure")
    rates: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    slos: tuple[str, ...] = ("5x", "2x", "10x")
    noises: tuple[float, ...] = (0.0, 0.25, 0.5)
    seeds: tuple[int, ...] = (61, 62, 63)
    design: str = "star"
    policies: tuple[str, ...] = ("slackfit",)
    """Adaptive policies per cell; the frontier (``triton-fixed:pareto``) is always added."""
    duration_s: float | None = None
    """Trace seconds per cell; None: the longest that fits ``budget_min`` (at least 8, at most 60)."""
    budget_min: float = 90.0
    capacity_rps: float | None = None
    capacity_s: float = 6.0
    out_dir: Path = paths.repo_root() / "results" / "sweep"
    profile: str | None = None
    warmup: int = 40
    serve_args: tuple[str, ...] = ()
    frontier_stop: bool = True
    client_nice: int | None = None
    """The load generator's niceness while it measures (``bench --client-nice``; client/priority.py)."""

    def __post_init__(self):
        for t in self.traces:
            trace_kind(t)
        for s in self.slos:
            _slo_factor(s)
        for p in self.policies:  # the adaptive policies; a bad name fails before the plan is printed
            policy_names.parse(p, field="policies")
        if self.design not in ("star", "grid"):
            raise ValueError(f"design must be star or grid, got {self.design!r}")
        if not self.seeds or not self.rates or not self.traces or not self.slos or not self.noises:
            raise ValueError("every axis (traces, rates, slos, noises, seeds) needs at least one value")
        if any(r <= 0 for r in self.rates):
            raise ValueError(f"rates must be > 0: {self.rates}")
        for n in self.noises:
            noise.shares(n)  # raises naming the range: [0, this host's cores]
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")


QUICK = dict(traces=("cv2",), rates=(0.3,), slos=("20x",), noises=(0.0,), seeds=(1, 2), duration_s=3.0,
             capacity_s=2.0, warmup=10)
"""CI smoke: one mild point (CV² 2, 0.3x, a loose SLO, so the frontier rule stops after a few fixed
subnets), two seeds (so a spread exists), 3 s traces."""
PRESETS = {
    "issue13": dict(traces=("cv8",), rates=(1.0, 1.5), slos=("100",), noises=(0.0, 0.25, 0.5), seeds=(31, 32, 33),
                    design="grid", policies=("slackfit", "slackfit-classic")),
}


def trace_kind(label: str) -> tuple[str, float]:
    """``cv8`` -> ("bursty", 8.0); ``azure``/``poisson`` -> (kind, 0)."""
    if label in ("azure", "poisson"):
        return label, 0.0
    if label.startswith("cv"):
        try:
            cv2 = float(label[2:])
        except ValueError:
            cv2 = -1
        if cv2 > 0:
            return "bursty", cv2
    raise ValueError(f"trace must be cv<CV²> (e.g. cv8), azure or poisson, got {label!r}")


def _slo_factor(slo: str) -> tuple[float, bool]:
    """(value, relative): ``5x`` -> (5, True), ``100`` -> (100, False)."""
    rel = slo.endswith("x")
    try:
        v = float(slo[:-1] if rel else slo)
    except ValueError:
        v = -1
    if v <= 0:
        raise ValueError(f"slo must be a multiple like 5x or milliseconds like 100, got {slo!r}")
    return v, rel


def slo_ms(slo: str, profile: Profile) -> float:
    """The SLO in ms: ``5x`` is 5 times the largest Pareto subnet's batch-1 latency in the profile."""
    v, rel = _slo_factor(slo)
    return round(v * profile.subnets[-1].latency_ms[1], 1) if rel else v


def cells(cfg: SweepConfig) -> list[Cell]:
    """The plan: star = the centre (first value of every axis) and each other value of one axis with
    the rest at the centre; grid = every combination. Seeds innermost, so a partial sweep has whole
    points."""
    axes = (cfg.traces, cfg.rates, cfg.slos, cfg.noises)
    if cfg.design == "grid":
        points = list(itertools.product(*axes))
    else:
        centre = tuple(a[0] for a in axes)
        points = [centre] + [tuple(v if i == k else centre[i] for i in range(4))
                             for k, a in enumerate(axes) for v in a[1:]]
    return [Cell(*p, seed=s) for p in points for s in cfg.seeds]


def cell_estimate_s(cfg: SweepConfig, duration_s: float, fixed_runs: float = EXPECTED_FIXED_RUNS) -> float:
    """Seconds one cell is expected to take: each adaptive policy on a fresh sidecar, then the fixed
    runs on fresh Tritons, each paying its start plus the trace (plus a second of tail)."""
    per = duration_s + 1.0
    return len(cfg.policies) * (START_S["sidecar"] + per) + fixed_runs * (START_S["fixed"] + per)


def overhead_s(cfg: SweepConfig, plan: list[Cell], loads: int = EXPECTED_LOADS) -> float:
    """Once per sweep: the capacity measurement and loading the fixed models at each SLO."""
    return (0 if cfg.capacity_rps else CAPACITY_S) + len({c.slo for c in plan}) * loads * START_S["load"]


def fit_duration(cfg: SweepConfig, plan: list[Cell]) -> float:
    """The longest trace (8-60 s, whole seconds) whose estimated sweep fits the budget."""
    budget = cfg.budget_min * 60 - overhead_s(cfg, plan)
    runs = len(cfg.policies) + EXPECTED_FIXED_RUNS
    fixed = len(cfg.policies) * START_S["sidecar"] + EXPECTED_FIXED_RUNS * START_S["fixed"]
    per_cell = budget / max(1, len(plan))
    return float(min(60, max(8, int((per_cell - fixed) / runs - 1.0))))


def done(path: Path, policies, duration_s: float | None = None) -> bool:
    """A cell is done when its results file parses, has every adaptive policy and a frontier, and (if
    given) ran the same trace duration; otherwise it is run again and its file replaced."""
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if duration_s is not None and abs(r.get("trace", {}).get("duration_s", -1) - duration_s) > 1e-6:
        return False
    return all(p in r.get("policies", {}) for p in policies) and bool(r.get("frontier", {}).get("run"))


def plan_text(cfg: SweepConfig, plan: list[Cell], duration_s: float, todo: list[Cell], profile: Profile) -> str:
    est, worst = cell_estimate_s(cfg, duration_s), cell_estimate_s(cfg, duration_s, len(profile.subnets))
    once, once_worst = overhead_s(cfg, todo), overhead_s(cfg, todo, len(profile.subnets))
    points = len(plan) // len(cfg.seeds)
    lines = [f"sweep plan ({cfg.design}): {len(plan)} cells = {points} point{'s' if points > 1 else ''} x "
             f"{len(cfg.seeds)} seeds {list(cfg.seeds)}; {len(plan) - len(todo)} already done in {cfg.out_dir}",
             f"  policies {', '.join(cfg.policies)} + Triton's batcher on the Pareto subnets (up to "
             f"{len(profile.subnets)}, most accurate first, stopped by the frontier rule: about "
             f"{EXPECTED_FIXED_RUNS} per cell)",
             f"  trace {duration_s:g} s per run; SLO multiples of the largest subnet's batch-1 latency "
             f"{profile.subnets[-1].latency_ms[1]:.2f} ms ({profile.subnets[-1].name})"]
    points = sorted({c.point for c in plan}, key=lambda p: plan.index(next(c for c in plan if c.point == p)))
    for p in points:
        lines.append(f"  {p[0]:7} rate {p[1]:g}x  slo {p[2]:>4} ({slo_ms(p[2], profile):g} ms)  noise {p[3]:g}")
    total = len(todo) * est + once
    lines.append(f"estimated time: {total / 60:.0f} min for the {len(todo)} cells to run ({est:.0f} s per cell, "
                 f"{once:.0f} s once for capacity and model loads; at most {(len(todo) * worst + once_worst) / 60:.0f} "
                 f"min if every cell ran every fixed subnet); budget {cfg.budget_min:g} min")
    return "\n".join(lines)


def capacity(cfg: SweepConfig, profile_path: str) -> dict:
    """Measured once per sweep and kept in ``<out>/capacity.json`` so a resumed sweep uses the same rates."""
    path = Path(cfg.out_dir) / "capacity.json"
    if cfg.capacity_rps:
        return {"rps": cfg.capacity_rps, "method": "given (--capacity-rps)"}
    if path.exists():
        cap = json.loads(path.read_text())
        print(f"capacity: {cap['rps']} req/s from {path} (delete it to measure again)", flush=True)
        return cap
    from superserve.client import bench
    from superserve.supernet.data import load_split

    images, labels = load_split("test")
    cap = bench.measure_capacity(Profile.load(profile_path), images, labels, seconds=cfg.capacity_s,
                                 profile_path=profile_path)
    path.write_text(json.dumps(cap, indent=1) + "\n")
    return cap


def bench_config(cfg: SweepConfig, cell: Cell, profile: Profile, cap: dict, duration_s: float):
    """The ``superserve bench`` configuration of one cell."""
    from superserve.client import bench

    kind, cv2 = trace_kind(cell.trace)
    return bench.BenchConfig(
        name=cell.name, policies=tuple(cfg.policies) + (bench.PARETO,), kind=kind, rate_x=cell.rate_x,
        cv2=cv2 or 8.0, duration_s=duration_s, seed=cell.seed, slo=f"{slo_ms(cell.slo, profile):g}",
        capacity_rps=cap["rps"], warmup=cfg.warmup, out_dir=Path(cfg.out_dir), serve_args=tuple(cfg.serve_args),
        noise=cell.noise, profile=cfg.profile, frontier_stop=cfg.frontier_stop, client_nice=cfg.client_nice,
        extra={"sweep": dict(asdict(cell), point=list(cell.point), design=cfg.design,
                             largest_b1_ms=profile.subnets[-1].latency_ms[1], capacity_method=cap.get("method"))})


def bench_command(b) -> str:
    """The ``superserve bench`` command that runs this one cell alone (what its results file records)."""
    import shlex

    args = ["--policies", ",".join(b.policies), "--trace-kind", b.kind, "--rate", f"{b.rate_x:g}",
            "--duration", f"{b.duration_s:g}", "--seed", str(b.seed), "--slo-ms", b.slo,
            "--capacity-rps", f"{b.capacity_rps:g}", "--name", b.name, "--out-dir", str(b.out_dir)]
    if b.kind == "bursty":
        args += ["--cv2", f"{b.cv2:g}"]
    if b.noise:
        args += ["--noise", f"{b.noise:g}"]
    if b.frontier_stop:
        args += ["--frontier-stop"]
    if b.client_nice is not None:
        args += ["--client-nice", str(b.client_nice)]
    if b.serve_args:
        args += ["--serve-args", " ".join(b.serve_args)]
    return "superserve bench " + " ".join(shlex.quote(a) for a in args)


def run(cfg: SweepConfig, command: str, dry_run: bool = False) -> list[Path]:
    from superserve.scheduler.sidecar.server import find_profile

    profile_path = str(find_profile(cfg.profile))
    profile = Profile.load(profile_path)
    plan = cells(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    duration = cfg.duration_s or fit_duration(cfg, plan)
    todo = [c for c in plan if not done(out / f"{c.name}.json", cfg.policies, duration)]
    todo.sort(key=lambda c: cfg.slos.index(c.slo))  # stable: one fixed-model Triton per SLO in turn
    print(plan_text(cfg, plan, duration, todo, profile), flush=True)
    if dry_run:
        return []
    cap = capacity(cfg, profile_path)
    from superserve.client import bench

    t0, written = time.monotonic(), []
    with contextlib.ExitStack() as stack:
        pool = None
        for i, cell in enumerate(todo):
            elapsed = time.monotonic() - t0
            left = (elapsed / i if i else cell_estimate_s(cfg, duration)) * (len(todo) - i)
            print(f"\n[sweep {i + 1}/{len(todo)}] {cell.name}  (elapsed {elapsed / 60:.1f} min, about "
                  f"{left / 60:.0f} min left)", flush=True)
            bcfg = bench_config(cfg, cell, profile, cap, duration)
            bcfg = replace(bcfg, profile=profile_path,
                           extra=dict(bcfg.extra, sweep=dict(bcfg.extra["sweep"], command=command)))
            slo = float(bcfg.slo)
            if pool is None or pool.slo_ms != slo:
                stack.close()
                d = stack.enter_context(tempfile.TemporaryDirectory(prefix="superserve-sweep-pool-"))
                pool = stack.enter_context(bench.fixed_pool(profile, slo, Path(d)))
            written.append(bench.run(bcfg, bench_command(bcfg), pool))
    from superserve.client import sweep_report

    summary = sweep_report.write_summary(out)
    print(f"\nsweep done: {len(written)} cells run in {(time.monotonic() - t0) / 60:.1f} min; "
          f"{summary} (superserve report renders the table and plots)", flush=True)
    return written


def config_from_args(args) -> SweepConfig:
    base = dict(QUICK) if args.quick else dict(PRESETS.get(args.preset, {})) if args.preset else {}
    split = lambda s, f: tuple(f(x) for x in s.split(",") if x)  # noqa: E731
    if args.traces:
        base["traces"] = split(args.traces, str)
    if args.rates:
        base["rates"] = split(args.rates, float)
    if args.slos:
        base["slos"] = split(args.slos, str)
    if args.noises:
        base["noises"] = split(args.noises, float)
    if args.seeds:
        base["seeds"] = split(args.seeds, int)
    if args.design:
        base["design"] = args.design
    if args.policies:
        base["policies"] = split(args.policies, str)
    if args.duration:
        base["duration_s"] = args.duration
    import shlex

    return SweepConfig(**base, budget_min=args.budget_min, capacity_rps=args.capacity_rps, profile=args.profile,
                       out_dir=Path(args.out_dir) if args.out_dir else
                       paths.repo_root() / "results" / ("sweep-quick" if args.quick else "sweep"),
                       serve_args=tuple(shlex.split(args.serve_args or "")), client_nice=args.client_nice)


def main(args) -> int:
    cfg = config_from_args(args)
    run(cfg, command_line(), dry_run=args.dry_run)
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("bench-sweep", help="SlackFit against every fixed Pareto subnet over load, burstiness, SLO "
                       "and noise, several trace seeds; one results file per cell (resumable), then the summary")
    s.add_argument("--quick", action="store_true", help="CI smoke: one point (cv2, 0.3x, slo 20x), seeds 1 and 2, 3 s")
    s.add_argument("--preset", choices=sorted(PRESETS), help="issue13: cv8 at 1.0x and 1.5x, slo 100 ms, noise "
                   "0/0.25/0.5, seeds 31-33, grid, slackfit and slackfit-classic")
    s.add_argument("--traces", help="comma-separated: cv2,cv4,cv8 (bursty Gamma CV²), azure, poisson "
                   "(default cv8,cv2,cv4,azure; the first is the centre of a star design)")
    s.add_argument("--rates", help="multiples of capacity (default 1.0,0.5,1.5,2.0)")
    s.add_argument("--slos", help="Nx of the largest subnet's batch-1 latency or ms (default 5x,2x,10x)")
    s.add_argument("--noises", help="fractions of a core for the co-tenant (default 0,0.25,0.5)")
    s.add_argument("--seeds", help="trace seeds (default 61,62,63)")
    s.add_argument("--design", choices=("star", "grid"), help="star: one axis at a time around the first values "
                   "(default); grid: every combination")
    s.add_argument("--policies", help="adaptive policies per cell (default slackfit; e.g. slackfit,cascade,infaas,"
                   "clipper); Triton's batcher on the Pareto subnets is always added")
    s.add_argument("--duration", type=float, help="trace seconds per run (default: what fits --budget-min)")
    s.add_argument("--budget-min", type=float, default=SweepConfig.budget_min,
                   help="time the plan should fit (default 90)")
    s.add_argument("--capacity-rps", type=float, help="skip the capacity measurement and use this")
    s.add_argument("--profile", help="profile JSON (default: this machine's)")
    s.add_argument("--out-dir", help="default results/sweep/ (--quick: results/sweep-quick/)")
    s.add_argument("--serve-args", help="extra options for every superserve serve")
    s.add_argument("--client-nice", type=int, metavar="N", help="run the load generator at niceness N while it "
                   "measures (bench --client-nice; e.g. -10, needs root): a client on a host of its own")
    s.add_argument("--dry-run", action="store_true", help="print the plan and its estimated time, run nothing")
    s.set_defaults(func=main)
