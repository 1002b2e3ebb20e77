"""``superserve bench-overload``: how fast overload is shed and how the accepted requests fare (issue 12 item 3).

Against a fresh ``superserve serve`` (embedded Triton): an open-loop Poisson trace at ``--overload-x`` (3) times
the machine's capacity for ``--overload-s``, then ``--recover-x`` (0.7) times it for ``--recover-s``; every
request one Fashion-MNIST test image over gRPC with ``slo_ms``. With ``--compare`` the same trace runs three times,
one after the other: admission shedding as it is by default (the peak-throughput bound), with the measured drain
rate (``serve --shed-drain measured``), and with ``serve --no-admission-shedding``.

Per phase, measured at the client: refusal latency p50/p99 (send to the 503 or 504), the attainment of the
accepted requests (answered in time / sent minus refused with 503), overall attainment; over time (every
``--scrape-s``): the scheduler's queue depth from /metrics, the sidecar's RSS and the machine's load average;
the recovery time (first second after the overload whose requests all got in-time answers at >= 0.95 while
the queue was near empty); where the refusal time went (``where_time_went``). Writes ``results/<name>.json``
and ``results/<name>.png``.
"""
from __future__ import annotations

import asyncio
import os
import re
import shlex
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from superserve.client import priority, prometheus_text, results, traces
from superserve.client.loadgen import Record, Target, run_open_loop
from superserve.client.soak_bench import process_stats
from superserve.scheduler import paths
from superserve.scheduler.provenance import command_line
from superserve.scheduler.ports import free_ports
from superserve.scheduler.sidecar.server import find_profile, serve_subprocess

ARMS = {"shedding": (), "shedding-measured": ("--shed-drain", "measured"),
        "no-shedding": ("--no-admission-shedding",)}
"""shedding: serve's default (the peak-throughput bound); shedding-measured: the measured drain rate
(``--shed-drain measured``); no-shedding: queue everything, drop with 504 when infeasible."""
NEAR_EMPTY = 5
"""Queue depth (requests) that counts as drained for the recovery time."""


@dataclass(frozen=True)
class OverloadConfig:
    name: str = "overload"
    capacity_rps: float | None = None
    """Skip the capacity measurement (bench.measure_capacity) and use this (requests/s)."""
    overload_x: float = 3.0
    recover_x: float = 0.7
    overload_s: float = 60.0
    recover_s: float = 30.0
    slo_ms: float = 100.0
    seed: int = 0
    arms: tuple[str, ...] = ("shedding",)
    """Which of ARMS to run, in order, on the same trace."""
    scrape_s: float = 0.5
    """Seconds between /metrics and /proc samples."""
    warmup: int = 100
    serve_args: tuple[str, ...] = ()
    out_dir: Path = field(default_factory=lambda: paths.repo_root() / "results")
    client_nice: int | None = None
    """Niceness of the load generator while it measures (client/priority.py; e.g. -10 with root): its own
    starvation at 3x otherwise counts as refusal latency."""

    def __post_init__(self):
        if min(self.overload_x, self.recover_x, self.overload_s, self.recover_s, self.slo_ms, self.scrape_s) <= 0:
            raise ValueError(f"rates, durations, slo_ms and scrape_s must be > 0, got {self.overload_x}, "
                             f"{self.recover_x}, {self.overload_s}, {self.recover_s}, {self.slo_ms}, {self.scrape_s}")
        if self.capacity_rps is not None and self.capacity_rps <= 0:
            raise ValueError(f"capacity_rps must be > 0, got {self.capacity_rps}")
        if not self.arms or any(a not in ARMS for a in self.arms):
            raise ValueError(f"arms must be some of {list(ARMS)}, got {self.arms}")


def make_trace(cfg: OverloadConfig, capacity_rps: float) -> np.ndarray:
    """Arrival times (s): Poisson at overload_x * capacity, then at recover_x * capacity."""
    hot = traces.poisson(cfg.overload_x * capacity_rps, cfg.overload_s, cfg.seed).arrivals_s
    cool = traces.poisson(cfg.recover_x * capacity_rps, cfg.recover_s, cfg.seed + 1).arrivals_s
    return np.concatenate([hot, cool + cfg.overload_s])


# -- what the run is judged by ---------------------------------------------------------------------
def _pct(values, q) -> float | None:
    return round(float(np.percentile(values, q)), 2) if len(values) else None


def phase_summary(records: list[Record]) -> dict:
    """Outcomes, refusal latency and attainment of the requests sent in one phase."""
    by = Counter(r.outcome for r in records)
    n = len(records)
    refused = [r.latency_ms for r in records if r.outcome in ("rejected", "dropped") and r.latency_ms is not None]
    rejected = [r.latency_ms for r in records if r.outcome == "rejected" and r.latency_ms is not None]
    dropped = [r.latency_ms for r in records if r.outcome == "dropped" and r.latency_ms is not None]
    answered = [r.latency_ms for r in records if r.outcome in ("ok", "late")]
    accepted = n - by["rejected"]
    return {"sent": n, **{k: by[k] for k in ("ok", "late", "inaccurate", "dropped", "rejected", "error")},
            "accounted": sum(by.values()) == n,
            "accepted": accepted,
            "accepted_attainment": round(by["ok"] / accepted, 4) if accepted else None,
            "attainment": round(by["ok"] / n, 4) if n else None,
            "refusal_p50_ms": _pct(refused, 50), "refusal_p99_ms": _pct(refused, 99),
            "rejected_503_p50_ms": _pct(rejected, 50), "rejected_503_p99_ms": _pct(rejected, 99),
            "dropped_504_p50_ms": _pct(dropped, 50), "dropped_504_p99_ms": _pct(dropped, 99),
            "answered_p50_ms": _pct(answered, 50), "answered_p99_ms": _pct(answered, 99),
            "send_lag_p99_ms": _pct([r.lag_ms for r in records], 99)}


def per_second(records: list[Record], duration_s: float) -> dict:
    n = int(np.ceil(duration_s))
    sent, ok, rej, drop = (np.zeros(n, int) for _ in range(4))
    for r in records:
        i = min(n - 1, int(r.send_s))
        sent[i] += 1
        ok[i] += r.outcome == "ok"
        rej[i] += r.outcome == "rejected"
        drop[i] += r.outcome == "dropped"
    with np.errstate(invalid="ignore", divide="ignore"):
        att = ok / sent
    return {"sent": sent.tolist(), "ok": ok.tolist(), "rejected": rej.tolist(), "dropped": drop.tolist(),
            "attainment": [None if not np.isfinite(a) else round(float(a), 4) for a in att]}


def recovery_s(series: dict, samples: list[dict], overload_s: float) -> float | None:
    """Seconds from the end of the overload to the first second whose requests got in-time answers at
    >= 0.95 and during which the queue depth stayed at or below NEAR_EMPTY; None if that never happens."""
    for i in range(int(overload_s), len(series["sent"])):
        att = series["attainment"][i]
        depths = [s["queue_depth"] for s in samples if i <= s["t_s"] < i + 1 and s["queue_depth"] is not None]
        if att is not None and att >= 0.95 and depths and max(depths) <= NEAR_EMPTY:
            return round(i - overload_s, 1)
    return None


# -- one arm: serve, warm, load, scrape ------------------------------------------------------------
SCRAPED = ("sched_requests_total{", "sched_queue_depth", "sched_shed_total")
"""The metric families sampled during a run."""


def _scrape(url: str) -> dict[str, float]:
    """The counters the bench follows, and ``rtt_ms``: how long the sidecar took to answer this GET (its event
    loop's delay plus the request, as a client sees it)."""
    t = time.perf_counter()
    out = prometheus_text.scrape(url, SCRAPED, timeout_s=5)
    out["rtt_ms"] = round((time.perf_counter() - t) * 1000, 2)
    return out


QUEUED_MS = re.compile(r"dropped after ([\d.]+) ms in the queue")


def where_time_went(records: list[Record], samples: list[dict], overload_s: float) -> dict:
    """Decomposes the refusal latency of the overload phase (issue 12: is it the rule, the sidecar's event loop or
    the load generator?): for each 504 the time it waited in the scheduler's queue (from its message) against
    the client's latency, so the rest is outside the engine (front ends, event loops, the generator); the
    generator's own send lag; the sidecar's answer time to /metrics; and the rate the scheduler served at."""
    hot = [r for r in records if r.send_s < overload_s]
    queued, outside = [], []
    for r in hot:
        m = QUEUED_MS.search(r.message) if r.outcome == "dropped" else None
        if m and r.latency_ms is not None:
            queued.append(float(m.group(1)))
            outside.append(r.latency_ms - float(m.group(1)))
    rtt = [x["metrics_rtt_ms"] for x in samples if x.get("metrics_rtt_ms") is not None and x["t_s"] < overload_s]
    served = [(x["t_s"], x["served_total"]) for x in samples if x.get("served_total") is not None]
    hot_served = [(t, v) for t, v in served if 2.0 <= t < overload_s]  # past the first seconds of the ramp
    rate = ((hot_served[-1][1] - hot_served[0][1]) / ((hot_served[-1][0] - hot_served[0][0]) * 1000)
            if len(hot_served) >= 2 and hot_served[-1][0] > hot_served[0][0] else None)
    return {"dropped_504_with_queue_time": len(queued),
            "dropped_504_queue_ms_p50": _pct(queued, 50), "dropped_504_queue_ms_p99": _pct(queued, 99),
            "dropped_504_outside_engine_ms_p50": _pct(outside, 50),
            "dropped_504_outside_engine_ms_p99": _pct(outside, 99),
            "send_lag_ms_p50": _pct([r.lag_ms for r in hot], 50), "send_lag_ms_p99": _pct([r.lag_ms for r in hot], 99),
            "sidecar_metrics_rtt_ms_p50": _pct(rtt, 50), "sidecar_metrics_rtt_ms_p99": _pct(rtt, 99),
            "served_rows_per_ms": round(rate, 3) if rate is not None else None}


async def _load(cfg: OverloadConfig, target: Target, arrivals, images, labels, pid: int):
    """Replay ``arrivals`` while sampling /metrics, the sidecar's RSS and the load average."""
    samples: list[dict] = []
    start = time.perf_counter()

    async def sampler():
        while True:
            t = time.perf_counter() - start
            try:
                m = await asyncio.to_thread(_scrape, target.metrics_url)
            except OSError:
                m = {}
            rtt = m.pop("rtt_ms", None)
            st = process_stats(pid) or {}
            served = sum(v for k, v in m.items() if k in ('sched_requests_total{outcome="ok"}',
                                                          'sched_requests_total{outcome="late"}'))
            samples.append({"t_s": round(t, 2), "queue_depth": m.get("sched_queue_depth"),
                            "shed_total": m.get("sched_shed_total"), "served_total": served if m else None,
                            "metrics_rtt_ms": rtt, "sidecar_rss_mib": st.get("rss_mib"),
                            "load_avg_1m": round(os.getloadavg()[0], 2)})
            await asyncio.sleep(cfg.scrape_s)

    task = asyncio.create_task(sampler())
    try:
        records = await run_open_loop(target, arrivals, np.full(len(arrivals), cfg.slo_ms), images, labels)
        await asyncio.sleep(cfg.scrape_s)  # one sample after the last answer
    finally:
        task.cancel()
    return records, samples


def run_arm(cfg: OverloadConfig, arm: str, arrivals: np.ndarray, images, labels) -> dict:
    d = Path(tempfile.mkdtemp(prefix=f"superserve-overload-{arm}-"))  # logs, kept for inspection
    http, grpc, th, tg, tm = free_ports(5)
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--triton-http-port", str(th),
            "--triton-grpc-port", str(tg), "--triton-metrics-port", str(tm), "--profile", str(find_profile(None)),
            "--triton-log-file", str(d / "triton.log"), *ARMS[arm], *cfg.serve_args]
    metrics = f"http://127.0.0.1:{http}/metrics"
    target = Target(f"127.0.0.1:{grpc}", metrics_url=metrics)
    print(f"arm {arm}: {len(arrivals)} requests over {cfg.overload_s + cfg.recover_s:g} s; logs in {d}", flush=True)
    with serve_subprocess(args, str(d / "serve.log")) as proc:
        n = cfg.warmup
        if n:
            asyncio.run(run_open_loop(target, np.linspace(0, n / 100, n), np.full(n, 10_000.0), images, labels))
        before, load0 = _scrape(metrics), os.getloadavg()
        rss0 = (process_stats(proc.pid) or {}).get("rss_mib")
        with priority.client_nice(cfg.client_nice) as applied:
            records, samples = asyncio.run(_load(cfg, target, arrivals, images, labels, proc.pid))
        print(f"arm {arm}: load generator niceness {applied if applied is not None else 'unchanged'}", flush=True)
        after, load1 = _scrape(metrics), os.getloadavg()
        rss1 = (process_stats(proc.pid) or {}).get("rss_mib")
    hot = [r for r in records if r.send_s < cfg.overload_s]
    cool = [r for r in records if r.send_s >= cfg.overload_s]
    series = per_second(records, cfg.overload_s + cfg.recover_s)
    rss = [s["sidecar_rss_mib"] for s in samples if s["sidecar_rss_mib"] is not None]
    depth = [s["queue_depth"] for s in samples if s["queue_depth"] is not None]
    view = {k.replace("sched_requests_total{outcome=", "").strip('"}'): v - before.get(k, 0)
            for k, v in after.items() if k.startswith("sched_requests_total")}
    shed = after.get("sched_shed_total", 0) - before.get("sched_shed_total", 0)
    return {"serve_args": [*ARMS[arm], *cfg.serve_args],
            "overload": phase_summary(hot), "recover": phase_summary(cool), "all": phase_summary(records),
            "recovery_s": recovery_s(series, samples, cfg.overload_s),
            "queue_depth_max": max(depth) if depth else None,
            "queue_depth_mean_overload": round(float(np.mean([s["queue_depth"] for s in samples
                                                              if s["queue_depth"] is not None
                                                              and s["t_s"] < cfg.overload_s] or [0])), 1),
            "sidecar_rss_mib": {"start": rss0, "max": max(rss) if rss else None, "end": rss1},
            "load_avg": {"start": [round(x, 2) for x in load0], "end": [round(x, 2) for x in load1]},
            "scheduler_view": view, "scheduler_shed": shed,
            "where_time_went": where_time_went(records, samples, cfg.overload_s),
            "per_second": series, "samples": samples,
            "refusal_examples": _examples(records)}


def _examples(records: list[Record]) -> dict:
    """Per refused or failed outcome, its most common messages (numbers stripped) with their counts."""
    import re

    out: dict[str, Counter] = {}
    for r in records:
        if r.outcome in ("rejected", "dropped", "error"):
            out.setdefault(r.outcome, Counter())[f"{r.status}: " + re.sub(r"[\d.]+", "N", r.message[:100])] += 1
    return {k: dict(c.most_common(5)) for k, c in out.items()}


# -- the run ---------------------------------------------------------------------------------------
def run(cfg: OverloadConfig, command: str) -> Path:
    from superserve.client.bench import measure_capacity
    from superserve.scheduler.core.profile import Profile
    from superserve.scheduler.core.shedding import peak_rows_per_ms
    from superserve.supernet.data import load_split

    images, labels = load_split("test")
    images, labels = images[:2000], labels[:2000]
    capacity = {"rps": cfg.capacity_rps, "method": "given (--capacity-rps)"} if cfg.capacity_rps else \
        measure_capacity(Profile.load(find_profile(None)), images, labels)
    arrivals = make_trace(cfg, capacity["rps"])
    print(f"overload: {cfg.overload_x:g}x capacity ({capacity['rps']:.0f} req/s) for {cfg.overload_s:g} s, then "
          f"{cfg.recover_x:g}x for {cfg.recover_s:g} s, slo_ms {cfg.slo_ms:g}; arms {', '.join(cfg.arms)}", flush=True)
    arms = {}
    for arm in cfg.arms:
        arms[arm] = run_arm(cfg, arm, arrivals, images, labels)
        o, r = arms[arm]["overload"], arms[arm]["recover"]
        print(f"  {arm}: overload refusal p50 {o['refusal_p50_ms']} p99 {o['refusal_p99_ms']} ms, accepted "
              f"attainment {o['accepted_attainment']}; recover attainment {r['attainment']}; recovery "
              f"{arms[arm]['recovery_s']} s; queue max {arms[arm]['queue_depth_max']}", flush=True)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {**results.header(command),
              "cores": len(os.sched_getaffinity(0)),
              "note": "the load generator, the sidecar and Triton share these cores (and other users' jobs: "
                      "see load_avg per arm and in samples)",
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
              "capacity": capacity,
              "peak_rows_per_ms": round(peak_rows_per_ms(Profile.load(find_profile(None))), 3),
              "peak_note": "the drain rate the peak rule assumes per worker (the profile's fastest point, before "
                           "the latency model scales it); compare where_time_went.served_rows_per_ms, what the "
                           "scheduler served at",
              "trace": {"kind": "poisson, two phases", "seed": cfg.seed, "requests": len(arrivals),
                        "overload_rps": round(cfg.overload_x * capacity["rps"], 1),
                        "recover_rps": round(cfg.recover_x * capacity["rps"], 1)},
              "definitions": {
                  "refusal_ms": "client send to the 503 (rejected) or 504 (dropped) answer",
                  "accepted_attainment": "answered within slo_ms / (sent - rejected with 503)",
                  "attainment": "answered within slo_ms / sent",
                  "recovery_s": f"from the end of the overload to the first second with attainment >= 0.95 and "
                                f"queue depth <= {NEAR_EMPTY} throughout"},
              "goals": {"overload_refusal_p99_ms_below": 20.0, "overload_accepted_attainment_at_least": 0.95},
              "arms": arms}
    path = results.write(result, out_dir / f"{cfg.name}.json")
    plot(result, out_dir / f"{cfg.name}.png")
    print(f"wrote {path}")
    return path


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    colors = {"shedding": "tab:blue", "shedding-peak": "tab:green", "shedding-measured": "tab:green",
              "no-shedding": "tab:red"}
    for k, (arm, res) in enumerate(result["arms"].items()):
        s, c = res["per_second"], colors.get(arm)
        t = np.arange(len(s["sent"])) + 0.5
        if k == 0:
            ax[0].plot(t, s["sent"], color="black", lw=0.8, label="sent")
        ax[0].plot(t, s["ok"], color=c, label=f"{arm}: in time")
        ax[0].plot(t, np.array(s["rejected"]) + np.array(s["dropped"]), color=c, ls=":", label=f"{arm}: refused")
        ax[1].plot(t, [a if a is not None else np.nan for a in s["attainment"]], color=c, label=arm)
        samp = res["samples"]
        ax[2].plot([x["t_s"] for x in samp], [x["queue_depth"] if x["queue_depth"] is not None else np.nan
                                              for x in samp], color=c, label=arm)
    end = result["config"]["overload_s"]
    for a in ax:
        a.axvline(end, color="gray", lw=0.8)
        a.legend(fontsize=7, loc="upper right")
    ax[0].set(ylabel="requests / s")
    ax[1].set(ylabel="attainment (of sent)", ylim=(0, 1.05))
    ax[2].set(ylabel="queue depth", xlabel="s (overload, then recovery after the line)")
    fig.suptitle(f"{result['config']['overload_x']}x then {result['config']['recover_x']}x capacity "
                 f"({result['capacity']['rps']:.0f} req/s), slo_ms {result['config']['slo_ms']:g}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(args) -> int:
    arms = tuple(ARMS) if args.compare else ("no-shedding",) if args.no_admission_shedding else ("shedding",)
    cfg = OverloadConfig(name=args.name, capacity_rps=args.capacity_rps, overload_x=args.overload_x,
                         recover_x=args.recover_x, overload_s=args.overload_s, recover_s=args.recover_s,
                         slo_ms=args.slo_ms, seed=args.seed, arms=arms, scrape_s=args.scrape_s, warmup=args.warmup,
                         serve_args=tuple(shlex.split(args.serve_args or "")),
                         client_nice=getattr(args, "client_nice", None),
                         out_dir=Path(args.out_dir) if args.out_dir else paths.repo_root() / "results")
    run(cfg, command_line())
    return 0
