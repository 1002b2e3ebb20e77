"""The one command line, ``superserve <subcommand>``. Each subcommand lives in its own module;
this file only parses arguments and configures logging."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from superserve.scheduler import log_limits
from superserve.scheduler.provenance import command_line


def _cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    import torch
    from superserve.supernet.pipeline import DEFAULT_OUT, TRAIN_DEFAULTS, train_supernet
    from superserve.scheduler.paths import backend_dir

    if args.family not in TRAIN_DEFAULTS:
        print(f"superserve train: --family must be one of {', '.join(TRAIN_DEFAULTS)} (families trained here), "
              f"not {args.family!r}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    given = {k: getattr(args, k) for k in ("epochs_largest", "epochs_sandwich", "batch_size", "lr", "limit")
             if getattr(args, k) is not None}
    cfg = dataclasses.replace(TRAIN_DEFAULTS[args.family], seed=args.seed, **given)
    out = args.out or backend_dir() / "weights" / DEFAULT_OUT[args.family]
    command = command_line()
    meta = train_supernet(out, cfg, args.data_dir, device, command, family=args.family)
    print(f"weights: {out}  sha256 {meta['sha256']}")
    print(f"{'subnet':24} {'val':>6} {'test':>6} {'ms@b8':>7} {'MMACs':>7}")
    for r in meta["subnets"]:
        if r["pareto"]:
            print(f"{r['name']:24} {r['val_accuracy']:6.4f} {r.get('test_accuracy', 0):6.4f} "
                  f"{r['latency_ms']:7.3f} {r['macs'] / 1e6:7.2f}")
    return 0


def _cmd_triton(args: argparse.Namespace) -> int:
    from superserve.scheduler.triton_launcher import TritonConfig, run_forever

    if args.explicit_model_control and not args.control_key:
        print("superserve triton: --explicit-model-control needs the control key in SUPERSERVE_TRITON_CONTROL_KEY "
              "(the scheduler sends it to load and unload models)", file=sys.stderr)
        return 2
    return run_forever(TritonConfig(host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                                    metrics_port=args.metrics_port, model_repository=args.model_repository,
                                    log_file=args.log_file, models=tuple(args.model or ()),
                                    explicit=args.explicit_model_control, control_key=args.control_key))


def _cmd_demo(args: argparse.Namespace) -> int:
    from superserve.client.demo import main as demo

    return demo(requests=args.requests, log_file=args.log_file)


def _cmd_bench_subnetact(args: argparse.Namespace) -> int:
    from superserve.client.subnetact_bench import main as bench

    return bench(args.name, args.reps)


def _cmd_profile(args: argparse.Namespace) -> int:
    import json
    import contextlib

    import tritonclient.grpc as grpcclient

    from superserve.scheduler import paths
    from superserve.scheduler.provenance import hardware_name
    from superserve.scheduler.ports import free_ports
    from superserve.scheduler.profiler import BATCH_SIZES, build_profile, write_profile
    from superserve.scheduler.triton_launcher import TritonConfig, TritonProcess

    from superserve.scheduler.model_config import model_weights

    config = paths.model_repository() / args.model / "config.pbtxt"
    if not config.exists():
        print(f"superserve profile: no model {args.model!r} in {paths.model_repository()} "
              "('superserve add-model' writes one)", file=sys.stderr)
        return 2
    weights = model_weights(config.read_text()) or str(paths.default_weights())
    weights = Path(weights) if Path(weights).is_absolute() else paths.backend_dir() / weights
    meta = json.loads(weights.with_suffix(".json").read_text())
    hardware = args.hardware or hardware_name()
    # The default model's profile is profiles/<hardware>.json; another model's profiles/<model>/<hardware>.json.
    folder = paths.repo_root() / "profiles" / ("" if args.model == "supernet" else args.model)
    out = Path(args.out) if args.out else folder / f"{hardware}.json"
    with contextlib.ExitStack() as stack:
        url = args.triton_grpc
        if not url:
            http, grpc, metrics = free_ports(3)
            triton = stack.enter_context(TritonProcess(TritonConfig(
                http_port=http, grpc_port=grpc, metrics_port=metrics, models=(args.model,))))
            url = triton.cfg.grpc_url
        client = grpcclient.InferenceServerClient(url)
        batches = tuple(int(b) for b in args.batch_sizes.split(",")) if args.batch_sizes else BATCH_SIZES
        prof = build_profile(client, meta, hardware, batches, args.reps, model=args.model)
    write_profile(prof, out)
    print(f"wrote {out} ({len(prof['subnets'])} subnets, batches {prof['batch_sizes']})")
    print(f"{'subnet':22} {'acc':>6} " + " ".join(f"{'b' + str(b):>8}" for b in prof["batch_sizes"]) + "   (mean ms)")
    for r in prof["subnets"]:
        print(f"{r['name']:22} {r['accuracy']:6.4f} "
              + " ".join(f"{r['latency_ms'][str(b)]['mean']:8.2f}" for b in prof["batch_sizes"]))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from superserve.scheduler import auth, limits
    from superserve.scheduler.server import serve_forever

    if args.worker and args.workers is not None:
        print("superserve serve: give --worker URL (running Tritons) or --workers N (start N here), not both",
              file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        print(f"superserve serve: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        cfg = _serve_config(args, auth.from_args(args, args.token_env), limits.from_args(args), auth.tls_from_args(args))
        # -- cluster and autoscaling (issue 18): serve --ray ADDRESS|auto, --autoscale; see scheduler/cluster.py
        from superserve.scheduler import cluster
        try:
            cfg = cluster.configure(cfg, args)  # managed workers, supernet instances per Triton
        except ImportError as e:  # --ray without the extra
            print(f"superserve serve: --ray needs Ray: pip install 'superserve-triton[ray]' ({e})", file=sys.stderr)
            return 2
    except ValueError as e:  # bad settings, quoted
        print(f"superserve serve: {e}", file=sys.stderr)
        return 2
    return asyncio.run(serve_forever(cfg))


def _serve_config(args: argparse.Namespace, auth_cfg, limits_cfg, tls_cfg):
    from superserve.scheduler.engine import EngineConfig
    from superserve.scheduler.health import HealthConfig
    from superserve.scheduler.server import ServeConfig
    from superserve.scheduler.triton_launcher import TritonConfig

    cfg = ServeConfig(host=args.host, http_port=args.http_port, grpc_port=args.grpc_port, policy=args.policy,
                      subnet=args.subnet, workers=tuple(args.worker or ()), local_workers=args.workers or 1,
                      resolve_workers=args.resolve_workers,
                      worker_transport="http" if args.worker_http else args.worker_transport,
                      worker_http=tuple(args.worker_http or ()),
                      profile=args.profile,
                      latency_stat=args.latency_stat, variant_repository=args.variant_repository,
                      memory_budget=args.memory_budget, load_ms=args.load_ms, plan=args.plan,
                      drain_timeout_s=args.drain_timeout_s, auth=auth_cfg, insecure_public=args.insecure_public,
                      limits=limits_cfg, tls=tls_cfg,
                      # Triton stays on loopback whatever --host is: only the sidecar talks to it.
                      triton=TritonConfig(http_port=args.triton_http_port,
                                          grpc_port=args.triton_grpc_port, metrics_port=args.triton_metrics_port,
                                          log_file=args.triton_log_file, control_key=args.control_key),
                      engine=EngineConfig(default_slo_ms=args.default_slo_ms, max_slo_ms=args.max_slo_ms, queue_capacity=args.queue_capacity,
                                          max_inflight_per_worker=args.max_inflight,
                                          adapt_latency=args.adapt_latency, margin_ms=args.margin_ms,
                                          measure_margin=args.measure_margin,
                                          admission_shedding=args.admission_shedding,
                                          shed_peak_fraction=args.shed_peak_fraction, shed_drain=args.shed_drain,
                                          latency_model=args.latency_model, latency_quantile=args.latency_quantile,
                                          pipeline=args.pipeline, pipeline_lead_ms=args.pipeline_lead_ms,
                                          pipeline_min_rows=args.pipeline_min_rows,
                                          batch_log=args.batch_log,
                                          default_min_confidence=args.min_confidence),
                      health=HealthConfig(probe_interval_s=args.probe_interval_ms / 1000,
                                          max_backoff_s=max(args.probe_interval_ms / 1000, 2.0),
                                          hang_factor=args.hang_factor, hang_floor_ms=args.hang_floor_ms,
                                          max_attempts=args.max_attempts))
    return cfg


def _cmd_record(args: argparse.Namespace) -> int:
    from superserve.scheduler import paths
    from superserve.supernet import validation

    weights = Path(args.weights) if args.weights else paths.default_weights()
    rec = validation.record(weights, args.data_dir, command=command_line(), split=args.split)
    out = Path(args.out) if args.out else validation.default_path(paths.repo_root(), rec.supernet, args.split)
    rec.save(out)
    print(f"{args.split} record: {out}  ({len(rec.subnets)} subnets x {len(rec.labels)} images)")
    for i, name in enumerate(rec.subnets):
        print(f"  {name:24} {args.split} accuracy {float((rec.predictions[i] == rec.labels).mean()):.4f}  "
              f"mean max-softmax {float(rec.max_softmax[i].mean()):.3f}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from superserve.scheduler import paths, planner
    from superserve.scheduler.profile import Profile
    from superserve.scheduler.server import find_profile
    from superserve.supernet.validation import ValidationRecord, default_path

    profile = Profile.load(find_profile(args.profile))
    record = ValidationRecord.load(args.record or default_path(paths.repo_root(), profile.supernet),
                                   expect_supernet=profile.supernet)
    test_path = Path(args.test_record) if args.test_record else default_path(paths.repo_root(), profile.supernet, "test")
    test = ValidationRecord.load(test_path, profile.supernet) if test_path.exists() else None
    thresholds = tuple(float(t) for t in args.thresholds.split(",")) if args.thresholds else planner.THRESHOLDS
    cfg = planner.PlanConfig(slo_ms=args.slo_ms, margin_ms=args.margin_ms, workers=args.workers,
                             n_gears=args.gears, peak_rps=args.peak_rps)
    plan = planner.build_plan(profile, record, cfg, thresholds, args.max_stages, args.measure, test, command_line())
    out = Path(args.out) if args.out else paths.repo_root() / "plans" / f"{profile.hardware}.json"
    planner.write_plan(plan, out)
    print(f"gear plan for SLO {args.slo_ms:g} ms, peak {plan['peak_rps']} req/s: {out}")
    for g in plan["gears"]:
        print(f"  {g['min_rps']:7.1f}-{g['max_rps']:7.1f} req/s  b<={g['max_batch']:<3} val acc {g['accuracy']:.4f}  "
              f"sim p95 {g['simulated']['quantile_ms']} ms  " + " > ".join(
                  s["subnet"] + (f"@{s['threshold']:g}" if s["threshold"] is not None else "") for s in g["stages"]))
    if plan["infeasible_above_rps"] is not None:
        print(f"  SLO {args.slo_ms:g} ms is infeasible at {plan['infeasible_above_rps']} req/s and above: "
              "no cascade meets it there")
    rep = plan["report"]
    for key in ("batch_1", f"batch_{profile.max_batch}"):
        e = rep[key]
        print(f"  {key}: largest {rep['largest']['name']} val acc {rep['largest']['accuracy']:.4f}; best cascade "
              f"at no more cost {e['best_at_equal_cost']['name']} {e['best_at_equal_cost']['accuracy']:.4f}; "
              f"as accurate at {e['cheapest_as_accurate']['cost_ratio']:.2f}x the cost")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from superserve.client.simulate import main as simulate

    return simulate(args)


def _cmd_bench_decide(args: argparse.Namespace) -> int:
    from superserve.client.scheduler_bench import bench_decide

    return bench_decide(args.reps)


def _cmd_bench_overhead(args: argparse.Namespace) -> int:
    from superserve.client.overhead_bench import bench_overhead

    return bench_overhead(args.reps, args.rate, args.duration, tuple(float(r) for r in args.rates.split(",")),
                          args.step, args.compare_python, args.compare_transport, args.name)


def _cmd_bench(args: argparse.Namespace) -> int:
    from superserve.client.bench import main as bench

    return bench(args)


def _cmd_bench_fault(args: argparse.Namespace) -> int:
    from superserve.client.fault_bench import main as bench_fault

    return bench_fault(args)


def _cmd_bench_overload(args: argparse.Namespace) -> int:
    from superserve.client.overload_bench import main as bench_overload

    return bench_overload(args)


def _cmd_bench_soak(args: argparse.Namespace) -> int:
    from superserve.client.soak_bench import main as bench_soak

    return bench_soak(args)


def _cmd_bench_fuzz(args: argparse.Namespace) -> int:
    from superserve.client.fuzz_bench import main as bench_fuzz

    return bench_fuzz(args)


def _cmd_baselines(args: argparse.Namespace) -> int:
    from superserve.client import triton_fixed
    from superserve.scheduler import paths
    from superserve.scheduler.profile import Profile
    from superserve.scheduler.server import find_profile

    profile = Profile.load(find_profile(None))
    out = Path(args.out) if args.out else paths.model_repository()
    subnets = [triton_fixed.pick(profile, s) for s in args.subnets.split(",") if s]
    for name in triton_fixed.write_models(out, profile, subnets, args.slo_ms):
        print(f"wrote {out / name / 'config.pbtxt'}")
    return 0


def _cmd_add_model(args: argparse.Namespace) -> int:
    from superserve.scheduler.model_config import add_model

    try:
        written = add_model(args.family, args.weights, name=args.name, repo=args.repository,
                            baselines=args.baselines, force=args.force, max_batch_size=args.max_batch_size)
    except (OSError, ValueError, ImportError) as e:  # missing or mismatched weights, unknown family, name taken
        print(f"superserve add-model: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_import_ofa(args: argparse.Namespace) -> int:
    import numpy as np

    from superserve.supernet.ofa_adapter import import_checkpoint

    try:
        images = np.load(args.calibration_images).astype(np.float32) if args.calibration_images else None
        meta = import_checkpoint(args.checkpoint, args.out, args.resolution, args.num_classes, args.width_mult,
                                 images=images, subnets=args.subnets.split(",") if args.subnets else None,
                                 command=command_line())
    except (OSError, ImportError, ValueError) as e:  # WeightsMismatch, a bad subnet name, a missing file
        print(f"superserve import-ofa: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({len(meta['calibrated'])} subnets; {meta['calibration']}); serve it with "
          f"'superserve add-model --family ofa-mobilenetv3 --weights {args.out}'")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="superserve", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a supernet family on Fashion-MNIST, calibrate, write weights")
    t.add_argument("--family", default="elastic-cnn", help="elastic-cnn (default) or elastic-vit")
    t.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX .gz files "
                   "(default /usr/share/datasets/fashion-mnist)")
    t.add_argument("--out", help="weights path (default backends/python_supernet/weights/supernet.pt for "
                   "elastic-cnn, vit.pt for elastic-vit)")
    t.add_argument("--epochs-largest", type=int, help="default: the family's recipe (cnn 5, vit 2)")
    t.add_argument("--epochs-sandwich", type=int, help="default: the family's recipe (cnn 3, vit 6)")
    t.add_argument("--batch-size", type=int, help="default 128")
    t.add_argument("--lr", type=float, help="default: the family's recipe (cnn 0.1 SGD, vit 0.002 AdamW)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit", type=int, help="train on the first N images only (smoke runs)")
    t.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    t.set_defaults(func=_cmd_train)

    am = sub.add_parser("add-model", help="write model_repository/<name>/config.pbtxt for a supernet's weights "
                        "(family, weights, dims from the weights' metadata), after checking the weights fit")
    am.add_argument("--family", required=True, help="elastic-cnn, elastic-vit or ofa-mobilenetv3")
    am.add_argument("--weights", required=True, help="weights file (.pt with its .json beside it)")
    am.add_argument("--name", help="model name (default: the weights file's stem)")
    am.add_argument("--repository", help="model repository (default model_repository/)")
    am.add_argument("--baselines", action="store_true", help="also write <name>-fixed-<subnet> models pinned to "
                    "the smallest, a middle and the largest Pareto subnet")
    am.add_argument("--max-batch-size", type=int, default=64)
    am.add_argument("--force", action="store_true", help="overwrite existing configs")
    am.set_defaults(func=_cmd_add_model)

    io = sub.add_parser("import-ofa", help="turn a published Once-for-All MobileNetV3 checkpoint (a local file) "
                        "into weights of family ofa-mobilenetv3 (needs the optional 'ofa' package)")
    io.add_argument("--checkpoint", required=True, help="OFA's .pth state dict (e.g. ofa_mbv3_d234_e346_k357_w1.0)")
    io.add_argument("--out", required=True, help="weights to write (.pt, with .json beside it)")
    io.add_argument("--resolution", type=int, default=224)
    io.add_argument("--num-classes", type=int, default=1000)
    io.add_argument("--width-mult", type=float, default=1.0)
    io.add_argument("--calibration-images", help=".npy float32 [N, 3, R, R] in [0, 1]: per-subnet BN statistics "
                    "(default: the checkpoint's shared statistics for every subnet)")
    io.add_argument("--subnets", help="comma-separated subnet names to serve (default: the 27 uniform "
                    "kernel/ratio/depth candidates)")
    io.set_defaults(func=_cmd_import_ofa)

    tr = sub.add_parser("triton", help="run tritonserver (from the nvidia-pytriton wheel) on our model repository")
    tr.add_argument("--host", default="127.0.0.1")
    tr.add_argument("--http-port", type=int, default=8000)
    tr.add_argument("--grpc-port", type=int, default=8001)
    tr.add_argument("--metrics-port", type=int, default=8002)
    tr.add_argument("--model-repository", help="default: the repository's model_repository/")
    tr.add_argument("--model", action="append", help="load only these models (model control off); repeatable")
    tr.add_argument("--explicit-model-control", action="store_true",
                    help="let the holder of the control key (env SUPERSERVE_TRITON_CONTROL_KEY) load and unload "
                    "models, e.g. for serve --policy infaas --worker; --model then names the models loaded at start")
    tr.add_argument("--log-file", help="server log (default: a file under the system temp dir)")
    tr.set_defaults(func=_cmd_triton)

    d = sub.add_parser("demo", help="start Triton on free ports and send a short burst of real requests")
    d.add_argument("--requests", type=int, default=200)
    d.add_argument("--log-file", help="tritonserver log (default: a temp file)")
    d.set_defaults(func=_cmd_demo)

    sv = sub.add_parser("serve", help="the SuperServe scheduler (KServe v2 HTTP + gRPC) in front of Triton")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--http-port", type=int, default=8010)
    sv.add_argument("--grpc-port", type=int, default=8011)
    sv.add_argument("--policy", default="slackfit", help="slackfit, fixed, clipper, infaas or cascade")
    sv.add_argument("--plan", help="policy cascade: gear plan JSON (default plans/<hardware>.json)")
    sv.add_argument("--min-confidence", type=float, help="escalate answers below this confidence to a more "
                    "accurate subnet while slack allows, for requests that set no min_confidence (any policy)")
    sv.add_argument("--subnet", help="the one subnet policies fixed and clipper serve")
    sv.add_argument("--triton-http-port", type=int, default=8000,
                    help="local Triton ports; with --workers N, worker i uses these + 3*i; 0: free ports")
    sv.add_argument("--triton-grpc-port", type=int, default=8001)
    sv.add_argument("--triton-metrics-port", type=int, default=8002)
    sv.add_argument("--triton-log-file", help="embedded Triton's log (default: a temp file; worker i of "
                    "--workers N writes FILE.i)")
    sv.add_argument("--worker", action="append", metavar="URL",
                    help="gRPC host:port of a running Triton worker (repeatable); default: start one")
    sv.add_argument("--workers", type=int, metavar="N",
                    help="start N local Triton workers (default 1); not with --worker")
    sv.add_argument("--worker-transport", choices=("grpc", "http"), default="grpc",
                    help="how batch calls reach Triton (probes and metadata use gRPC either way); http costs less "
                    "CPU on both sides (docs/data-path.md)")
    sv.add_argument("--worker-http", action="append", metavar="HOST:PORT",
                    help="HTTP address of each --worker, in the same order: batch calls over HTTP")
    sv.add_argument("--resolve-workers", action="store_true",
                    help="use every address each --worker host resolves to, one worker each (docker compose --scale)")
    sv.add_argument("--probe-interval-ms", type=float, default=500.0,
                    help="readiness probe period per worker (backs off to 2 s while a worker is down)")
    sv.add_argument("--hang-factor", type=float, default=10.0,
                    help="a batch call is hung after max(hang-factor x its expected latency, --hang-floor-ms)")
    sv.add_argument("--hang-floor-ms", type=float, default=2000.0, help="see --hang-factor")
    sv.add_argument("--max-attempts", type=int, default=3,
                    help="dispatches per request before a worker failure is answered with an error")
    sv.add_argument("--profile", help="profile JSON (default profiles/<hardware>.json)")
    sv.add_argument("--latency-stat", choices=("mean", "p99"), default="mean",
                    help="which profiled latency the policy plans with")
    sv.add_argument("--default-slo-ms", type=float, default=100.0, help="slo_ms of requests that set none")
    sv.add_argument("--max-slo-ms", type=float, default=60_000.0, help="requests asking for more get 400")
    sv.add_argument("--queue-capacity", type=int, default=4096, help="queued requests beyond this get 503")
    sv.add_argument("--max-inflight", type=int, default=1, help="batches in flight per Triton worker")
    sv.add_argument("--memory-budget", type=int, default=4, help="policy infaas: variant models loaded at once")
    sv.add_argument("--load-ms", type=float, default=5000.0,
                    help="policy infaas: expected variant load time (replaced by the warm-up load's measured time)")
    sv.add_argument("--variant-repository", help="policy infaas: folder for the exported per-subnet models "
                    "(default: a cache folder keyed by the weights' sha256)")
    sv.add_argument("--margin-ms", type=float, default=10.0,
                    help="plan every batch to finish this long before its deadline (reply path, client)")
    sv.add_argument("--drain-timeout-s", type=float, default=10.0,
                    help="on SIGTERM/SIGINT: new requests get 503 at once; requests in flight get this long to be "
                    "answered (then 503), before the ports close and Triton stops; a second signal cuts it short")
    sv.add_argument("--measure-margin", action="store_true",
                    help="plan with max(--margin-ms, the 95th percentile of the reply times measured online)")
    sv.add_argument("--no-adapt-latency", dest="adapt_latency", action="store_false",
                    help="plan with the profile as measured, not scaled by the observed/profiled batch latency")
    sv.add_argument("--latency-model", choices=("quantile", "ewma"), default="quantile",
                    help="quantile: plan at --latency-quantile of observed/profiled batch latency, per batch size; "
                    "ewma: the profile scaled by a running mean of it (the behaviour before issue 13)")
    sv.add_argument("--latency-quantile", type=float, default=0.99,
                    help="the quantile policies plan with (about the SLO attainment target)")
    sv.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                    help="one batch in flight per worker (default: slackfit and fixed send the next batch shortly "
                    "before the running one is expected to end, planned from that time)")
    sv.add_argument("--pipeline-lead-ms", type=float, default=3.0,
                    help="send the next batch this long before the running one is expected to end")
    sv.add_argument("--pipeline-min-rows", type=int, default=8,
                    help="pipeline only while at least this many requests wait")
    sv.add_argument("--batch-log", help="append one JSON line per finished batch to this file (timings, planned "
                    "and observed latency)")
    sv.add_argument("--no-admission-shedding", dest="admission_shedding", action="store_false",
                    help="queue every request the queue has room for, even one the work ahead certainly makes "
                    "late (it is then dropped with 504 when infeasible), rather than refusing it at once with 503")
    sv.add_argument("--shed-peak-fraction", type=float, default=1.0,
                    help="admission shedding assumes the queue drains at this fraction of the profile's peak "
                    "throughput (1: never refuses what the profile could serve; lower refuses earlier); with "
                    "--shed-drain peak, or until the drain rate is measured")
    sv.add_argument("--shed-drain", choices=("peak", "measured"), default="peak",
                    help="the drain rate admission shedding assumes: peak (the planning profile's peak throughput "
                    "on every worker) or measured (rows the workers cleared under a backlog, recent full batches; "
                    "an experiment: better in one of two overload runs, worse in the other)")
    from superserve.scheduler import auth, cluster, limits
    cluster.add_arguments(sv)  # --ray, --autoscale and their options (scheduler/cluster.py)
    limits.add_arguments(sv)
    auth.add_arguments(sv)
    sv.set_defaults(func=_cmd_serve)

    pr = sub.add_parser("profile", help="measure end-to-end latency of the Pareto subnets through Triton and "
                        "write profiles/<hardware>.json")
    pr.add_argument("--triton-grpc", help="a running Triton's gRPC host:port (default: start one on free ports)")
    pr.add_argument("--model", default="supernet", help="model_repository entry to profile (default supernet; "
                    "another model's profile goes to profiles/<model>/<hardware>.json)")
    pr.add_argument("--reps", type=int, default=30, help="timed requests per (subnet, batch) point")
    pr.add_argument("--batch-sizes", help="comma-separated (default 1,2,4,8,16,32,64)")
    pr.add_argument("--hardware", help="hardware name (default: detected CPU model and cores, or GPU name)")
    pr.add_argument("--out", help="default profiles/<hardware>.json")
    pr.set_defaults(func=_cmd_profile)

    rv = sub.add_parser("record", help="record every Pareto subnet's predictions and confidences on the "
                        "validation split (for the cascade planner): profiles/validation-<sha12>.npz")
    rv.add_argument("--split", choices=("val", "test"), default="val",
                    help="val (planning input); test only to report a plan's accuracy (profiles/test-<sha12>.npz)")
    rv.add_argument("--weights", help="default backends/python_supernet/weights/supernet.pt")
    rv.add_argument("--data-dir", help="Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)")
    rv.add_argument("--out", help="default profiles/validation-<sha12>.npz")
    rv.set_defaults(func=_cmd_record)

    pl = sub.add_parser("plan", help="cascades on the validation record, their Pareto set and a gear plan per "
                        "arrival-rate range for an SLO: plans/<hardware>.json")
    pl.add_argument("--profile", help="default profiles/<hardware>.json")
    pl.add_argument("--record", help="validation record (default profiles/validation-<sha12>.npz)")
    pl.add_argument("--test-record", help="test-split record to report plan accuracy on (default "
                    "profiles/test-<sha12>.npz if present)")
    pl.add_argument("--slo-ms", type=float, default=100.0)
    pl.add_argument("--margin-ms", type=float, default=10.0, help="as superserve serve's reply margin")
    pl.add_argument("--workers", type=int, default=1, help="Triton workers the plan is for")
    pl.add_argument("--gears", type=int, default=8, help="rate ranges between 0 and the peak rate")
    pl.add_argument("--peak-rps", type=float, help="default: the fastest subnet's best throughput x workers")
    pl.add_argument("--max-stages", type=int, default=3, choices=(1, 2, 3))
    pl.add_argument("--measure", choices=("max_softmax", "margin"), default="max_softmax")
    pl.add_argument("--thresholds", help="comma-separated confidence grid (default 0.5,0.6,...,0.99)")
    pl.add_argument("--out", help="default plans/<hardware>.json")
    pl.set_defaults(func=_cmd_plan)

    sm = sub.add_parser("simulate", help="replay a trace through a policy on a virtual clock (profile latencies, "
                        "validation-record answers); no Triton needed")
    sm.add_argument("--policy", default="slackfit,cascade", help="comma-separated: slackfit, fixed:<subnet>, "
                    "clipper:<subnet>, cascade")
    sm.add_argument("--subnet", help="policies fixed and clipper")
    sm.add_argument("--plan", help="policy cascade: the gear plan (default plans/<hardware>.json)")
    sm.add_argument("--profile", help="default profiles/<hardware>.json")
    sm.add_argument("--trace", help="a saved trace (superserve trace ...); default: bursty CV2 8 at --rate")
    sm.add_argument("--rate", type=float, default=300.0, help="requests/s of the generated trace")
    sm.add_argument("--duration", type=float, default=30.0)
    sm.add_argument("--slo-ms", type=float, default=100.0)
    sm.add_argument("--margin-ms", type=float, default=10.0)
    sm.add_argument("--min-confidence", type=float, help="escalation threshold for every request")
    sm.add_argument("--workers", type=int, default=1)
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--out", help="write the summaries as JSON here")
    sm.set_defaults(func=_cmd_simulate)

    b = sub.add_parser("bench-subnetact", help="measure SubNetAct through Triton: latency per subnet, switch "
                       "cost, load time of separate models, memory; writes results/<name>.json")
    b.add_argument("--name", default="subnetact")
    b.add_argument("--reps", type=int, default=40, help="timed requests per (subnet, batch) point")
    b.set_defaults(func=_cmd_bench_subnetact)

    bd = sub.add_parser("bench-decide", help="SlackFit decision time at queue lengths 10, 100, 1000 "
                        "(results/slackfit_decision.json)")
    bd.add_argument("--reps", type=int, default=2000)
    bd.set_defaults(func=_cmd_bench_decide)

    bo = sub.add_parser("bench-overhead", help="sidecar CPU per request against Triton's own, latency it adds at "
                        "low load, dispatch throughput with a stand-in worker (results/<name>.json)")
    bo.add_argument("--reps", type=int, default=300, help="sequential requests per target for the added latency")
    bo.add_argument("--rate", type=float, default=200.0, help="open-loop rate of the CPU comparison, req/s")
    bo.add_argument("--duration", type=float, default=20.0, help="seconds per CPU comparison phase")
    bo.add_argument("--rates", default="100,250,500,750,1000,1500,2000,3000",
                    help="rising open-loop rates for the dispatch throughput, req/s")
    bo.add_argument("--step", type=float, default=5.0, help="seconds per dispatch rate")
    bo.add_argument("--compare-python", metavar="PYTHON",
                    help="also measure the sidecar run by this interpreter (e.g. an older checkout's .venv/bin/python)")
    bo.add_argument("--compare-transport", action="store_true",
                    help="also measure the sidecar with its batch calls to Triton over HTTP (--worker-http)")
    bo.add_argument("--name", default="sidecar_overhead", help="results/<name>.json")
    bo.set_defaults(func=_cmd_bench_overhead)

    from superserve.client.traces import add_parser as add_trace_parser

    add_trace_parser(sub)  # superserve trace {poisson,bursty,ramp,azure} ... --out FILE
    bl = sub.add_parser("baselines", help="write the triton-fixed baseline models (smallest, middle, largest "
                        "Pareto subnet, Triton's dynamic batcher tuned for an SLO) into model_repository/")
    bl.add_argument("--slo-ms", type=float, default=100.0)
    bl.add_argument("--subnets", default="smallest,middle,largest", help="roles or subnet names, comma-separated")
    bl.add_argument("--out", help="model repository to write into (default model_repository/)")
    bl.set_defaults(func=_cmd_baselines)

    b = sub.add_parser("bench", help="policies side by side on one open-loop trace; results/<name>.json + plots")
    b.add_argument("--policies", help="comma-separated (default: slackfit,cascade,slackfit+escalate,clipper,infaas,"
                   "triton-fixed:smallest,triton-fixed:middle,triton-fixed:largest); also slackfit-classic (SlackFit "
                   "before issue 13), fixed:<subnet>, triton-fixed:pareto (Triton's batcher on every Pareto subnet: "
                   "the frontier of fixed baselines, run after the other policies, most accurate first)")
    b.add_argument("--trace-kind", default="bursty", choices=("poisson", "bursty", "ramp", "azure"))
    b.add_argument("--trace", help="a saved trace file (superserve trace ...) instead of generating one")
    b.add_argument("--azure-file", help="Azure Functions 2019 per-minute file for --trace-kind azure "
                   "(default: the small synthetic sample in client/data/)")
    b.add_argument("--rate", type=float, default=1.0, help="mean rate as a multiple of the measured capacity")
    b.add_argument("--cv2", type=float, default=8.0, help="burstiness of the bursty trace (CV² of inter-arrivals)")
    b.add_argument("--duration", type=float, help="trace seconds (default 60, --quick 12)")
    b.add_argument("--slo-ms", default="100", help='latency target, or classes "50:0.5,200:0.5"')
    b.add_argument("--min-accuracy", help='accuracy-floor classes sent as min_accuracy, e.g. "0:0.6,0.92:0.4" '
                   "(plain Triton cannot honour them: its answers below a floor count as misses)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--capacity-rps", type=float, help="use this capacity instead of measuring it")
    b.add_argument("--quick", action="store_true", help="short CI smoke run: slackfit, clipper, triton-fixed:largest for 12 s")
    b.add_argument("--name", help="results/<name>.json (default bench, or bench-quick)")
    b.add_argument("--out-dir", help="default results/")
    b.add_argument("--serve-args", help='extra options for every superserve serve, e.g. "--margin-ms 10"')
    b.add_argument("--records", action="store_true", help="also write every request's record")
    b.add_argument("--compare-python", metavar="PYTHON",
                   help="also run each sidecar policy as <policy>@compare with this interpreter's superserve serve "
                        "(e.g. an older checkout's .venv/bin/python), on the same trace")
    b.add_argument("--noise", type=float, default=0.0, metavar="F",
                   help="run a co-tenant burning fraction F of one core (duty-cycled, seeded by --seed) during every "
                   "policy's run, the same for each; recorded in the results file")
    b.add_argument("--profile", help="profile JSON for every policy (default: this machine's)")
    b.add_argument("--frontier-stop", action="store_true",
                   help="with triton-fixed:pareto, stop once the less accurate fixed subnets cannot change the "
                   "headline ratios (client/frontier.py); the file lists those skipped")
    b.add_argument("--one-triton", action="store_true",
                   help="serve every triton-fixed run from one Triton holding all their models, started once")
    b.set_defaults(func=_cmd_bench)

    from superserve.client import sweep, sweep_report  # issue 16: the sweep and its report

    sweep.add_parser(sub)
    sweep_report.add_parser(sub)
    __import__("superserve.client.surge_bench", fromlist=["add_parser"]).add_parser(sub)  # bench-surge (issue 18)

    f = sub.add_parser("bench-fault", help="fault tolerance: 4 Triton workers under bursty load, kill -9 down to 2, "
                       "restart them; attainment and served accuracy over time -> results/<name>.json + .png")
    f.add_argument("--name", default="fault")
    f.add_argument("--workers", type=int, default=4)
    f.add_argument("--min-workers", type=int, default=2, help="kill down to this many")
    f.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    f.add_argument("--kill-at", type=float, default=8.0)
    f.add_argument("--kill-every", type=float, default=6.0)
    f.add_argument("--restart-at", type=float, default=22.0)
    f.add_argument("--restart-every", type=float, default=8.0)
    f.add_argument("--rate", type=float, default=0.6, help="mean rate as a multiple of the measured capacity "
                   "(largest subnet, one Triton); 0.6: 4 quota'd workers carry it on large subnets, 2 must use smaller ones")
    f.add_argument("--capacity-rps", type=float, help="use this capacity instead of measuring it")
    f.add_argument("--cv2", type=float, default=8.0, help="burstiness of the trace")
    f.add_argument("--slo-ms", type=float, default=100.0)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--isolation", choices=("quota", "pin", "none"), default="quota",
                   help="capacity per worker: a CPU quota each (cgroup, needs root; falls back to pin), one core "
                   "per worker index (taskset), or none")
    f.add_argument("--worker-cpu", type=float, default=0.3, help="cores per worker with --isolation quota")
    f.add_argument("--out-dir", help="default results/")
    f.add_argument("--serve-args", help='extra options for superserve serve, e.g. "--hang-floor-ms 1000"')
    f.set_defaults(func=_cmd_bench_fault)

    so = sub.add_parser("bench-soak", help="long open-loop run (30 min by default, not in CI): RSS, descriptors and "
                        "threads of the sidecar, tritonserver and its stubs at start and end, every outcome counted "
                        "-> results/<name>.json")
    so.add_argument("--name", default="soak")
    so.add_argument("--duration", type=float, default=1800.0, help="seconds of load (e.g. 60 for a quick check)")
    so.add_argument("--rps", type=float, default=150.0, help="mean request rate")
    so.add_argument("--cv2", type=float, default=4.0, help="burstiness of the trace")
    so.add_argument("--slo-ms", type=float, default=100.0)
    so.add_argument("--http-share", type=float, default=0.5, help="share of requests sent over HTTP (rest gRPC)")
    so.add_argument("--sample-s", type=float, default=10.0, help="seconds between process samples")
    so.add_argument("--seed", type=int, default=0)
    so.add_argument("--out-dir", help="default results/")
    so.add_argument("--serve-args", help='extra options for superserve serve, e.g. "--workers 2"')
    so.set_defaults(func=_cmd_bench_soak)

    o = sub.add_parser("bench-overload", help="open-loop 3x capacity then 0.7x, with and without admission "
                       "shedding: refusal latency, accepted attainment, queue depth, sidecar RSS, recovery time "
                       "-> results/<name>.json and .png")
    o.add_argument("--name", default="overload")
    o.add_argument("--capacity-rps", type=float, help="skip the capacity measurement and use this")
    o.add_argument("--overload-x", type=float, default=3.0, help="overload rate, times capacity")
    o.add_argument("--recover-x", type=float, default=0.7, help="rate after the overload, times capacity")
    o.add_argument("--overload-s", type=float, default=60.0)
    o.add_argument("--recover-s", type=float, default=30.0)
    o.add_argument("--slo-ms", type=float, default=100.0)
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--scrape-s", type=float, default=0.5, help="seconds between /metrics and RSS samples")
    o.add_argument("--warmup", type=int, default=100, help="requests before the measurement")
    o.add_argument("--compare", action="store_true",
                   help="run the same trace three times: serve as is (peak bound), serve --shed-drain measured, "
                   "serve --no-admission-shedding")
    o.add_argument("--no-admission-shedding", action="store_true",
                   help="run only the serve --no-admission-shedding arm")
    o.add_argument("--out-dir", help="default results/")
    o.add_argument("--serve-args", help='extra options for every superserve serve, e.g. "--workers 2"')
    o.set_defaults(func=_cmd_bench_overload)

    fz = sub.add_parser("bench-fuzz", help="fuzzed requests (half HTTP, half gRPC, seeded) against a fresh serve "
                        "with default options: every answer code, every 5xx/UNKNOWN/INTERNAL with its case, health "
                        "after, /metrics accounting -> results/<name>.json")
    fz.add_argument("--name", default="fuzz")
    fz.add_argument("--cases", type=int, default=10_000, help="fuzzed requests, half over each protocol")
    fz.add_argument("--seed", type=int, default=0)
    fz.add_argument("--good-every", type=int, default=100, help="a good request of each protocol after this many")
    fz.add_argument("--out-dir", help="default results/")
    fz.add_argument("--serve-args", help='extra options for superserve serve (default: none)')
    fz.set_defaults(func=_cmd_bench_fuzz)
    return p


def main(argv: list[str] | None = None) -> int:
    import os

    args = build_parser().parse_args(argv)
    # The secret for Triton's restricted APIs (model control, shared memory, trace, logging): shared by
    # `superserve triton` and `superserve serve --worker` through the environment, never a flag (flags
    # show in ps). Unset: each launched Triton gets a fresh random one.
    args.control_key = os.environ.get("SUPERSERVE_TRITON_CONTROL_KEY") or None
    args.token_env = os.environ.get("SUPERSERVE_TOKEN")  # serve's bearer token, likewise never a flag
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limiter = log_limits.install()  # at most 10 records per call site per 10 s (DEBUG exempt)
    try:
        return args.func(args)
    finally:
        limiter.report()


if __name__ == "__main__":
    sys.exit(main())
