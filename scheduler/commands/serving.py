"""Serving commands: ``superserve triton`` (Triton on the model repository), ``serve`` (the scheduler in front of
it) and ``demo`` (both, with a short burst of requests). Defaults come from TritonConfig, ServeConfig,
EngineConfig (whose request life-cycle defaults are LifecycleConfig's) and HealthConfig."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from superserve.scheduler.sidecar.auth import AuthConfig, TlsConfig
    from superserve.scheduler.sidecar.limits import ConnectionLimits
    from superserve.scheduler.sidecar.server import ServeConfig


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    subparsers.add_parser(
        "triton",
        help="run tritonserver (from the nvidia-pytriton wheel) on our model repository",
        arguments=_triton_arguments,
    )
    subparsers.add_parser(
        "demo", help="start Triton on free ports and send a short burst of real requests", arguments=_demo_arguments
    )
    subparsers.add_parser(
        "serve", help="the SuperServe scheduler (KServe v2 HTTP + gRPC) in front of Triton", arguments=_serve_arguments
    )


def _triton_arguments(tr: argparse.ArgumentParser) -> None:
    from superserve.scheduler.sidecar.triton_launcher import TritonConfig

    d = TritonConfig()
    tr.add_argument("--host", default=d.host)
    tr.add_argument("--http-port", type=int, default=d.http_port)
    tr.add_argument("--grpc-port", type=int, default=d.grpc_port)
    tr.add_argument("--metrics-port", type=int, default=d.metrics_port)
    tr.add_argument("--model-repository", help="default: the repository's model_repository/")
    tr.add_argument("--model", action="append", help="load only these models (model control off); repeatable")
    tr.add_argument(
        "--explicit-model-control",
        action="store_true",
        help="let the holder of the control key (env SUPERSERVE_TRITON_CONTROL_KEY) load and unload "
        "models, e.g. for serve --policy infaas --worker; --model then names the models loaded at start",
    )
    tr.add_argument("--log-file", help="server log (default: a file under the system temp dir)")
    tr.set_defaults(func=_cmd_triton)


def _cmd_triton(args: argparse.Namespace) -> int:
    from superserve.scheduler.sidecar.triton_launcher import TritonConfig, run_forever

    if args.explicit_model_control and not args.control_key:
        print(
            "superserve triton: --explicit-model-control needs the control key in SUPERSERVE_TRITON_CONTROL_KEY "
            "(the scheduler sends it to load and unload models)",
            file=sys.stderr,
        )
        return 2
    return run_forever(
        TritonConfig(
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            model_repository=args.model_repository,
            log_file=args.log_file,
            models=tuple(args.model or ()),
            explicit=args.explicit_model_control,
            control_key=args.control_key,
        )
    )


def _demo_arguments(d: argparse.ArgumentParser) -> None:
    from superserve.client.demo import main as demo

    from . import default_of

    d.add_argument("--requests", type=int, default=default_of(demo, "requests"))
    d.add_argument("--log-file", help="tritonserver log (default: a temp file)")
    d.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from superserve.client.demo import main as demo

    return demo(requests=args.requests, log_file=args.log_file)


def _serve_arguments(sv: argparse.ArgumentParser) -> None:
    from superserve.scheduler.sidecar import auth, cluster, limits
    from superserve.scheduler.sidecar.engine import EngineConfig
    from superserve.scheduler.core.health import HealthConfig
    from superserve.scheduler.sidecar.server import ServeConfig
    from superserve.scheduler.sidecar.triton_launcher import TritonConfig

    from superserve.scheduler.core import latency_view

    s, e, h, t = ServeConfig(), EngineConfig(), HealthConfig(), TritonConfig()
    sv.add_argument("--host", default=s.host)
    sv.add_argument("--http-port", type=int, default=s.http_port)
    sv.add_argument("--grpc-port", type=int, default=s.grpc_port)
    sv.add_argument("--policy", default=s.policy, help="slackfit, fixed, clipper, infaas or cascade")
    sv.add_argument("--plan", help="policy cascade: gear plan JSON (default plans/<hardware>.json)")
    sv.add_argument(
        "--min-confidence",
        type=float,
        default=e.default_min_confidence,
        help="escalate answers below this confidence to a more "
        "accurate subnet while slack allows, for requests that set no min_confidence (any policy)",
    )
    sv.add_argument("--subnet", help="the one subnet policies fixed and clipper serve")
    sv.add_argument(
        "--models",
        help="supernet models served, comma-separated, each under its own name, one EDF queue (default: "
        "supernet); --profile and --subnet then take MODEL=VALUE,...",
    )
    sv.add_argument(
        "--triton-http-port",
        type=int,
        default=t.http_port,
        help="local Triton ports; with --workers N, worker i uses these + 3*i; 0: free ports",
    )
    sv.add_argument("--triton-grpc-port", type=int, default=t.grpc_port)
    sv.add_argument("--triton-metrics-port", type=int, default=t.metrics_port)
    sv.add_argument(
        "--triton-log-file", help="embedded Triton's log (default: a temp file; worker i of --workers N writes FILE.i)"
    )
    sv.add_argument(
        "--worker",
        action="append",
        metavar="URL",
        help="gRPC host:port of a running Triton worker (repeatable); default: start one",
    )
    sv.add_argument(
        "--workers", type=int, metavar="N", help="start N local Triton workers (default 1); not with --worker"
    )
    sv.add_argument(
        "--worker-transport",
        choices=("grpc", "http"),
        default=s.worker_transport,
        help="how batch calls reach Triton (probes and metadata use gRPC either way); http costs less "
        "CPU on both sides (docs/data-path.md)",
    )
    sv.add_argument(
        "--worker-http",
        action="append",
        metavar="HOST:PORT",
        help="HTTP address of each --worker, in the same order: batch calls over HTTP",
    )
    sv.add_argument(
        "--resolve-workers",
        action="store_true",
        help="use every address each --worker host resolves to, one worker each (docker compose --scale)",
    )
    sv.add_argument(
        "--probe-interval-ms",
        type=float,
        default=h.probe_interval_s * 1000,
        help="readiness probe period per worker (backs off to 2 s while a worker is down)",
    )
    sv.add_argument(
        "--hang-factor",
        type=float,
        default=h.hang_factor,
        help="a batch call is hung after max(hang-factor x its expected latency, --hang-floor-ms)",
    )
    sv.add_argument("--hang-floor-ms", type=float, default=h.hang_floor_ms, help="see --hang-factor")
    sv.add_argument(
        "--max-attempts",
        type=int,
        default=h.max_attempts,
        help="dispatches per request before a worker failure is answered with an error",
    )
    sv.add_argument("--profile", help="profile JSON (default profiles/<hardware>.json)")
    sv.add_argument(
        "--latency-stat",
        choices=("mean", "p99"),
        default=s.latency_stat,
        help="which profiled latency the policy plans with",
    )
    sv.add_argument("--default-slo-ms", type=float, default=e.default_slo_ms, help="slo_ms of requests that set none")
    sv.add_argument("--max-slo-ms", type=float, default=e.max_slo_ms, help="requests asking for more get 400")
    sv.add_argument("--queue-capacity", type=int, default=e.queue_capacity, help="queued requests beyond this get 503")
    sv.add_argument(
        "--max-inflight", type=int, default=e.max_inflight_per_worker, help="batches in flight per Triton worker"
    )
    sv.add_argument(
        "--memory-budget", type=int, default=s.memory_budget, help="policy infaas: variant models loaded at once"
    )
    sv.add_argument(
        "--slackfit-buckets",
        type=int,
        default=s.slackfit_buckets,
        help="policy slackfit: 1 searches every profiled point under the slack; 16 is the paper's bucket rule",
    )
    sv.add_argument(
        "--slackfit-overflow",
        choices=("serve", "drop"),
        default=s.slackfit_overflow,
        help="policy slackfit, a request that fits the latency a batch most likely takes but not the planning "
        "quantile: serve it best effort (largest batch, fastest subnet) or drop it at once with 504",
    )
    sv.add_argument(
        "--load-ms",
        type=float,
        default=s.load_ms,
        help="policy infaas: expected variant load time (replaced by the warm-up load's measured time)",
    )
    sv.add_argument(
        "--variant-repository",
        help="policy infaas: folder for the exported per-subnet models "
        "(default: a cache folder keyed by the weights' sha256)",
    )
    sv.add_argument(
        "--margin-ms",
        type=float,
        default=e.margin_ms,
        help="plan every batch to finish this long before its deadline (reply path, client)",
    )
    sv.add_argument(
        "--drain-timeout-s",
        type=float,
        default=s.drain_timeout_s,
        help="on SIGTERM/SIGINT: new requests get 503 at once; requests in flight get this long to be "
        "answered (then 503), before the ports close and Triton stops; a second signal cuts it short",
    )
    sv.add_argument(
        "--measure-margin",
        action="store_true",
        default=e.measure_margin,
        help="plan with max(--margin-ms, the 95th percentiles of the reply times and of the event loop's lag, "
        "measured online)",
    )
    sv.add_argument(
        "--no-adapt-latency",
        dest="adapt_latency",
        action="store_false",
        default=e.adapt_latency,
        help="plan with the profile as measured, not scaled by the observed/profiled batch latency",
    )
    sv.add_argument(
        "--latency-model",
        choices=latency_view.KINDS,
        default=e.latency_model,
        help="affine: observed = scale x profiled + offset, planned with the --latency-quantile of the residual "
        "(ms); quantile: plan at --latency-quantile of observed/profiled batch latency, per batch size; "
        "ewma: the profile scaled by a running mean of it (the behaviour before issue 13); off: the profile as "
        "measured",
    )
    sv.add_argument(
        "--latency-quantile",
        type=float,
        default=e.latency_quantile,
        help="the quantile policies plan with (about the SLO attainment target)",
    )
    sv.add_argument(
        "--no-pipeline",
        dest="pipeline",
        action="store_false",
        default=e.pipeline,
        help="one batch in flight per worker (default: slackfit and fixed send the next batch shortly "
        "before the running one is expected to end, planned from that time)",
    )
    sv.add_argument(
        "--pipeline-lead-ms",
        type=float,
        default=e.pipeline_lead_ms,
        help="send the next batch this long before the running one is expected to end",
    )
    sv.add_argument(
        "--pipeline-min-rows",
        type=int,
        default=e.pipeline_min_rows,
        help="pipeline only while at least this many requests wait",
    )
    sv.add_argument(
        "--batch-log",
        help="append one JSON line per finished batch to this file (timings, planned and observed latency)",
    )
    sv.add_argument(
        "--request-log",
        help="append one JSON line per answered request to this file: its id and when (CLOCK_MONOTONIC ms) it "
        "was decoded, answered and encoded, to join with a client's own times (docs/data-path.md)",
    )
    sv.add_argument(
        "--no-admission-shedding",
        dest="admission_shedding",
        action="store_false",
        default=e.admission_shedding,
        help="queue every request the queue has room for, even one the work ahead certainly makes "
        "late (it is then dropped with 504 when infeasible), rather than refusing it at once with 503",
    )
    sv.add_argument(
        "--shed-peak-fraction",
        type=float,
        default=e.shed_peak_fraction,
        help="admission shedding assumes the queue drains at this fraction of the profile's peak "
        "throughput (1: never refuses what the profile could serve; lower refuses earlier); with "
        "--shed-drain peak, or until the drain rate is measured",
    )
    sv.add_argument(
        "--shed-drain",
        choices=("peak", "measured"),
        default=e.shed_drain,
        help="the drain rate admission shedding assumes: peak (the planning profile's peak throughput "
        "on every worker) or measured (rows the workers cleared under a backlog, recent full batches; "
        "an experiment: better in one of two overload runs, worse in the other)",
    )
    cluster.add_arguments(sv)  # --ray, --autoscale and their options (scheduler/sidecar/cluster.py)
    limits.add_arguments(sv)
    auth.add_arguments(sv)
    sv.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from superserve.scheduler.sidecar import auth, cluster, limits
    from superserve.scheduler.sidecar.server import serve_forever

    if args.worker and args.workers is not None:
        print(
            "superserve serve: give --worker URL (running Tritons) or --workers N (start N here), not both",
            file=sys.stderr,
        )
        return 2
    if args.workers is not None and args.workers < 1:
        print(f"superserve serve: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        cfg = serve_config(args, auth.from_args(args, args.token_env), limits.from_args(args), auth.tls_from_args(args))
        # -- cluster and autoscaling (issue 18): serve --ray ADDRESS|auto, --autoscale; see scheduler/sidecar/cluster.py
        try:
            cfg = cluster.configure(cfg, args)  # managed workers, supernet instances per Triton
        except ImportError as e:  # --ray without the extra
            print(f"superserve serve: --ray needs Ray: pip install 'superserve-triton[ray]' ({e})", file=sys.stderr)
            return 2
    except ValueError as e:  # bad settings, quoted
        print(f"superserve serve: {e}", file=sys.stderr)
        return 2
    return asyncio.run(serve_forever(cfg))


def serve_config(
    args: argparse.Namespace, auth_cfg: AuthConfig, limits_cfg: ConnectionLimits, tls_cfg: TlsConfig
) -> ServeConfig:
    """The ServeConfig that ``superserve serve``'s options describe (ValueError on a bad combination)."""
    from superserve.scheduler.sidecar.engine import EngineConfig
    from superserve.scheduler.core.health import HealthConfig
    from superserve.scheduler.core.policy_names import serve_policy
    from superserve.scheduler.sidecar.served_models import parse_models
    from superserve.scheduler.sidecar.server import ServeConfig
    from superserve.scheduler.sidecar.triton_launcher import TritonConfig

    policy, subnet, plan = serve_policy(args.policy, args.subnet, args.plan)
    probe_s = args.probe_interval_ms / 1000
    return ServeConfig(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        policy=policy,
        subnet=subnet,
        models=parse_models(args.models),
        workers=tuple(args.worker or ()),
        local_workers=args.workers or 1,
        resolve_workers=args.resolve_workers,
        worker_transport="http" if args.worker_http else args.worker_transport,
        worker_http=tuple(args.worker_http or ()),
        profile=args.profile,
        latency_stat=args.latency_stat,
        variant_repository=args.variant_repository,
        memory_budget=args.memory_budget,
        load_ms=args.load_ms,
        slackfit_buckets=args.slackfit_buckets,
        slackfit_overflow=args.slackfit_overflow,
        plan=plan,
        drain_timeout_s=args.drain_timeout_s,
        auth=auth_cfg,
        insecure_public=args.insecure_public,
        limits=limits_cfg,
        tls=tls_cfg,
        # Triton stays on loopback whatever --host is: only the sidecar talks to it.
        triton=TritonConfig(
            http_port=args.triton_http_port,
            grpc_port=args.triton_grpc_port,
            metrics_port=args.triton_metrics_port,
            log_file=args.triton_log_file,
            control_key=args.control_key,
        ),
        engine=EngineConfig(
            default_slo_ms=args.default_slo_ms,
            max_slo_ms=args.max_slo_ms,
            queue_capacity=args.queue_capacity,
            max_inflight_per_worker=args.max_inflight,
            adapt_latency=args.adapt_latency,
            margin_ms=args.margin_ms,
            measure_margin=args.measure_margin,
            admission_shedding=args.admission_shedding,
            shed_peak_fraction=args.shed_peak_fraction,
            shed_drain=args.shed_drain,
            latency_model=args.latency_model,
            latency_quantile=args.latency_quantile,
            pipeline=args.pipeline,
            pipeline_lead_ms=args.pipeline_lead_ms,
            pipeline_min_rows=args.pipeline_min_rows,
            batch_log=args.batch_log,
            request_log=args.request_log,
            default_min_confidence=args.min_confidence,
        ),
        # a worker that is down is probed at growing gaps, up to HealthConfig's longest (2 s)
        health=HealthConfig(
            probe_interval_s=probe_s,
            max_backoff_s=max(probe_s, HealthConfig().max_backoff_s),
            hang_factor=args.hang_factor,
            hang_floor_ms=args.hang_floor_ms,
            max_attempts=args.max_attempts,
        ),
    )
