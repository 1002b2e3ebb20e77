"""``superserve bench-soak``: a long open-loop run against a fresh ``superserve serve`` (embedded Triton), watching
the processes rather than the attainment (issue 12): resident memory, open descriptors and threads of the
sidecar, of tritonserver and of its Python backend stubs, sampled every ``--sample-s`` from /proc, at start
(after a warm-up) and at the end, with every request's outcome counted (over HTTP and gRPC alike) and the
log sizes. 30 minutes by default (not run in CI; ``--duration 60`` for a quick check). Writes
``results/<name>.json``.

Load: a bursty trace (Poisson base + Gamma stream of CV² ``--cv2``) at ``--rps`` on average, each request one
Fashion-MNIST test image with ``slo_ms``; a share ``--http-share`` of them over HTTP, the rest over gRPC.
Sent in one-minute segments whose tails overlap, so memory here stays flat however long the run.
"""
from __future__ import annotations

import asyncio
import os
import shlex
import signal
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from superserve.client import prometheus_text, results, traces
from superserve.scheduler import paths
from superserve.scheduler.provenance import command_line
from superserve.scheduler.ports import free_ports
from superserve.scheduler.sidecar.server import find_profile, serve_subprocess
from superserve.supernet.data import load_split

SEGMENT_S = 60.0


@dataclass(frozen=True)
class SoakConfig:
    name: str = "soak"
    duration_s: float = 1800.0
    rps: float = 150.0
    """Mean request rate (requests/s)."""
    cv2: float = 4.0
    """Burstiness of the trace's Gamma stream (half the rate; the other half is Poisson)."""
    slo_ms: float = 100.0
    http_share: float = 0.5
    """Share of requests sent over HTTP (the rest over gRPC)."""
    sample_s: float = 10.0
    seed: int = 0
    warmup: int = 100
    serve_args: tuple[str, ...] = ()
    out_dir: Path = field(default_factory=lambda: paths.repo_root() / "results")

    def __post_init__(self):
        if self.duration_s <= 0 or self.rps <= 0 or self.cv2 <= 0 or self.slo_ms <= 0 or self.sample_s <= 0:
            raise ValueError(f"duration_s, rps, cv2, slo_ms and sample_s must be > 0, got {self.duration_s}, "
                             f"{self.rps}, {self.cv2}, {self.slo_ms}, {self.sample_s}")
        if not 0 <= self.http_share <= 1:
            raise ValueError(f"http_share must be in [0, 1], got {self.http_share}")


# -- the processes ---------------------------------------------------------------------------------
def children_of(ppid: int) -> list[tuple[int, str]]:
    """(pid, command name) of every process whose parent is ``ppid``, read from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if int(rest[1]) == ppid:
                out.append((int(d.name), comm))
    return out


def processes(sidecar_pid: int) -> dict[str, int]:
    """{role: pid}: ``sidecar``, ``tritonserver`` (``tritonserver-i`` with several), ``stub-<pid>`` per
    Python backend stub."""
    roles = {"sidecar": sidecar_pid}
    servers = [p for p, comm in children_of(sidecar_pid) if comm == "tritonserver"]
    for i, pid in enumerate(sorted(servers)):
        roles["tritonserver" if len(servers) == 1 else f"tritonserver-{i}"] = pid
        for j, (stub, _) in enumerate(sorted(children_of(pid))):
            roles[f"stub-{i}.{j}" if len(servers) > 1 else f"stub-{j}"] = stub
    return roles


def process_stats(pid: int) -> dict | None:
    """RSS (MiB), open descriptors and threads of ``pid`` from /proc; None if it is gone."""
    try:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        return None
    return {"rss_mib": round(int(status["VmRSS"].split()[0]) / 1024, 2), "fds": fds,
            "threads": int(status["Threads"])}


def sample(roles: dict[str, int], t: float) -> dict:
    return {"t_s": round(t, 1), "processes": {r: process_stats(p) for r, p in roles.items()}}


# -- the load --------------------------------------------------------------------------------------
class Tally:
    """Outcomes and latencies of the requests of one segment (and totals)."""

    def __init__(self):
        self.outcomes: Counter[str] = Counter()
        self.latencies_ms: list[float] = []
        self.examples: dict[str, str] = {}

    def add(self, outcome: str, latency_ms: float | None, message: str = "") -> None:
        self.outcomes[outcome] += 1
        if latency_ms is not None and outcome in ("ok", "late"):
            self.latencies_ms.append(latency_ms)
        if message and outcome not in ("ok", "late") and len(self.examples) < 20:
            self.examples.setdefault(f"{outcome}: {message[:80]}", message[:300])


def _outcome(status: str, message: str) -> str:
    if status in ("DEADLINE_EXCEEDED", "504"):
        return "dropped"
    if status in ("UNAVAILABLE", "503"):
        return "rejected"
    if status in ("INVALID_ARGUMENT", "400"):
        return "invalid"
    return "error"


async def _one(clients, proto: str, x: np.ndarray, slo_ms: float, tally: Tally) -> None:
    t = time.perf_counter()
    try:
        if proto == "http":
            inp = httpclient.InferInput("INPUT", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            # No timeout= here: tritonclient.http sends it to the server as Triton's 'timeout' parameter (an integer
            # in microseconds), not as a client-side limit; the client's own limit is conn_timeout below.
            await clients["http"].infer("supernet", [inp], parameters={"slo_ms": slo_ms})
        else:
            inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            await clients["grpc"].infer("supernet", [inp], parameters={"slo_ms": slo_ms},
                                        client_timeout=slo_ms / 1000 + 30)
    except InferenceServerException as e:
        status = str(e.status() or "").replace("StatusCode.", "")
        tally.add(_outcome(status, e.message() or ""), None, f"{proto} {status} {e.message()}")
        return
    except Exception as e:  # noqa: BLE001 - a transport failure is an outcome to count, not a crash
        tally.add("error", None, f"{proto} {type(e).__name__}: {e}")
        return
    ms = (time.perf_counter() - t) * 1000
    tally.add("late" if ms > slo_ms else "ok", ms)


async def _segment(clients, arrivals: np.ndarray, protos: np.ndarray, images: np.ndarray, offset: int,
                   slo_ms: float, start: float) -> Tally:
    tally, tasks = Tally(), []
    for i, (t, proto) in enumerate(zip(arrivals, protos)):
        delay = t - (time.perf_counter() - start)
        if delay > 0:
            await asyncio.sleep(delay)
        k = (offset + i) % len(images)
        tasks.append(asyncio.create_task(_one(clients, proto, images[k:k + 1], slo_ms, tally)))
    await asyncio.gather(*tasks)
    return tally


def _summary(tally: Tally, t0: float, t1: float) -> dict:
    lat = np.array(tally.latencies_ms)
    return {"t0_s": round(t0, 1), "t1_s": round(t1, 1), "requests": sum(tally.outcomes.values()),
            **{k: tally.outcomes.get(k, 0) for k in ("ok", "late", "dropped", "rejected", "invalid", "error")},
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None}


async def run_load(cfg: SoakConfig, http_url: str, grpc_url: str, on_sample, images: np.ndarray) -> tuple[list, Tally]:
    trace = traces.bursty(cfg.rps / 2, cfg.rps / 2, cfg.cv2, cfg.duration_s, cfg.seed)
    arrivals = trace.arrivals_s
    protos = np.where(np.random.default_rng(cfg.seed + 1).random(len(arrivals)) < cfg.http_share, "http", "grpc")
    clients = {"http": httpaio.InferenceServerClient(http_url, conn_limit=256, conn_timeout=60.0),
               "grpc": grpcaio.InferenceServerClient(grpc_url)}
    total, segments = Tally(), []
    try:
        start = time.perf_counter()

        async def sampler():
            while True:
                on_sample(time.perf_counter() - start)
                await asyncio.sleep(cfg.sample_s)

        sampling = asyncio.create_task(sampler())
        pending = []
        n_seg = int(np.ceil(cfg.duration_s / SEGMENT_S))
        for s in range(n_seg):
            lo, hi = s * SEGMENT_S, min((s + 1) * SEGMENT_S, cfg.duration_s)
            idx = np.nonzero((arrivals >= lo) & (arrivals < hi))[0]
            seg_start = start  # arrival times are from the run's start
            pending.append((lo, hi, asyncio.create_task(
                _segment(clients, arrivals[idx], protos[idx], images, int(idx[0]) if len(idx) else 0, cfg.slo_ms,
                         seg_start))))
            await asyncio.sleep(max(0.0, hi - (time.perf_counter() - start)))
            while pending and pending[0][2].done():
                lo0, hi0, task = pending.pop(0)
                tally = task.result()
                segments.append(_summary(tally, lo0, hi0))
                _merge(total, tally)
                print(f"  {hi0:6.0f} s  {segments[-1]}", flush=True)
        for lo0, hi0, task in pending:
            tally = await task
            segments.append(_summary(tally, lo0, hi0))
            _merge(total, tally)
            print(f"  {hi0:6.0f} s  {segments[-1]}", flush=True)
        sampling.cancel()
    finally:
        await clients["http"].close()
        await clients["grpc"].close()
    return segments, total


def _merge(total: Tally, tally: Tally) -> None:
    total.outcomes.update(tally.outcomes)
    total.latencies_ms += tally.latencies_ms
    for k, v in tally.examples.items():
        if len(total.examples) < 20:
            total.examples.setdefault(k, v)


def _scrape(http_url: str) -> dict[str, float]:
    return prometheus_text.scrape(http_url, ("sched_requests_total{", "sched_queue_depth"))


def _process_report(samples: list[dict]) -> dict:
    """Per role: the first and last sample, the peak RSS and the growth from start to end."""
    out = {}
    roles = {r for s in samples for r in s["processes"]}
    for r in sorted(roles):
        seen = [(s["t_s"], s["processes"][r]) for s in samples if s["processes"].get(r)]
        if not seen:
            continue
        (t0, first), (t1, last) = seen[0], seen[-1]
        out[r] = {"start": dict(first, t_s=t0), "end": dict(last, t_s=t1),
                  "max_rss_mib": max(p["rss_mib"] for _, p in seen),
                  "rss_growth_ratio": round(last["rss_mib"] / first["rss_mib"], 4) if first["rss_mib"] else None,
                  "fds_delta": last["fds"] - first["fds"], "threads_delta": last["threads"] - first["threads"]}
    return out


def run(cfg: SoakConfig, command: str) -> Path:
    images, _ = load_split("test")
    images = images[:2000]
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="superserve-soak-"))  # logs, kept for inspection
    http, grpc, th, tg, tm = free_ports(5)
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--triton-http-port", str(th),
            "--triton-grpc-port", str(tg), "--triton-metrics-port", str(tm), "--profile", str(find_profile(None)),
            "--triton-log-file", str(d / "triton.log"), *cfg.serve_args]
    http_url, grpc_url = f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
    print(f"soak: {cfg.duration_s:.0f} s at {cfg.rps:g} req/s (bursty CV² {cfg.cv2:g}), slo_ms {cfg.slo_ms:g}, "
          f"{cfg.http_share:.0%} HTTP; logs in {d}", flush=True)
    samples: list[dict] = []
    with serve_subprocess(args, str(d / "serve.log")) as proc:
        roles = processes(proc.pid)
        warm = SoakConfig(duration_s=max(1.0, cfg.warmup / 50), rps=50, slo_ms=10_000, sample_s=3600,
                          http_share=cfg.http_share, warmup=0)
        asyncio.run(run_load(warm, http_url, grpc_url, lambda t: None, images))
        before = _scrape(http_url)
        t_start = time.monotonic()

        def on_sample(t):
            roles.update(processes(proc.pid))  # a restarted stub or server shows up under its role
            samples.append(sample(roles, t))

        segments, total = asyncio.run(run_load(cfg, http_url, grpc_url, on_sample, images))
        samples.append(sample(roles, time.monotonic() - t_start))
        after = _scrape(http_url)
        proc.send_signal(signal.SIGINT)  # SIGINT: drain and stop, as serve_subprocess would; its exit code is recorded
        exit_code = proc.wait(timeout=60)
    result = {**results.header(command),
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
              "summary": _summary(total, 0.0, cfg.duration_s),
              "error_examples": sorted(total.examples.values()),
              "scheduler_view": {k.replace("sched_requests_total{outcome=", "").strip('"}'): v - before.get(k, 0)
                                 for k, v in after.items() if k.startswith("sched_requests_total")},
              "processes": _process_report(samples),
              "logs_bytes": {"serve": (d / "serve.log").stat().st_size, "triton": (d / "triton.log").stat().st_size},
              "serve_exit_code": exit_code, "segments": segments, "samples": samples}
    path = results.write(result, out_dir / f"{cfg.name}.json")
    print(f"requests {result['summary']['requests']}: " + ", ".join(
        f"{k} {result['summary'][k]}" for k in ("ok", "late", "dropped", "rejected", "invalid", "error")))
    for role, p in result["processes"].items():
        print(f"  {role:14} RSS {p['start']['rss_mib']:8.1f} -> {p['end']['rss_mib']:8.1f} MiB "
              f"(x{p['rss_growth_ratio']}, peak {p['max_rss_mib']:.1f})  fds {p['start']['fds']} -> {p['end']['fds']}  "
              f"threads {p['start']['threads']} -> {p['end']['threads']}")
    print(f"serve exited {exit_code}; logs {result['logs_bytes']}; wrote {path}")
    return path


def main(args) -> int:
    cfg = SoakConfig(name=args.name, duration_s=args.duration, rps=args.rps, cv2=args.cv2, slo_ms=args.slo_ms,
                     http_share=args.http_share, sample_s=args.sample_s, seed=args.seed,
                     serve_args=tuple(shlex.split(args.serve_args or "")),
                     out_dir=Path(args.out_dir) if args.out_dir else paths.repo_root() / "results")
    run(cfg, command_line())
    return 0
