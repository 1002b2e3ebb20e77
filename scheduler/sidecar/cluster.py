"""``serve``'s options for workers it manages itself: ``--ray ADDRESS|auto`` (Triton workers as Ray actors) and
``--autoscale`` (a target worker count chosen by core/autoscale.py), and the wiring of a fleet (fleet.py) into the
sidecar. Without either flag ``serve`` keeps its fixed workers exactly as before. Every managed worker loads every
served model (``serve --models``) and is admitted once each of them is ready and warmed up (fleet.py)."""
from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass, field, replace

from ..core.autoscale import AutoscaleConfig
from .fleet import Fleet, FleetConfig
from .scaling_loop import ScalingLoop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterConfig:
    workers: int = 1
    """Workers at start (and always, without ``autoscale``)."""
    ray: object = None
    """A ray_workers.RayWorkersConfig: workers are Ray actors; None: local processes."""
    autoscale: AutoscaleConfig | None = None
    fleet: FleetConfig = field(default_factory=FleetConfig)
    prefixes: tuple[tuple[str, ...], ...] = ()
    """Local workers only: element i is the command that runs local worker i (it must exec Triton), e.g. into a
    cgroup of its own (bench-surge's CPU quotas); workers beyond the list run bare."""

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.prefixes and self.ray is not None:
            raise ValueError("--local-worker-prefix is for local workers, not with --ray")
        a = self.autoscale
        if a is not None and not a.min_workers <= self.workers <= a.max_workers:
            raise ValueError(f"--workers {self.workers} must lie within --min-workers {a.min_workers} and "
                             f"--max-workers {a.max_workers}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster and autoscaling (docs/cluster.md)")
    g.add_argument("--ray", metavar="ADDRESS", help="run the Triton workers as Ray actors on this cluster (auto, "
                   "HOST:PORT or ray://HOST:PORT); needs the extra superserve-triton[ray]")
    g.add_argument("--worker-cpus", type=float, default=1.0, help="--ray: CPUs each worker asks Ray for")
    g.add_argument("--worker-gpus", type=float, default=0.0, choices=(0.0, 1.0),
                   help="--ray: 1 runs each worker's supernet on a GPU of its own")
    g.add_argument("--autoscale", action="store_true",
                   help="choose the number of workers between --min-workers and --max-workers (local processes, "
                   "or Ray actors with --ray); --workers is the count at start")
    d = AutoscaleConfig()
    g.add_argument("--min-workers", type=int, default=d.min_workers)
    g.add_argument("--max-workers", type=int, default=d.max_workers)
    g.add_argument("--scale-accuracy-gap", type=float, default=d.accuracy_gap,
                   help="add a worker while the served accuracy stays this far below the best subnet's")
    g.add_argument("--scale-accuracy-min-demand", type=float, default=d.accuracy_min_demand,
                   help="... counted only while the demand on the most accurate subnet is at least this (below, more "
                   "workers would not restore accuracy)")
    g.add_argument("--scale-max-miss", type=float, default=d.max_miss_ratio,
                   help="... or more than this share of requests is late, dropped or refused")
    g.add_argument("--scale-up-demand", type=float, default=d.up_demand,
                   help="... or the demand on the most accurate subnet is above this share of the pool's capacity")
    g.add_argument("--scale-down-demand", type=float, default=d.down_demand,
                   help="remove one while the demand on one worker fewer stays below this")
    g.add_argument("--scale-up-hold-s", type=float, default=d.up_hold_s)
    g.add_argument("--scale-down-hold-s", type=float, default=d.down_hold_s)
    g.add_argument("--worker-drain-timeout-s", type=float, default=FleetConfig().drain_timeout_s,
                   help="longest wait for a removed worker's batches in flight before it is stopped")
    g.add_argument("--instances", default="auto", metavar="auto|N",
                   help="supernet instances per Triton worker (its instance group); auto: chosen from the profile "
                   "and the worker's cores or GPUs, the reason logged (scheduler/core/instance_count.py)")
    g.add_argument("--worker-cores", type=float, metavar="CORES",
                   help="cores each worker may use, for --instances auto (default: with --ray its --worker-cpus; "
                   "local workers share this host's cores, one left to the sidecar)")
    g.add_argument("--local-worker-prefix", metavar="JSON",
                   help="a JSON list of command prefixes, element i runs local worker i (it must exec Triton), e.g. "
                   "into a cgroup with a CPU quota; makes the sidecar manage its local workers (as --autoscale does)")


def parse_prefixes(text: str | None) -> tuple[tuple[str, ...], ...]:
    """``--local-worker-prefix``: a JSON list of lists of strings."""
    if not text:
        return ()
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"--local-worker-prefix must be a JSON list of lists of strings: {e}") from None
    if not isinstance(value, list) or not all(isinstance(p, list) and all(isinstance(a, str) for a in p)
                                              for p in value):
        raise ValueError("--local-worker-prefix must be a JSON list of lists of strings, e.g. "
                         '[["taskset", "-c", "0"], ["taskset", "-c", "1"]]')
    return tuple(tuple(p) for p in value)


def from_args(args: argparse.Namespace) -> ClusterConfig | None:
    """The cluster options given, or None (none of --ray, --autoscale, --local-worker-prefix: fixed workers)."""
    prefixes = parse_prefixes(getattr(args, "local_worker_prefix", None))
    if not args.ray and not args.autoscale and not prefixes:
        return None
    if args.worker:
        raise ValueError("--ray, --autoscale and --local-worker-prefix start their own workers; not with --worker URL")
    if args.policy == "infaas":
        raise ValueError("--ray and --autoscale serve the supernet models; policy infaas needs its variant "
                         "workers (one Triton model per subnet)")
    ray_cfg = None
    if args.ray:
        from .ray_workers import RayWorkersConfig  # needs the extra: import only when asked for

        ray_cfg = RayWorkersConfig(address=args.ray, worker_cpus=args.worker_cpus, worker_gpus=args.worker_gpus)
    scale = None
    if args.autoscale:
        scale = AutoscaleConfig(min_workers=args.min_workers, max_workers=args.max_workers,
                                accuracy_gap=args.scale_accuracy_gap, max_miss_ratio=args.scale_max_miss,
                                accuracy_min_demand=args.scale_accuracy_min_demand,
                                up_demand=args.scale_up_demand, down_demand=args.scale_down_demand,
                                up_hold_s=args.scale_up_hold_s, down_hold_s=args.scale_down_hold_s)
    workers = args.workers if args.workers is not None else (scale.min_workers if scale else 1)
    return ClusterConfig(workers=workers, ray=ray_cfg, autoscale=scale,
                         fleet=FleetConfig(drain_timeout_s=args.worker_drain_timeout_s), prefixes=prefixes)


def worker_resources(args: argparse.Namespace, cluster: ClusterConfig | None):
    """What one worker may use, for --instances auto: --worker-cores if given (a quota or node of its own: nothing
    reserved); a Ray worker's --worker-cpus / --worker-gpus; else local workers share this host's cores, one of
    which the sidecar and its clients keep."""
    from ..core.instance_count import WorkerResources

    gpus = int(args.worker_gpus) if args.ray else 0
    if args.worker_cores is not None:
        if args.worker_cores <= 0:
            raise ValueError(f"--worker-cores must be > 0, got {args.worker_cores}")
        return WorkerResources(cores=args.worker_cores, gpus=gpus)
    if args.ray:
        return WorkerResources(cores=max(args.worker_cpus, 1.0 if gpus else 0.0) or 1.0, gpus=gpus)
    host = len(os.sched_getaffinity(0))
    n = cluster.autoscale.max_workers if cluster is not None and cluster.autoscale is not None else \
        (cluster.workers if cluster is not None else (args.workers or 1))
    return WorkerResources(cores=host / n, reserved_cores=min(1.0, host / 2) / n)


def instances_from_args(args: argparse.Namespace, cluster: ClusterConfig | None) -> int | None:
    """``--instances``: N, or auto resolved from the profile and the worker's resources (logged); None for running
    workers given by URL (their count is theirs)."""
    text = str(getattr(args, "instances", "auto"))
    if args.worker:
        if text != "auto":
            raise ValueError("--instances applies to workers the sidecar starts, not to --worker URLs")
        return None
    if text != "auto":
        try:
            n = int(text)
        except ValueError:
            raise ValueError(f"--instances must be auto or an integer in 1..64, got {text!r}") from None
        if not 1 <= n <= 64:
            raise ValueError(f"--instances must be auto or an integer in 1..64, got {n}")
        log.info("supernet instances per worker: %d (--instances)", n)
        return n
    from ..core.instance_count import choose, curve_of
    from .local_profile import find_profile
    from ..core.profile import Profile

    from .served_models import parse_models, parse_profiles

    models = parse_models(getattr(args, "models", None))  # --profile may be MODEL=FILE,... with --models
    res = worker_resources(args, cluster)
    explicit = parse_profiles(args.profile, models).get(models[0])
    choice = choose(curve_of(Profile.load(find_profile(explicit, measure=False))), res)
    log.info("supernet instances per worker: %s (auto; worker %g core(s), %d GPU(s))", choice.reason, res.cores,
             res.gpus)
    return choice.count


def configure(cfg, args: argparse.Namespace):
    """``serve``'s ServeConfig with the cluster options applied: the managed workers (or None), and the supernet
    instances per Triton the sidecar starts (local processes or Ray actors)."""
    cluster = from_args(args)
    n = instances_from_args(args, cluster)
    if cluster is not None and cluster.ray is not None:
        cluster = replace(cluster, ray=replace(cluster.ray, instances=n))
    triton = cfg.triton if n is None or args.policy == "infaas" else replace(cfg.triton, instances=n)
    return replace(cfg, cluster=cluster, triton=triton)


class ClusterWorkers:
    """The sidecar's part: start the fleet's first workers, then hand it the engine's pool and run the autoscaler.
    ``models``: the served models, every one loaded on every worker (the first is the workers' default)."""

    def __init__(self, cfg: ClusterConfig, triton_cfg, warmup, models: tuple[str, ...] = ("supernet",)):
        self.cfg = cfg
        if cfg.ray is not None:
            from .ray_workers import RayActors

            backend = RayActors(replace(cfg.ray, models=tuple(models)))
        else:
            from .local_workers import LocalProcesses

            backend = LocalProcesses(triton_cfg, cfg.prefixes)
        from ..core.stats import Stats

        self.fleet = Fleet(backend, cfg.fleet, Stats(), models=tuple(models), warmup=warmup)
        self.scaling: ScalingLoop | None = None

    async def start(self) -> list:
        workers = await self.fleet.start(self.cfg.workers)
        log.info("%d %s worker(s) ready: %s", len(workers), self.fleet.backend.name, [w.url for w in workers])
        return workers

    def attach(self, engine) -> None:
        self.fleet.stats = engine.stats
        self.fleet.attach(engine.pool)
        self.fleet.publish()
        if self.cfg.autoscale is not None:
            self.scaling = ScalingLoop(self.cfg.autoscale, self.fleet, engine)
            self.scaling.start()

    async def stop_watching(self) -> None:
        if self.scaling is not None:
            await self.scaling.close()
        await self.fleet.stop_watching()

    async def close(self) -> None:
        await self.fleet.close()
