"""``superserve bench-fault``: SuperServe's fault-tolerance experiment on Triton workers.

Starts ``workers`` Tritons itself (so it can ``kill -9`` them and restart them on the same ports) and
``superserve serve --worker ...`` (SlackFit) in front of them, replays one bursty open-loop trace, kills
a worker every ``kill_every_s`` from ``kill_at_s`` until ``min_workers`` are left, then restarts them
one by one from ``restart_at_s``. Records, per 1 s of send time, SLO attainment and served accuracy,
and the worker count over time: Triton processes alive (ground truth) and workers the scheduler has in
rotation (``sched_worker_healthy``, scraped every 0.25 s). Writes ``results/<name>.json`` (with the
command, a per-outcome accounting of every request sent, and the same numbers per phase) and
``results/<name>.png``.

Capacity per worker (``isolation``): the workers run one torch thread each, and on a small machine
(2 cores here) they share the cores with each other, the scheduler and the load generator. Unisolated
(``none``), killing half the workers removes little compute: the survivors use the cores freed.
``quota`` (the default) gives every worker a fixed CPU share with a Linux CFS quota (cgroup v1 ``cpu``
controller, ``worker_cpu`` cores per worker, 10 ms period), like one accelerator per worker: losing
half the workers loses half the serving capacity, and the scheduler and load generator keep the rest
of the machine either way. It needs a writable /sys/fs/cgroup/cpu (root); without one the bench falls
back to ``pin``: worker i on core ``i mod cores`` (taskset), the workers of one core killed first, which
halves the cores serving but also hands the freed core to the load generator (see the README).
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import dataclasses
import os
import shlex
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from superserve.client import prometheus_text, results, traces
from superserve.client.bench import _warm, measure_capacity
from superserve.client.loadgen import Target, run_open_loop
from superserve.scheduler.core.summary import summarize
from superserve.client.report import arrival_series, series
from superserve.scheduler import paths
from superserve.scheduler.provenance import command_line
from superserve.scheduler.ports import free_ports
from superserve.scheduler.core.profile import Profile
from superserve.scheduler.sidecar.server import find_profile, serve_subprocess
from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess
from superserve.supernet.data import load_split


@dataclass(frozen=True)
class FaultConfig:
    name: str = "fault"
    workers: int = 4
    min_workers: int = 2
    """Kill down to this many workers."""
    duration_s: float = 60.0
    """Seconds of load."""
    kill_at_s: float = 8.0
    kill_every_s: float = 6.0
    restart_at_s: float = 22.0
    """The first restart begins here (Triton then needs several seconds to load the model)."""
    restart_every_s: float = 8.0
    rate_x: float = 0.6
    """Mean arrival rate as a multiple of the capacity (bench.measure_capacity)."""
    capacity_rps: float | None = None
    cv2: float = 8.0
    slo_ms: float = 100.0
    seed: int = 0
    isolation: str = "quota"
    """quota, pin or none (see the module docstring)."""
    worker_cpu: float = 0.3
    """Cores per worker under ``quota``."""
    warmup: int = 400
    """Requests sent before the measurement (every worker's first calls pay lazy initialisation)."""
    serve_args: tuple[str, ...] = ()
    """Extra options for ``superserve serve``."""
    out_dir: Path = field(default_factory=lambda: paths.repo_root() / "results")

    def __post_init__(self):
        if not 1 <= self.min_workers < self.workers:
            raise ValueError(f"need 1 <= min_workers < workers, got {self.min_workers}, {self.workers}")
        kills = self.workers - self.min_workers
        last_kill = self.kill_at_s + (kills - 1) * self.kill_every_s
        last_restart = self.restart_at_s + (kills - 1) * self.restart_every_s
        if not 0 < self.kill_at_s <= last_kill < self.restart_at_s <= last_restart < self.duration_s:
            raise ValueError(f"the schedule must fit in the run: kills at {self.kill_at_s}..{last_kill} s, "
                             f"restarts at {self.restart_at_s}..{last_restart} s, duration {self.duration_s} s")
        if self.isolation not in ("quota", "pin", "none") or not 0 < self.worker_cpu <= 64:
            raise ValueError(f"isolation must be quota, pin or none and worker_cpu in (0, 64], got "
                             f"{self.isolation!r}, {self.worker_cpu}")
        if self.rate_x <= 0 or self.slo_ms <= 0:
            raise ValueError(f"rate_x and slo_ms must be > 0, got {self.rate_x}, {self.slo_ms}")

    def schedule(self) -> list[tuple[float, str, int]]:
        """(time s, 'kill' or 'restart', worker index). Pinned, the workers of one core go first."""
        cores = os.cpu_count() or 1
        order = sorted(range(self.workers), key=lambda i: (i % cores, i)) if self.isolation == "pin" \
            else list(range(self.workers))
        victims = order[:self.workers - self.min_workers]
        return [(self.kill_at_s + k * self.kill_every_s, "kill", i) for k, i in enumerate(victims)] + \
               [(self.restart_at_s + k * self.restart_every_s, "restart", i) for k, i in enumerate(victims)]


CGROUP_CPU = Path("/sys/fs/cgroup/cpu")


def cpu_quota_groups(n: int, cores: float) -> list[Path] | None:
    """``n`` cgroups (v1 cpu controller) of ``cores`` CPU each, or None if this machine does not let
    us make them (not root, no cgroup v1 cpu hierarchy)."""
    groups = []
    try:
        for i in range(n):
            g = CGROUP_CPU / f"superserve-fault-{os.getpid()}-w{i}"
            g.mkdir(exist_ok=True)
            groups.append(g)
            (g / "cpu.cfs_period_us").write_text("10000")
            (g / "cpu.cfs_quota_us").write_text(str(int(cores * 10000)))
    except OSError:
        remove_groups(groups)
        return None
    return groups


def remove_groups(groups) -> None:
    for g in groups or ():
        try:
            g.rmdir()
        except OSError:
            pass


def worker_wrapper(isolation: str, i: int, groups) -> tuple[str, ...]:
    """The command prefix that runs worker i in its cgroup or on its core; it execs Triton."""
    if isolation == "quota":
        return ("sh", "-c", f'echo $$ > {groups[i]}/cgroup.procs && exec "$@"', "sh")
    if isolation == "pin":
        return ("taskset", "-c", str(i % (os.cpu_count() or 1)))
    return ()


def _scrape(url: str) -> dict[str, float]:
    return prometheus_text.scrape(url, timeout_s=5)


class Experiment:
    """The workers, the scheduler's metrics URL, and what happened when."""

    def __init__(self, tritons: list[TritonProcess], metrics_url: str):
        self.tritons, self.metrics_url = tritons, metrics_url
        self.up = [True] * len(tritons)
        """Worker i's Triton is running and ready (False from its kill until its restart is ready)."""
        self.events: list[dict] = []
        self.samples: list[tuple[float, int, int, float]] = []
        """(t s, Triton workers up and ready, workers the scheduler has in rotation, the scheduler's
        observed/profiled latency scale)."""
        self._restarts: list[asyncio.Task] = []

    def _event(self, t0: float, what: str, i: int) -> None:
        t = round(time.perf_counter() - t0, 3)
        self.events.append({"t": t, "event": what, "worker": self.tritons[i].cfg.grpc_url})
        print(f"  {t:6.1f} s  {what:13} worker {i} ({self.tritons[i].cfg.grpc_url})", flush=True)

    def kill(self, i: int, t0: float) -> None:
        os.killpg(self.tritons[i].proc.pid, signal.SIGKILL)  # the server and its backend stubs
        self.up[i] = False
        self._event(t0, "killed", i)
        self.tritons[i].stop()  # reap

    async def restart(self, i: int, t0: float) -> None:
        self._event(t0, "restarting", i)
        self.tritons[i] = TritonProcess(self.tritons[i].cfg)  # same ports, same log file (appended)
        await asyncio.to_thread(self.tritons[i].start)
        self.up[i] = True
        self._event(t0, "triton ready", i)

    async def run_schedule(self, schedule, t0: float) -> None:
        for at, what, i in schedule:
            await asyncio.sleep(max(0.0, at - (time.perf_counter() - t0)))
            if what == "kill":
                await asyncio.to_thread(self.kill, i, t0)
            else:
                self._restarts.append(asyncio.create_task(self.restart(i, t0)))
        await asyncio.gather(*self._restarts)

    async def sample(self, t0: float, stop: asyncio.Event, period_s: float = 0.25) -> None:
        while not stop.is_set():
            try:
                m = await asyncio.to_thread(_scrape, self.metrics_url)
                healthy = int(sum(v for k, v in m.items() if k.startswith("sched_worker_healthy{")))
                scale = m.get("sched_profile_latency_scale", float("nan"))
            except OSError:
                healthy, scale = -1, float("nan")
            alive = sum(self.up)
            self.samples.append((round(time.perf_counter() - t0, 3), alive, healthy, scale))
            try:
                await asyncio.wait_for(stop.wait(), period_s)
            except asyncio.TimeoutError:
                pass


async def _drive(exp: Experiment, cfg: FaultConfig, target: Target, trace, slos, images, labels):
    t0 = time.perf_counter()
    stop = asyncio.Event()
    sampler = asyncio.create_task(exp.sample(t0, stop))
    schedule = asyncio.create_task(exp.run_schedule(cfg.schedule(), t0))
    records = await run_open_loop(target, trace.arrivals_s, slos, images, labels)
    await schedule  # every restarted worker is up again before the run ends (or this raises)
    # keep sampling a moment so the last re-admission shows in the timeline
    deadline = time.perf_counter() + 5
    while time.perf_counter() < deadline and (not exp.samples or exp.samples[-1][2] < cfg.workers):
        await asyncio.sleep(0.25)
    stop.set()
    await sampler
    return records


def accounting(records) -> dict:
    """Every request sent, by outcome at the client; ``accounted`` must equal ``sent``."""
    s = summarize(records)
    ok = sum(r.outcome == "ok" for r in records)
    parts = {"ok": ok, "late": s["late"], "inaccurate": s["inaccurate"], "dropped": s["dropped"],
             "rejected": s["rejected"], "errors": s["errors"]}
    return {"sent": len(records), **parts, "accounted": sum(parts.values()),
            "all_accounted": sum(parts.values()) == len(records)}


def phases(records, samples, duration_s: float) -> list[dict]:
    """Attainment and served accuracy over the stretches of send time with the same number of Triton
    processes alive (from the 0.25 s samples)."""
    cuts = [(0.0, samples[0][1] if samples else None)]
    for t, alive, *_ in samples:
        if alive != cuts[-1][1]:
            cuts.append((t, alive))
    out = []
    for k, (start, alive) in enumerate(cuts):
        end = cuts[k + 1][0] if k + 1 < len(cuts) else duration_s
        if start >= duration_s:
            break
        recs = [r for r in records if start <= r.send_s < end]
        if not recs:
            continue
        s = summarize(recs)
        out.append({"from_s": round(start, 2), "to_s": round(min(end, duration_s), 2), "workers_alive": alive,
                    "requests": len(recs), "slo_attainment": s["slo_attainment"],
                    "mean_served_accuracy": s["mean_served_accuracy"], "dropped": s["dropped"],
                    "late": s["late"], "rejected": s["rejected"], "errors": s["errors"]})
    return out


def _isolation_label(config: dict) -> str:
    if config["isolation"] == "quota":
        return f", {config['worker_cpu']:g} CPU per worker"
    return ", workers pinned to cores" if config["isolation"] == "pin" else ", workers share all cores"


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["series"]
    t = np.arange(len(s["attainment"])) * s["window_s"] + s["window_s"] / 2
    fig, ax = plt.subplots(4, 1, figsize=(10, 8), sharex=True)
    ax[0].plot(np.arange(len(result["arrivals_per_s"])) + 0.5, result["arrivals_per_s"], color="black", lw=1)
    ax[0].set(ylabel="arrivals / s")
    ax[1].plot(t, [np.nan if v is None else v for v in s["attainment"]], color="tab:blue", marker=".", lw=1)
    ax[1].set(ylabel="SLO attainment", ylim=(0, 1.05))
    ax[2].plot(t, [np.nan if v is None else v for v in s["served_accuracy"]], color="tab:green", marker=".", lw=1)
    ax[2].set(ylabel="served accuracy")
    w = result["workers"]
    ax[3].step(w["t"], w["alive"], where="post", label="Triton workers up (ready)", color="tab:red")
    ax[3].step(w["t"], w["healthy"], where="post", label="in the scheduler's rotation", color="tab:purple", ls="--")
    ax[3].set(ylabel="workers", xlabel="time (s)", ylim=(0, result["config"]["workers"] + 0.5))
    ax[3].legend(fontsize=7, loc="lower left")
    if w.get("latency_scale"):
        tw = ax[3].twinx()
        tw.plot(w["t"], w["latency_scale"], color="grey", lw=0.8)
        tw.set_ylabel("latency scale (grey)", fontsize=8)
    for e in result["events"]:
        if e["event"] in ("killed", "triton ready"):
            for a in ax:
                a.axvline(e["t"], color="red" if e["event"] == "killed" else "green", lw=0.6, alpha=0.5)
    fig.suptitle(f"{result['config']['workers']} Triton workers, SlackFit, {result['trace']['kind']} "
                 f"{result['trace']['rate_rps']:.0f} req/s, slo {result['slo_ms']:g} ms"
                 + _isolation_label(result["config"]), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run(cfg: FaultConfig, command: str) -> Path:
    profile = Profile.load(find_profile(None))
    images, labels = load_split("test")
    capacity = {"rps": cfg.capacity_rps, "method": "given (--capacity-rps)"} if cfg.capacity_rps else \
        measure_capacity(profile, images, labels)
    rate = cfg.rate_x * capacity["rps"]
    trace = traces.bursty(rate / 2, rate / 2, cfg.cv2, cfg.duration_s, cfg.seed)
    slos = np.full(len(trace.arrivals_s), cfg.slo_ms)
    cores = os.cpu_count() or 1
    isolation = cfg.isolation
    groups = cpu_quota_groups(cfg.workers, cfg.worker_cpu) if isolation == "quota" else None
    if isolation == "quota" and groups is None:
        print(f"cannot create cgroups under {CGROUP_CPU} (needs root and cgroup v1 cpu); pinning workers instead")
        isolation = "pin"
        cfg = dataclasses.replace(cfg, isolation="pin")
    how = {"quota": f"{cfg.worker_cpu:g} CPU each (CFS quota)", "pin": f"pinned over {cores} cores",
           "none": "sharing all cores"}[isolation]
    print(f"trace: bursty CV² {cfg.cv2:g}, {len(trace.arrivals_s)} requests over {cfg.duration_s:.0f} s "
          f"({trace.rate_rps:.0f} req/s = {trace.rate_rps / capacity['rps']:.2f}x capacity), slo_ms {cfg.slo_ms:g}; "
          f"{cfg.workers} workers, {how}", flush=True)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    d = tempfile.mkdtemp(prefix="superserve-fault-")  # Triton and scheduler logs, kept for inspection
    tritons = []
    for i in range(cfg.workers):
        http, grpc, metrics = free_ports(3)
        tritons.append(TritonProcess(TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics,
                                                  models=("supernet",), log_file=f"{d}/triton-{i}.log",
                                                  wrapper=worker_wrapper(isolation, i, groups))))
    try:
        with cf.ThreadPoolExecutor(cfg.workers) as ex:
            list(ex.map(lambda t: t.start(), tritons))
        http, grpc = free_ports(2)
        args = ["--http-port", str(http), "--grpc-port", str(grpc), "--policy", "slackfit",
                "--default-slo-ms", str(cfg.slo_ms), *cfg.serve_args]
        for t in tritons:
            args += ["--worker", t.cfg.grpc_url]
        with serve_subprocess(args, f"{d}/serve.log"):
            target = Target(f"127.0.0.1:{grpc}", metrics_url=f"http://127.0.0.1:{http}/metrics")
            exp = Experiment(tritons, target.metrics_url)
            asyncio.run(_warm(target, images, labels, cfg.warmup))
            before = _scrape(target.metrics_url)
            records = asyncio.run(_drive(exp, cfg, target, trace, slos, images, labels))
            after = _scrape(target.metrics_url)
    finally:
        for t in tritons:  # restarts replace entries of this same list
            t.stop()
        remove_groups(groups)
    view = {k: round(v - before.get(k, 0), 3) for k, v in after.items()
            if k.startswith(("sched_requests_total{", "sched_worker_failures_total", "sched_worker_readmissions",
                             "sched_batch_retries", "sched_request_retries"))}
    summary = summarize(records)
    acct = accounting(records)
    sched_answered = sum(v for k, v in view.items() if k.startswith("sched_requests_total{"))
    result = {**results.header(command),
              "config": {"workers": cfg.workers, "min_workers": cfg.min_workers, "isolation": isolation,
                         "worker_cpu": cfg.worker_cpu if isolation == "quota" else None, "cores": cores,
                         "schedule": [{"t": t, "action": a, "worker": i} for t, a, i in cfg.schedule()]},
              "trace": trace.describe(), "slo_ms": cfg.slo_ms, "capacity": capacity, "rate_x": cfg.rate_x,
              "summary": summary, "accounting": acct,
              "logs": d, "serve_args": list(cfg.serve_args), "scheduler_view": dict(view, answered=sched_answered),
              "phases": phases(records, exp.samples, cfg.duration_s),
              "events": exp.events,
              "workers": {"t": [s[0] for s in exp.samples], "alive": [s[1] for s in exp.samples],
                          "healthy": [s[2] for s in exp.samples], "latency_scale": [s[3] for s in exp.samples]},
              "series": series(records, cfg.duration_s), "arrivals_per_s": arrival_series(trace, 1.0)}
    path = results.write(result, out_dir / f"{cfg.name}.json")
    png = plot(result, out_dir / f"{cfg.name}.png")
    print(f"overall: attainment {summary['slo_attainment']:.3f}  "
          f"served acc {summary['mean_served_accuracy'] or 0:.4f}  "
          f"accounting {acct}  scheduler answered {sched_answered:.0f}")
    for p in result["phases"]:
        print(f"  {p['from_s']:5.1f}-{p['to_s']:5.1f} s  {p['workers_alive']} alive  {p['requests']:6d} req  "
              f"attainment {p['slo_attainment']:.3f}  served acc {p['mean_served_accuracy'] or 0:.4f}  "
              f"dropped {p['dropped']}  late {p['late']}  rejected {p['rejected']}  errors {p['errors']}")
    print(f"plot {png}\nwrote {path}\nlogs {d}")
    return path


def main(args) -> int:
    cfg = FaultConfig(name=args.name, workers=args.workers, min_workers=args.min_workers, duration_s=args.duration,
                      kill_at_s=args.kill_at, kill_every_s=args.kill_every, restart_at_s=args.restart_at,
                      restart_every_s=args.restart_every, rate_x=args.rate, capacity_rps=args.capacity_rps,
                      cv2=args.cv2, slo_ms=args.slo_ms, seed=args.seed, isolation=args.isolation,
                      worker_cpu=args.worker_cpu,
                      serve_args=tuple(shlex.split(args.serve_args or "")),
                      out_dir=Path(args.out_dir) if args.out_dir else paths.repo_root() / "results")
    run(cfg, command_line())
    return 0

