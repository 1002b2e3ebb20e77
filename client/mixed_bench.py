"""``superserve bench --models supernet,vit``: several supernets under one bursty trace (issue 17, item 5).

Each request of one open-loop bursty trace goes to one model (a seeded equal share), each model with its own SLO
(``--slo-ms supernet=50,vit=100``). Policies, each on fresh servers and the same arrivals, images and SLOs:

- ``slackfit``: one ``superserve serve --models ...`` (one EDF queue over both models, batches of one model,
  SlackFit choosing the earliest deadline's model's subnet and batch) in front of its own Triton;
- ``triton-fixed:<role>``: one Triton holding, per model, a model pinned to that model's ``<role>`` subnet
  (``smallest``, ``middle``, ``largest`` of its profile), each batched by Triton's dynamic batcher tuned for that
  model's SLO (client/triton_fixed.py): how one would serve both without SuperServe.

The rate is relative to the mixed capacity: each model's largest subnet's best throughput through the whole stack
(measured as ``superserve bench`` does) combined for the share of traffic each gets. Writes
``results/<name>.json`` (docs/design.md format, with a summary per model under ``models``)."""
from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from superserve.client import results, traces, triton_fixed
from superserve.client.bench import _closed_loop, _warm
from superserve.client.loadgen import Target, run_open_loop
from superserve.scheduler import paths
from superserve.scheduler.ports import free_ports
from superserve.scheduler.core.profile import Profile
from superserve.scheduler.sidecar.server import serve_subprocess
from superserve.scheduler.sidecar.served_models import model_files, parse_models
from superserve.scheduler.core.summary import describe, summarize
from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess
from superserve.supernet.data import load_split

DEFAULT_POLICIES = ("slackfit", "triton-fixed:largest", "triton-fixed:middle", "triton-fixed:smallest")


@dataclass(frozen=True)
class MixedConfig:
    models: tuple[str, ...]
    slo_ms: dict[str, float]
    """Per model: the latency target of its requests."""
    name: str = "bench-mixed"
    policies: tuple[str, ...] = DEFAULT_POLICIES
    rate_x: float = 1.0
    cv2: float = 8.0
    duration_s: float = 30.0
    seed: int = 0
    capacity_rps: float | None = None
    warmup: int = 20
    serve_args: tuple[str, ...] = ()
    out_dir: Path = field(default_factory=lambda: paths.repo_root() / "results")

    def __post_init__(self):
        if set(self.slo_ms) != set(self.models):
            raise ValueError(f"give one SLO per model ({list(self.models)}), got {self.slo_ms}")
        for p in self.policies:
            kind, _, role = p.partition(":")
            if p != "slackfit" and not (kind == "triton-fixed" and role in triton_fixed.ROLES):
                raise ValueError(f"bench --models runs slackfit and triton-fixed:<{'|'.join(triton_fixed.ROLES)}>, "
                                 f"not {p!r}")


def parse_slos(text: str, models: tuple[str, ...]) -> dict[str, float]:
    """``100`` (every model) or ``supernet=50,vit=100``."""
    if "=" not in text:
        return {m: float(text) for m in models}
    out = {}
    for part in text.split(","):
        name, _, ms = part.partition("=")
        if name not in models:
            raise ValueError(f"--slo-ms: {part!r} must be MODEL=MS with MODEL one of {list(models)}")
        out[name] = float(ms)
    return out


def profile_path(model: str) -> Path:
    return model_files(model).profile_path(None, measure=False)


@contextlib.contextmanager
def fixed_triton(profiles: dict[str, Profile], role: str, slos: dict[str, float], workdir: Path):
    """One Triton holding each model pinned to its ``role`` subnet; yields {model: Target}."""
    repo = workdir / "repo"
    names = {m: triton_fixed.write_models(repo, p, [triton_fixed.pick(p, role)], slos[m], base_model=m)[0]
             for m, p in profiles.items()}
    http, grpc, metrics = free_ports(3)
    with TritonProcess(TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, model_repository=str(repo),
                                    models=tuple(names.values()), log_file=str(workdir / "triton.log"))) as t:
        yield {m: Target(t.cfg.grpc_url, model=n, slo_param=False, triton_timeout=True) for m, n in names.items()}


@contextlib.contextmanager
def sidecar(cfg: MixedConfig, workdir: Path):
    """``superserve serve --models ...`` with its own Triton; yields {model: Target}."""
    http, grpc, th, tg, tm = free_ports(5)
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--triton-http-port", str(th),
            "--triton-grpc-port", str(tg), "--triton-metrics-port", str(tm), "--models", ",".join(cfg.models),
            "--profile", ",".join(f"{m}={profile_path(m)}" for m in cfg.models),
            "--default-slo-ms", str(max(cfg.slo_ms.values())), "--triton-log-file", str(workdir / "triton.log"),
            *cfg.serve_args]
    with serve_subprocess(args, str(workdir / "serve.log")):
        yield {m: Target(f"127.0.0.1:{grpc}", model=m, metrics_url=f"http://127.0.0.1:{http}/metrics")
               for m in cfg.models}


def measure_capacity(profiles: dict[str, Profile], images, seconds: float = 5.0, concurrency: int = 64) -> dict:
    """Each model's largest subnet's best throughput through the whole stack (Triton's batcher, closed loop)."""
    out = {}
    for m, p in profiles.items():
        with tempfile.TemporaryDirectory(prefix="superserve-capacity-") as d, \
                fixed_triton({m: p}, "largest", {m: 1000.0}, Path(d)) as targets:
            asyncio.run(_warm(targets[m], images, np.zeros(len(images), np.int64), 40))
            out[m] = round(asyncio.run(_closed_loop(targets[m], images, seconds, concurrency)) / seconds, 1)
        print(f"capacity: {m} {p.subnets[-1].name} answers {out[m]:.0f} req/s through the whole stack", flush=True)
    return out


async def _both(targets: dict[str, Target], parts: dict[str, tuple], images, labels) -> dict[str, list]:
    """Every model's share of the trace at once, each from its own client, on one clock."""
    names = list(parts)
    got = await asyncio.gather(*(run_open_loop(targets[m], parts[m][0], parts[m][1], images, labels) for m in names))
    return dict(zip(names, got))


def run(cfg: MixedConfig, command: str) -> Path:
    profiles = {m: Profile.load(profile_path(m)) for m in cfg.models}
    images, labels = load_split("test")
    share = 1 / len(cfg.models)
    if cfg.capacity_rps:
        capacity = {"rps": cfg.capacity_rps, "method": "given (--capacity-rps)"}
    else:
        per_model = measure_capacity(profiles, images)
        capacity = {"rps": round(1 / sum(share / c for c in per_model.values()), 1), "per_model_rps": per_model,
                    "method": "per model: triton-fixed largest, 64 closed-loop gRPC clients for 5 s; mixed: "
                              "1 / sum(share / capacity)"}
    trace = traces.bursty(cfg.rate_x * capacity["rps"] / 2, cfg.rate_x * capacity["rps"] / 2, cfg.cv2,
                          cfg.duration_s, cfg.seed)
    arrivals = np.asarray(trace.arrivals_s)
    which = np.random.default_rng(cfg.seed + 31).integers(0, len(cfg.models), len(arrivals))
    parts = {m: (arrivals[which == k], np.full(int((which == k).sum()), cfg.slo_ms[m]))
             for k, m in enumerate(cfg.models)}
    print(f"trace: bursty CV² {cfg.cv2:g}, {len(arrivals)} requests over {cfg.duration_s:.0f} s "
          f"({trace.rate_rps:.0f} req/s = {trace.rate_rps / capacity['rps']:.2f}x mixed capacity), "
          + ", ".join(f"{m} {len(parts[m][0])} at slo {cfg.slo_ms[m]:g} ms" for m in cfg.models), flush=True)
    result = dict(results.header(command), models=list(cfg.models), slo_ms=cfg.slo_ms,
                  trace=dict(trace.describe()), capacity=capacity, rate_x=cfg.rate_x, serve_args=list(cfg.serve_args),
                  profiles={m: str(profile_path(m).relative_to(paths.repo_root())) for m in cfg.models},
                  pareto_accuracy_range={m: [p.subnets[0].accuracy, p.subnets[-1].accuracy]
                                         for m, p in profiles.items()},
                  policies={})
    for policy in cfg.policies:
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="superserve-mixed-") as d:
            role = policy.partition(":")[2]
            servers = (sidecar(cfg, Path(d)) if policy == "slackfit"
                       else fixed_triton(profiles, role, cfg.slo_ms, Path(d)))
            with servers as targets:
                for t in targets.values():
                    asyncio.run(_warm(t, images, labels, cfg.warmup))
                recs = asyncio.run(_both(targets, parts, images, labels))
        summary = summarize([r for rs in recs.values() for r in rs])
        summary["models"] = {m: summarize(rs) for m, rs in recs.items()}
        if role:
            summary["fixed_subnets"] = {m: triton_fixed.pick(p, role) for m, p in profiles.items()}
        summary["run_s"] = round(time.monotonic() - t0, 1)
        result["policies"][policy] = summary
        print(f"{policy:24} {describe(summary)}  ({summary['run_s']:.0f} s)", flush=True)
        for m in cfg.models:
            print(f"  {m:22} {describe(summary['models'][m])}", flush=True)
    path = results.write(result, Path(cfg.out_dir) / f"{cfg.name}.json")
    print(f"wrote {path}")
    return path


def main(args) -> int:
    from superserve.scheduler.provenance import command_line
    import shlex

    models = parse_models(args.models)
    policies = tuple(p for p in (args.policies or "").split(",") if p) or DEFAULT_POLICIES
    cfg = MixedConfig(models, parse_slos(args.slo_ms, models), name=args.name or "bench-mixed", policies=policies,
                      rate_x=args.rate, cv2=args.cv2, duration_s=args.duration or 30.0, seed=args.seed,
                      capacity_rps=args.capacity_rps, serve_args=tuple(shlex.split(args.serve_args or "")),
                      out_dir=Path(args.out_dir) if args.out_dir else paths.repo_root() / "results")
    run(cfg, command_line())
    return 0
