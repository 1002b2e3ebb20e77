"""Benchmarks that write results/<name>.json: ``superserve bench`` (policies side by side), ``bench-subnetact``,
``bench-decide``, ``bench-overhead``, ``bench-fault``, ``bench-soak``, ``bench-overload`` and ``bench-fuzz``
(``bench-sweep`` and ``report`` register themselves from client/sweep.py and client/sweep_report.py). Defaults
come from each bench's config dataclass (BenchConfig, FaultConfig, SoakConfig, OverloadConfig, FuzzConfig) or
the signature of the function it calls."""

from __future__ import annotations

import argparse
from typing import Any

from . import default_of


SURGE_HELP = (
    "a step surge to 2x one worker's capacity and back: SlackFit on 1 worker, with --autoscale, on a peak-sized "
    "pool, and a fixed subnet with --autoscale; per-second attainment, served accuracy, workers -> "
    "results/<name>.json and .png"
)


def _surge_arguments(p: argparse.ArgumentParser) -> None:
    from superserve.client.surge_bench import add_arguments

    add_arguments(p)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    subparsers.add_parser("bench-surge", help=SURGE_HELP, arguments=_surge_arguments)  # issue 18
    subparsers.add_parser(
        "bench",
        help="policies side by side on one open-loop trace; results/<name>.json + plots",
        arguments=_bench_arguments,
    )
    subparsers.add_parser(
        "bench-subnetact",
        help="measure SubNetAct through Triton: latency per subnet, switch "
        "cost, load time of separate models, memory; writes results/<name>.json",
        arguments=_subnetact_arguments,
    )
    subparsers.add_parser(
        "bench-decide",
        help="SlackFit decision time at queue lengths 10, 100, 1000 (results/slackfit_decision.json)",
        arguments=_decide_arguments,
    )
    subparsers.add_parser(
        "bench-overhead",
        help="sidecar CPU per request against Triton's own, latency it adds at "
        "low load, dispatch throughput with a stand-in worker (results/<name>.json)",
        arguments=_overhead_arguments,
    )
    subparsers.add_parser(
        "bench-fault",
        help="fault tolerance: 4 Triton workers under bursty load, kill -9 down to "
        "2, restart them; attainment and served accuracy over time -> results/<name>.json + .png",
        arguments=_fault_arguments,
    )
    subparsers.add_parser(
        "bench-soak",
        help="long open-loop run (30 min by default, not in CI): RSS, descriptors "
        "and threads of the sidecar, tritonserver and its stubs at start and end, every outcome "
        "counted -> results/<name>.json",
        arguments=_soak_arguments,
    )
    subparsers.add_parser(
        "bench-overload",
        help="open-loop 3x capacity then 0.7x, with and without admission "
        "shedding: refusal latency, accepted attainment, queue depth, sidecar RSS, recovery time "
        "-> results/<name>.json and .png",
        arguments=_overload_arguments,
    )
    subparsers.add_parser(
        "bench-fuzz",
        help="fuzzed requests (half HTTP, half gRPC, seeded) against a fresh serve "
        "with default options: every answer code, every 5xx/UNKNOWN/INTERNAL with its case, "
        "health after, /metrics accounting -> results/<name>.json",
        arguments=_fuzz_arguments,
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.models:  # several supernets under one trace (client/mixed_bench.py)
        from superserve.client.mixed_bench import main as mixed

        return mixed(args)
    from superserve.client.bench import main

    return main(args)


def _bench_arguments(b: argparse.ArgumentParser) -> None:
    from superserve.client.bench import BenchConfig

    c = BenchConfig()
    b.add_argument(
        "--policies",
        help="comma-separated (default: slackfit,cascade,slackfit+escalate,clipper,infaas,"
        "triton-fixed:smallest,triton-fixed:middle,triton-fixed:largest); also slackfit-classic (SlackFit "
        "before issue 13), fixed:<subnet>, triton-fixed:pareto (Triton's batcher on every Pareto subnet: "
        "the frontier of fixed baselines, run after the other policies, most accurate first)",
    )
    b.add_argument("--trace-kind", default=c.kind, choices=("poisson", "bursty", "ramp", "azure"))
    b.add_argument("--trace", help="a saved trace file (superserve trace ...) instead of generating one")
    b.add_argument(
        "--azure-file",
        help="Azure Functions 2019 per-minute file for --trace-kind azure "
        "(default: the small synthetic sample in client/data/)",
    )
    b.add_argument("--rate", type=float, default=c.rate_x, help="mean rate as a multiple of the measured capacity")
    b.add_argument("--cv2", type=float, default=c.cv2, help="burstiness of the bursty trace (CV² of inter-arrivals)")
    b.add_argument("--duration", type=float, help="trace seconds (default 60, --quick 12)")
    b.add_argument("--slo-ms", default=c.slo, help='latency target, or classes "50:0.5,200:0.5"')
    b.add_argument(
        "--models",
        help="the mixed bench: these supernets under one bursty trace, an equal share each "
        "(--slo-ms MODEL=MS,...; policies slackfit and triton-fixed:<smallest|middle|largest>)",
    )
    b.add_argument(
        "--min-accuracy",
        help='accuracy-floor classes sent as min_accuracy, e.g. "0:0.6,0.92:0.4" '
        "(plain Triton cannot honour them: its answers below a floor count as misses)",
    )
    b.add_argument("--seed", type=int, default=c.seed)
    b.add_argument("--capacity-rps", type=float, help="use this capacity instead of measuring it")
    b.add_argument(
        "--quick", action="store_true", help="short CI smoke run: slackfit, clipper, triton-fixed:largest for 12 s"
    )
    b.add_argument("--name", help="results/<name>.json (default bench, or bench-quick)")
    b.add_argument("--out-dir", help="default results/")
    b.add_argument("--serve-args", help='extra options for every superserve serve, e.g. "--margin-ms 10"')
    b.add_argument("--records", action="store_true", help="also write every request's record")
    b.add_argument(
        "--compare-python",
        metavar="PYTHON",
        help="also run each sidecar policy as <policy>@compare with this interpreter's superserve serve "
        "(e.g. an older checkout's .venv/bin/python), on the same trace",
    )
    b.add_argument(
        "--noise",
        type=float,
        default=c.noise,
        metavar="F",
        help="run a co-tenant burning F cores (duty-cycled, seeded by --seed; above 1 split over ceil(F) "
        "processes, e.g. 1.5 oversubscribes a 2-core host) during every policy's run, the same for each; "
        "recorded in the results file",
    )
    b.add_argument(
        "--client-nice",
        type=int,
        default=c.client_nice,
        metavar="N",
        help="run the load generator at niceness N while it measures (e.g. -10, needs root: a client on a host "
        "of its own, emulated on a busy one, so its own starvation is not counted as misses); recorded",
    )
    b.add_argument(
        "--deadline-slack-s",
        type=float,
        default=c.deadline_slack_s,
        metavar="S",
        help="send each request with a gRPC deadline S seconds past its SLO (0: a client that gives up at its "
        "latency target, whose deadline the sidecar then plans with; a late answer counts as dropped)",
    )
    b.add_argument("--profile", help="profile JSON for every policy (default: this machine's)")
    b.add_argument(
        "--frontier-stop",
        action="store_true",
        help="with triton-fixed:pareto, stop once the less accurate fixed subnets cannot change the "
        "headline ratios (client/frontier.py); the file lists those skipped",
    )
    b.add_argument(
        "--one-triton",
        action="store_true",
        help="serve every triton-fixed run from one Triton holding all their models, started once",
    )
    b.set_defaults(func=_cmd_bench)


def _subnetact_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("--name", help="results/<name>.json (default subnetact, or subnetact-<model>)")
    b.add_argument("--reps", type=int, default=40, help="timed requests per (subnet, batch) point")
    b.add_argument("--model", default="supernet", help="the model_repository entry measured (e.g. vit)")
    b.set_defaults(func=_cmd_bench_subnetact)


def _cmd_bench_subnetact(args: argparse.Namespace) -> int:
    from superserve.client.subnetact_bench import main as bench

    name = args.name or ("subnetact" if args.model == "supernet" else f"subnetact-{args.model}")
    return bench(name, args.reps, args.model)


def _decide_arguments(bd: argparse.ArgumentParser) -> None:
    from superserve.client.scheduler_bench import bench_decide

    bd.add_argument("--reps", type=int, default=default_of(bench_decide, "reps"))
    bd.set_defaults(func=_cmd_bench_decide)


def _cmd_bench_decide(args: argparse.Namespace) -> int:
    from superserve.client.scheduler_bench import bench_decide

    return bench_decide(args.reps)


def _overhead_arguments(bo: argparse.ArgumentParser) -> None:
    from superserve.client.overhead_bench import bench_overhead

    def d(name: str) -> Any:
        return default_of(bench_overhead, name)

    bo.add_argument("--reps", type=int, default=d("reps"), help="sequential requests per target for the added latency")
    bo.add_argument("--rate", type=float, default=d("rate"), help="open-loop rate of the CPU comparison, req/s")
    bo.add_argument("--duration", type=float, default=d("duration_s"), help="seconds per CPU comparison phase")
    bo.add_argument(
        "--rates",
        default=",".join(str(r) for r in d("rates")),
        help="rising open-loop rates for the dispatch throughput, req/s",
    )
    bo.add_argument("--step", type=float, default=d("step_s"), help="seconds per dispatch rate")
    bo.add_argument(
        "--compare-python",
        metavar="PYTHON",
        help="also measure the sidecar run by this interpreter (e.g. an older checkout's .venv/bin/python)",
    )
    bo.add_argument(
        "--compare-transport",
        action="store_true",
        help="also measure the sidecar with its batch calls to Triton over HTTP (--worker-http)",
    )
    bo.add_argument("--name", default=d("name"), help="results/<name>.json")
    bo.add_argument(
        "--policy",
        default=d("policy"),
        help="the sidecar's policy (fixed: pinned to the smallest subnet, as Triton direct; slackfit: it chooses)",
    )
    bo.set_defaults(func=_cmd_bench_overhead)


def _cmd_bench_overhead(args: argparse.Namespace) -> int:
    from superserve.client.overhead_bench import bench_overhead

    return bench_overhead(
        args.reps,
        args.rate,
        args.duration,
        tuple(float(r) for r in args.rates.split(",")),
        args.step,
        args.compare_python,
        args.compare_transport,
        args.name,
        args.policy,
    )


def _fault_arguments(f: argparse.ArgumentParser) -> None:
    from superserve.client.fault_bench import FaultConfig, main

    c = FaultConfig()
    f.add_argument("--name", default=c.name)
    f.add_argument("--workers", type=int, default=c.workers)
    f.add_argument("--min-workers", type=int, default=c.min_workers, help="kill down to this many")
    f.add_argument("--duration", type=float, default=c.duration_s, help="seconds of load")
    f.add_argument("--kill-at", type=float, default=c.kill_at_s)
    f.add_argument("--kill-every", type=float, default=c.kill_every_s)
    f.add_argument("--restart-at", type=float, default=c.restart_at_s)
    f.add_argument("--restart-every", type=float, default=c.restart_every_s)
    f.add_argument(
        "--rate",
        type=float,
        default=c.rate_x,
        help="mean rate as a multiple of the measured capacity "
        "(largest subnet, one Triton); 0.6: 4 quota'd workers carry it on large subnets, 2 must use "
        "smaller ones",
    )
    f.add_argument("--capacity-rps", type=float, help="use this capacity instead of measuring it")
    f.add_argument("--cv2", type=float, default=c.cv2, help="burstiness of the trace")
    f.add_argument("--slo-ms", type=float, default=c.slo_ms)
    f.add_argument("--seed", type=int, default=c.seed)
    f.add_argument(
        "--isolation",
        choices=("quota", "pin", "none"),
        default=c.isolation,
        help="capacity per worker: a CPU quota each (cgroup, needs root; falls back to pin), one core "
        "per worker index (taskset), or none",
    )
    f.add_argument("--worker-cpu", type=float, default=c.worker_cpu, help="cores per worker with --isolation quota")
    f.add_argument("--out-dir", help="default results/")
    f.add_argument("--serve-args", help='extra options for superserve serve, e.g. "--hang-floor-ms 1000"')
    f.set_defaults(func=main)


def _soak_arguments(so: argparse.ArgumentParser) -> None:
    from superserve.client.soak_bench import SoakConfig, main

    c = SoakConfig()
    so.add_argument("--name", default=c.name)
    so.add_argument("--duration", type=float, default=c.duration_s, help="seconds of load (e.g. 60 for a quick check)")
    so.add_argument("--rps", type=float, default=c.rps, help="mean request rate")
    so.add_argument("--cv2", type=float, default=c.cv2, help="burstiness of the trace")
    so.add_argument("--slo-ms", type=float, default=c.slo_ms)
    so.add_argument(
        "--http-share", type=float, default=c.http_share, help="share of requests sent over HTTP (rest gRPC)"
    )
    so.add_argument("--sample-s", type=float, default=c.sample_s, help="seconds between process samples")
    so.add_argument("--seed", type=int, default=c.seed)
    so.add_argument("--out-dir", help="default results/")
    so.add_argument("--serve-args", help='extra options for superserve serve, e.g. "--workers 2"')
    so.set_defaults(func=main)


def _overload_arguments(o: argparse.ArgumentParser) -> None:
    from superserve.client.overload_bench import OverloadConfig, main

    c = OverloadConfig()
    o.add_argument("--name", default=c.name)
    o.add_argument("--capacity-rps", type=float, help="skip the capacity measurement and use this")
    o.add_argument("--overload-x", type=float, default=c.overload_x, help="overload rate, times capacity")
    o.add_argument("--recover-x", type=float, default=c.recover_x, help="rate after the overload, times capacity")
    o.add_argument("--overload-s", type=float, default=c.overload_s)
    o.add_argument("--recover-s", type=float, default=c.recover_s)
    o.add_argument("--slo-ms", type=float, default=c.slo_ms)
    o.add_argument("--seed", type=int, default=c.seed)
    o.add_argument("--scrape-s", type=float, default=c.scrape_s, help="seconds between /metrics and RSS samples")
    o.add_argument("--warmup", type=int, default=c.warmup, help="requests before the measurement")
    o.add_argument(
        "--compare",
        action="store_true",
        help="run the same trace three times: serve as is (peak bound), serve --shed-drain measured, "
        "serve --no-admission-shedding",
    )
    o.add_argument(
        "--no-admission-shedding", action="store_true", help="run only the serve --no-admission-shedding arm"
    )
    o.add_argument("--out-dir", help="default results/")
    o.add_argument("--serve-args", help='extra options for every superserve serve, e.g. "--workers 2"')
    o.add_argument(
        "--client-nice",
        type=int,
        default=c.client_nice,
        metavar="N",
        help="run the load generator at niceness N while it measures (e.g. -10, needs root), so its own starvation "
        "is not counted as refusal latency; recorded in the config",
    )
    o.set_defaults(func=main)


def _fuzz_arguments(fz: argparse.ArgumentParser) -> None:
    from superserve.client.fuzz_bench import FuzzConfig, main

    c = FuzzConfig()
    fz.add_argument("--name", default=c.name)
    fz.add_argument("--cases", type=int, default=c.cases, help="fuzzed requests, half over each protocol")
    fz.add_argument("--seed", type=int, default=c.seed)
    fz.add_argument(
        "--good-every", type=int, default=c.good_every, help="a good request of each protocol after this many"
    )
    fz.add_argument("--out-dir", help="default results/")
    fz.add_argument("--serve-args", help="extra options for superserve serve (default: none)")
    fz.set_defaults(func=main)
