"""``superserve bench-surge``: a step surge to twice one worker's capacity and back (issue 18's benchmark).

One open-loop trace (Poisson arrivals: ``base_x`` of one worker's capacity for ``pre_s``, ``surge_x`` for
``surge_s``, ``base_x`` again for ``post_s``) is replayed against four arms, each a fresh ``superserve serve``
whose local Triton workers run each in a CPU quota of its own (``worker_cpu`` cores: ``cpu_quota_groups`` and
``worker_wrapper`` of the fault bench; without cgroups, workers pinned to cores as the fault bench does), so
that a worker is a fixed unit of capacity and adding one adds capacity on a 2-core machine:

- ``slackfit-1``: SlackFit on a fixed pool of one worker (SuperServe alone: it absorbs the surge by serving
  smaller subnets, never adds capacity);
- ``slackfit-autoscale``: SlackFit with ``--autoscale`` (1 to ``max_workers``), the autoscaler's defaults;
- ``slackfit-peak``: SlackFit on a fixed pool sized for the peak (``ceil(surge_x / 0.8)`` workers: the pool the
  autoscaler's 0.8 demand threshold asks for at the peak);
- ``fixed-autoscale``: the most accurate subnet alone (``--policy fixed``) with the same autoscaler: what stands
  for Triton's dynamic batcher (see docs/cluster.md: the autoscaler lives in the sidecar, so the baseline is the
  sidecar batching one fixed subnet, as Triton's batcher does, with SlackFit's choice of subnet taken away).

Per second of send time: arrivals, client-side attainment (answered by the deadline), served accuracy (profiled
accuracy of the subnets that answered in time) and the workers (the fleet's target, in the pool, draining, from
``/metrics`` every 0.5 s). Per arm: worker-seconds (workers started or serving, integrated over the trace),
attainment and served accuracy per phase, and the time after the surge began until served accuracy is back
within ``accuracy_tolerance`` of the pre-surge accuracy for the rest of the surge. Writes ``results/<name>.json``
and ``results/<name>.png``.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from superserve.client import prometheus_text, results, traces
from superserve.client.bench import _warm
from superserve.client.fault_bench import CGROUP_CPU, accounting, cpu_quota_groups, remove_groups, worker_wrapper
from superserve.client.loadgen import Target, run_open_loop
from superserve.client.report import series
from superserve.scheduler.ports import free_ports
from superserve.scheduler.core.profile import Profile
from superserve.scheduler.provenance import command_line
from superserve.scheduler.sidecar.server import find_profile, serve_subprocess
from superserve.scheduler.core.summary import summarize
from superserve.supernet.data import load_split

ARMS = ("slackfit-1", "slackfit-autoscale", "slackfit-peak", "fixed-autoscale")
QUICK_ARMS = ("slackfit-1", "slackfit-autoscale")
FIXED_ONE = ("slackfit-1",)
"""Arms on a pool of one worker without autoscaler: one worker's capacity may be measured on their server."""
UP_DEMAND = 0.8
"""The autoscaler's default demand threshold (autoscale.AutoscaleConfig.up_demand): the peak pool is sized by it."""


@dataclass(frozen=True)
class SurgeConfig:
    name: str = "surge"
    arms: tuple[str, ...] = ARMS
    pre_s: float = 15.0
    surge_s: float = 45.0
    post_s: float = 50.0
    base_x: float = 0.3
    """Rate before and after the surge, times one worker's capacity."""
    surge_x: float = 2.0
    max_workers: int = 4
    worker_cpu: float = 0.3
    """Cores per worker (CFS quota)."""
    isolation: str = "quota"
    capacity_rps: float | None = None
    """One worker's capacity on the most accurate subnet; None: measured on the first arm's server (closed loop
    through the sidecar, that subnet pinned, one quota'd worker)."""
    slo_ms: float = 300.0
    """Latency target. A worker held to 0.3 of a core runs every batch about 3.3x slower than the profile (the
    quota is 3 ms per 10 ms period), so 300 ms here leaves the batches and subnets that 100 ms leaves a full core;
    at 100 ms even a peak-sized pool of such workers lost most of a surge on this machine."""
    seed: int = 0
    warmup: int = 200
    accuracy_tolerance: float = 0.01
    """Served accuracy counts as regained within this of the pre-surge accuracy (the autoscaler's gap)."""
    scale_args: tuple[str, ...] = ()
    """Extra options for the autoscaled arms (e.g. a shorter ``--scale-down-hold-s``)."""
    serve_args: tuple[str, ...] = ()
    quick: bool = False
    out_dir: Path = field(default_factory=results.default_dir)

    def __post_init__(self):
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms:
            raise ValueError(f"arms must be among {', '.join(ARMS)}, got {list(self.arms)}")
        if min(self.pre_s, self.surge_s, self.post_s) <= 0:
            raise ValueError(f"pre_s, surge_s and post_s must be > 0, got {self.pre_s}, {self.surge_s}, {self.post_s}")
        if not 0 < self.base_x < self.surge_x:
            raise ValueError(f"need 0 < base_x < surge_x, got {self.base_x}, {self.surge_x}")
        if not 1 <= self.max_workers <= 8 or not 0 < self.worker_cpu <= 8:
            raise ValueError(f"max_workers must be in 1..8 and worker_cpu in (0, 8], got {self.max_workers}, "
                             f"{self.worker_cpu}")
        if self.peak_workers > self.max_workers:
            raise ValueError(f"the peak pool needs {self.peak_workers} workers, more than max_workers "
                             f"{self.max_workers}")
        if self.isolation not in ("quota", "pin", "none"):
            raise ValueError(f"isolation must be quota, pin or none, got {self.isolation!r}")
        if self.slo_ms <= 0 or (self.capacity_rps is not None and self.capacity_rps <= 0):
            raise ValueError(f"slo_ms and capacity_rps must be > 0, got {self.slo_ms}, {self.capacity_rps}")

    @property
    def duration_s(self) -> float:
        return self.pre_s + self.surge_s + self.post_s

    @property
    def peak_workers(self) -> int:
        return math.ceil(self.surge_x / UP_DEMAND - 1e-9)


def step_arrivals(base_rps: float, surge_rps: float, pre_s: float, surge_s: float, post_s: float,
                  seed: int) -> np.ndarray:
    """Poisson arrivals at ``base_rps``, then ``surge_rps``, then ``base_rps`` (independent seeded segments)."""
    out, t0 = [], 0.0
    for k, (rate, dur) in enumerate(((base_rps, pre_s), (surge_rps, surge_s), (base_rps, post_s))):
        out.append(traces.poisson(rate, dur, seed * 3 + k).arrivals_s + t0)
        t0 += dur
    return np.concatenate(out)


def arm_args(arm: str, cfg: SurgeConfig, best: str) -> list[str]:
    """``serve`` options of one arm (besides ports, profile and the worker prefixes)."""
    scale = ["--autoscale", "--workers", "1", "--min-workers", "1", "--max-workers", str(cfg.max_workers),
             *cfg.scale_args]
    return {"slackfit-1": ["--workers", "1"],
            "slackfit-autoscale": scale,
            "slackfit-peak": ["--workers", str(cfg.peak_workers)],
            "fixed-autoscale": ["--policy", "fixed", "--subnet", best, *scale]}[arm]


def worker_seconds(samples: list[tuple[float, int, int, int]], start_s: float, end_s: float) -> float:
    """Integral over [start_s, end_s] of the workers that hold a quota: started or serving (max of target and in
    the pool) plus draining, from (t, target, in pool, draining) samples held until the next."""
    total = 0.0
    for k, (t, target, actual, draining) in enumerate(samples):
        t_next = samples[k + 1][0] if k + 1 < len(samples) else end_s
        lo, hi = max(t, start_s), min(t_next, end_s)
        if hi > lo:
            total += (hi - lo) * (max(target, actual) + draining)
    return round(total, 1)


def recovery_s(acc: list[float | None], pre_acc: float | None, start_s: float, end_s: float, tolerance: float,
               window: int = 5) -> float | None:
    """Seconds after ``start_s`` until served accuracy (mean of ``window``-second windows) stays within
    ``tolerance`` of ``pre_acc`` up to ``end_s``; None if it never does."""
    if pre_acc is None:
        return None
    lo, hi = int(start_s), int(end_s)
    for t in range(lo, hi - window + 1):
        if all(_mean(acc[u:u + window]) is not None and _mean(acc[u:u + window]) >= pre_acc - tolerance
               for u in range(t, hi - window + 1)):
            return float(t - lo)
    return None


def _mean(xs) -> float | None:
    v = [x for x in xs if x is not None]
    return sum(v) / len(v) if v else None


def phase_summary(records, start_s: float, end_s: float) -> dict:
    recs = [r for r in records if start_s <= r.send_s < end_s]
    s = summarize(recs) if recs else {}
    return {"requests": len(recs), "slo_attainment": s.get("slo_attainment"),
            "mean_served_accuracy": s.get("mean_served_accuracy")}


async def _sample(metrics_url: str, t0: float, stop: asyncio.Event, out: list, period_s: float = 0.5) -> None:
    while not stop.is_set():
        try:
            m = await asyncio.to_thread(prometheus_text.scrape, metrics_url, None, 5.0)
            out.append((round(time.perf_counter() - t0, 3), int(m.get("sched_workers_target", 0)),
                        int(m.get("sched_workers", 0)), int(m.get("sched_workers_draining", 0))))
        except OSError:
            pass
        try:
            await asyncio.wait_for(stop.wait(), period_s)
        except asyncio.TimeoutError:
            pass


async def _drive(target: Target, arrivals, slos, images, labels, samples: list):
    stop = asyncio.Event()
    t0 = time.perf_counter()
    sampler = asyncio.create_task(_sample(target.metrics_url, t0, stop, samples))
    try:
        return await run_open_loop(target, arrivals, slos, images, labels)
    finally:
        stop.set()
        await sampler


async def closed_loop_capacity(target: Target, subnet: str, seconds: float, concurrency: int = 48) -> float:
    """Answers per second of ``concurrency`` closed-loop clients with ``subnet`` pinned (the sidecar batches them)."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio

    client = grpcaio.InferenceServerClient(target.url)
    x = np.zeros((1, 1, 28, 28), np.float32)
    done, stop = 0, time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        inp = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(x)
        while time.perf_counter() < stop:
            await client.infer(target.model, [inp], parameters={"subnet": subnet, "slo_ms": 10_000})
            done += 1
    try:
        await asyncio.gather(*(loop() for _ in range(concurrency)))
    finally:
        await client.close()
    return done / seconds


def _isolation(cfg: SurgeConfig) -> tuple[str, list | None]:
    if cfg.isolation != "quota":
        return cfg.isolation, None
    groups = cpu_quota_groups(cfg.max_workers, cfg.worker_cpu)
    if groups is None:
        print(f"cannot create cgroups under {CGROUP_CPU} (needs root and cgroup v1 cpu); pinning workers instead")
        return "pin", None
    return "quota", groups


def run_arm(arm: str, cfg: SurgeConfig, prefixes: list, profile_path: str, best: str, plan: dict, images, labels,
            logs: str, probe_only: bool = False) -> dict:
    """One arm on a fresh ``serve``. ``plan`` holds the trace (``arrivals``, ``slos``, ``capacity``); if it has
    none yet, one worker's capacity is measured first on this arm's server (a pool of one without autoscaler;
    then warmed up again) and the trace is built from it. ``probe_only``: just that measurement."""
    http, grpc = free_ports(2)
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--profile", profile_path,
            "--default-slo-ms", str(cfg.slo_ms), "--triton-http-port", "0", "--triton-grpc-port", "0",
            "--triton-metrics-port", "0", "--worker-cores", str(cfg.worker_cpu),
            "--local-worker-prefix", json.dumps(prefixes), *arm_args(arm, cfg, best), *cfg.serve_args]
    print(f"-- {arm}: superserve serve {' '.join(arm_args(arm, cfg, best))}", flush=True)
    samples: list = []
    load = [round(os.getloadavg()[0], 2)]
    with serve_subprocess(args, f"{logs}/serve-{arm}{'-probe' if probe_only else ''}.log"):
        target = Target(f"127.0.0.1:{grpc}", metrics_url=f"http://127.0.0.1:{http}/metrics")
        asyncio.run(_warm(target, images, labels, cfg.warmup))
        if "arrivals" not in plan:
            rps = asyncio.run(closed_loop_capacity(target, best, 6.0))
            print(f"   one worker ({cfg.worker_cpu:g} CPU) answers {rps:.0f} req/s on {best}", flush=True)
            plan.update(make_plan(cfg, {"rps": round(rps, 1), "method": f"48 closed-loop gRPC clients through the "
                                        f"sidecar, subnet {best} pinned, one worker ({cfg.worker_cpu:g} CPU), 6 s, "
                                        f"on a one-worker server before its run"}))
            if probe_only:
                return {}
            asyncio.run(_warm(target, images, labels, cfg.warmup))
        before = prometheus_text.scrape(target.metrics_url, timeout_s=5)
        records = asyncio.run(_drive(target, plan["arrivals"], plan["slos"], images, labels, samples))
        after = prometheus_text.scrape(target.metrics_url, timeout_s=5)
    load.append(round(os.getloadavg()[0], 2))
    view = {k: round(v - before.get(k, 0), 3) for k, v in after.items()
            if k.startswith(("sched_requests_total{", "sched_limit_refusals_total{", "sched_scaling_decisions_total",
                             "sched_worker_admissions", "sched_workers_lost"))}
    s = series(records, cfg.duration_s)
    pre = phase_summary(records, 0, cfg.pre_s)
    surge_end = cfg.pre_s + cfg.surge_s
    out = {"arm": arm, "serve_args": arm_args(arm, cfg, best), "load_avg_1m_before_after": load,
           "summary": summarize(records),
           "accounting": accounting(records),
           "scheduler_answered": sum(v for k, v in view.items()
                                     if k.startswith(("sched_requests_total{", "sched_limit_refusals_total{"))),
           "scheduler_view": view,
           "phases": {"pre": pre, "surge": phase_summary(records, cfg.pre_s, surge_end),
                      "surge_last_third": phase_summary(records, surge_end - cfg.surge_s / 3, surge_end),
                      "post": phase_summary(records, surge_end, cfg.duration_s)},
           "worker_seconds": worker_seconds(samples, 0.0, cfg.duration_s),
           "accuracy_recovery_s": recovery_s(s["served_accuracy"], pre["mean_served_accuracy"], cfg.pre_s,
                                             surge_end, cfg.accuracy_tolerance),
           "series": s,
           "workers": {"t": [x[0] for x in samples], "target": [x[1] for x in samples],
                       "in_pool": [x[2] for x in samples], "draining": [x[3] for x in samples]}}
    ph = out["phases"]
    print(f"   attainment pre {_f(ph['pre']['slo_attainment'])} surge {_f(ph['surge']['slo_attainment'])} post "
          f"{_f(ph['post']['slo_attainment'])}; served acc pre {_f(ph['pre']['mean_served_accuracy'])} surge "
          f"{_f(ph['surge']['mean_served_accuracy'])} post {_f(ph['post']['mean_served_accuracy'])}; worker-s "
          f"{out['worker_seconds']}; accuracy back after {out['accuracy_recovery_s']} s; {out['accounting']}",
          flush=True)
    return out


def make_plan(cfg: SurgeConfig, capacity: dict) -> dict:
    """The step trace for one worker's ``capacity`` (and the SLO of every request)."""
    base, peak = cfg.base_x * capacity["rps"], cfg.surge_x * capacity["rps"]
    arrivals = step_arrivals(base, peak, cfg.pre_s, cfg.surge_s, cfg.post_s, cfg.seed)
    print(f"trace: {len(arrivals)} requests, {base:.0f} req/s for {cfg.pre_s:g} s, {peak:.0f} req/s for "
          f"{cfg.surge_s:g} s, {base:.0f} req/s for {cfg.post_s:g} s; slo {cfg.slo_ms:g} ms", flush=True)
    return {"capacity": capacity, "arrivals": arrivals, "slos": np.full(len(arrivals), cfg.slo_ms)}


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def claim(arms: dict[str, dict], cfg: SurgeConfig) -> dict:
    """The claim of issue 18 checked on this run (None where an arm it needs did not run)."""
    a, c = arms.get("slackfit-autoscale"), arms.get("slackfit-peak")
    if a is None:
        return {}
    surge_att = a["phases"]["surge"]["slo_attainment"]
    last = {k: {"slo_attainment": r["phases"]["surge_last_third"]["slo_attainment"],
                "mean_served_accuracy": r["phases"]["surge_last_third"]["mean_served_accuracy"]}
            for k, r in arms.items()}
    return {"autoscaled_surge_attainment": surge_att, "surge_last_third": last,
            "holds_attainment_0_99": surge_att is not None and surge_att >= 0.99,
            "accuracy_recovery_s": a["accuracy_recovery_s"],
            "recovers_within_surge": a["accuracy_recovery_s"] is not None,
            "worker_seconds_autoscaled": a["worker_seconds"],
            "worker_seconds_peak_pool": c["worker_seconds"] if c else None,
            "fewer_worker_seconds_than_peak_pool": (a["worker_seconds"] < c["worker_seconds"]) if c else None}


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    fig, ax = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    ax[0].plot(np.arange(len(result["arrivals_per_s"])) + 0.5, result["arrivals_per_s"], color="black", lw=1)
    ax[0].axhline(result["capacity"]["rps"], color="grey", ls=":", lw=1)
    ax[0].set(ylabel="arrivals / s\n(dotted: 1 worker)")
    colors = dict(zip(ARMS, ("tab:blue", "tab:red", "tab:green", "tab:orange")))
    for arm, r in result["arms"].items():
        s = r["series"]
        t = np.arange(len(s["attainment"])) + 0.5
        ax[1].plot(t, [np.nan if v is None else v for v in s["attainment"]], color=colors[arm], lw=1, label=arm)
        ax[2].plot(t, [np.nan if v is None else v for v in s["served_accuracy"]], color=colors[arm], lw=1)
        w = r["workers"]
        live = [max(a, b) + d for a, b, d in zip(w["target"], w["in_pool"], w["draining"])]
        ax[3].step(w["t"], live, where="post", color=colors[arm], lw=1.2,
                   label=f"{arm} ({r['worker_seconds']:.0f} worker-s)")
    ax[1].set(ylabel="SLO attainment", ylim=(0, 1.05))
    ax[1].legend(fontsize=7, loc="lower left")
    ax[2].set(ylabel="served accuracy")
    ax[3].set(ylabel="workers (started\nor serving)", xlabel="time (s)", ylim=(0, cfg["max_workers"] + 0.5))
    ax[3].legend(fontsize=7, loc="upper right")
    for a in ax:
        for x in (cfg["pre_s"], cfg["pre_s"] + cfg["surge_s"]):
            a.axvline(x, color="grey", lw=0.6, alpha=0.6)
    iso = f"{cfg['worker_cpu']:g} CPU per worker" if cfg["isolation"] == "quota" else f"workers {cfg['isolation']}"
    fig.suptitle(f"surge {cfg['base_x']:g}x -> {cfg['surge_x']:g}x -> {cfg['base_x']:g}x one worker's capacity "
                 f"({result['capacity']['rps']:.0f} req/s), slo {cfg['slo_ms']:g} ms, {iso}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run(cfg: SurgeConfig, command: str) -> Path:
    profile_path = str(find_profile(None))
    profile = Profile.load(profile_path)
    best = profile.subnets[-1].name
    images, labels = load_split("test")
    isolation, groups = _isolation(cfg)
    cfg = dataclasses.replace(cfg, isolation=isolation)
    prefixes = [list(worker_wrapper(isolation, i, groups)) for i in range(cfg.max_workers)]
    logs = tempfile.mkdtemp(prefix="superserve-surge-")
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    plan: dict = {}
    if cfg.capacity_rps:
        plan = make_plan(cfg, {"rps": cfg.capacity_rps, "method": "given (--capacity-rps)"})
    try:
        if not plan and cfg.arms[0] not in FIXED_ONE:  # measure on a pool of one that no autoscaler watches
            run_arm("slackfit-1", cfg, prefixes, profile_path, best, plan,
                    images, labels, logs, probe_only=True)
        arms = {arm: run_arm(arm, cfg, prefixes, profile_path, best, plan, images, labels, logs) for arm in cfg.arms}
    finally:
        remove_groups(groups)
    arrivals, capacity = plan["arrivals"], plan["capacity"]
    base, peak = cfg.base_x * capacity["rps"], cfg.surge_x * capacity["rps"]
    counts, _ = np.histogram(arrivals, bins=np.arange(0, math.ceil(cfg.duration_s) + 1))
    result = {**results.header(command),
              "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()
                         if k != "out_dir"} | {"peak_workers": cfg.peak_workers, "cores": os.cpu_count(),
                                               "duration_s": cfg.duration_s},
              "profile": Path(profile_path).name, "best_subnet": best, "capacity": capacity,
              "trace": {"kind": "poisson step", "n_arrivals": len(arrivals), "base_rps": round(base, 1),
                        "surge_rps": round(peak, 1), "seed": cfg.seed},
              "arrivals_per_s": counts.tolist(), "arms": arms, "claim": claim(arms, cfg), "logs": logs,
              "wall_s": round(time.perf_counter() - t_start, 1)}
    path = results.write(result, out_dir / f"{cfg.name}.json")
    png = plot(result, out_dir / f"{cfg.name}.png")
    print(f"claim: {result['claim']}\nplot {png}\nwrote {path}\nlogs {logs}  ({result['wall_s']:.0f} s)")
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``superserve bench-surge [--quick] ...``'s options (registered by scheduler/commands/benches.py)."""
    d = SurgeConfig()
    p.add_argument("--name", help="results/<name>.json (default surge, or surge-quick)")
    p.add_argument("--arms", help=f"comma-separated among {','.join(ARMS)} (default all; --quick: "
                   f"{','.join(QUICK_ARMS)})")
    p.add_argument("--pre-s", type=float, help=f"seconds before the surge (default {d.pre_s:g}; --quick 3)")
    p.add_argument("--surge-s", type=float, help=f"seconds of surge (default {d.surge_s:g}; --quick 12)")
    p.add_argument("--post-s", type=float, help=f"seconds after it (default {d.post_s:g}; --quick 5)")
    p.add_argument("--base-x", type=float, default=d.base_x, help="rate before and after, x one worker's capacity")
    p.add_argument("--surge-x", type=float, default=d.surge_x, help="rate during the surge, x one worker's capacity")
    p.add_argument("--max-workers", type=int, help=f"autoscaler's maximum (default {d.max_workers}; --quick 3)")
    p.add_argument("--worker-cpu", type=float, default=d.worker_cpu, help="cores per worker (CFS quota)")
    p.add_argument("--isolation", choices=("quota", "pin", "none"), default="quota",
                   help="a CPU quota per worker (cgroup, needs root; else pin), a core per worker index, or none")
    p.add_argument("--capacity-rps", type=float, help="one worker's capacity (default: measured)")
    p.add_argument("--slo-ms", type=float, default=d.slo_ms)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--scale-args", help='extra serve options for the autoscaled arms, e.g. "--scale-down-hold-s 15"')
    p.add_argument("--serve-args", help="extra serve options for every arm")
    p.add_argument("--quick", action="store_true", help="CI smoke run under 2 minutes: 2 arms, a 20 s trace")
    p.add_argument("--out-dir", help="default results/")
    p.set_defaults(func=main)


def config_from_args(args: argparse.Namespace) -> SurgeConfig:
    q = args.quick
    arms = tuple(a.strip() for a in args.arms.split(",")) if args.arms else (QUICK_ARMS if q else ARMS)
    pick = lambda v, full, quick: v if v is not None else (quick if q else full)  # noqa: E731
    return SurgeConfig(name=args.name or ("surge-quick" if q else "surge"), arms=arms,
                       pre_s=pick(args.pre_s, 15.0, 3.0), surge_s=pick(args.surge_s, 45.0, 12.0),
                       post_s=pick(args.post_s, 50.0, 5.0), base_x=args.base_x, surge_x=args.surge_x,
                       max_workers=pick(args.max_workers, 4, 3), worker_cpu=args.worker_cpu, isolation=args.isolation,
                       capacity_rps=args.capacity_rps, slo_ms=args.slo_ms, seed=args.seed,
                       warmup=50 if q else 200, scale_args=tuple(shlex.split(args.scale_args or "")),
                       serve_args=tuple(shlex.split(args.serve_args or "")), quick=q,
                       out_dir=Path(args.out_dir) if args.out_dir else results.default_dir())


def main(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        print(f"superserve bench-surge: {e}")
        return 2
    run(cfg, command_line())
    return 0
