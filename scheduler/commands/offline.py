"""Offline tools, run before serving: ``superserve train``, ``add-model``, ``import-ofa``, ``profile``, ``record``,
``plan``, ``simulate`` and ``baselines``. Defaults come from TrainConfig, PlanConfig, EngineConfig, SimConfig
and the signatures of the functions each command calls."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from superserve.scheduler.provenance import command_line

from . import default_of


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    subparsers.add_parser(
        "train", help="train a supernet family on Fashion-MNIST, calibrate, write weights", arguments=_train_arguments
    )
    subparsers.add_parser(
        "add-model",
        help="write model_repository/<name>/config.pbtxt for a supernet's weights "
        "(family, weights, dims from the weights' metadata), after checking the weights fit",
        arguments=_add_model_arguments,
    )
    subparsers.add_parser(
        "import-ofa",
        help="turn a published Once-for-All MobileNetV3 checkpoint (a local file) "
        "into weights of family ofa-mobilenetv3 (needs the optional 'ofa' package)",
        arguments=_import_ofa_arguments,
    )
    subparsers.add_parser(
        "profile",
        help="measure end-to-end latency of the Pareto subnets through Triton and write profiles/<hardware>.json",
        arguments=_profile_arguments,
    )
    subparsers.add_parser(
        "record",
        help="record every Pareto subnet's predictions and confidences on the "
        "validation split (for the cascade planner): profiles/validation-<sha12>.npz",
        arguments=_record_arguments,
    )
    subparsers.add_parser(
        "plan",
        help="cascades on the validation record, their Pareto set and a gear plan per "
        "arrival-rate range for an SLO: plans/<hardware>.json",
        arguments=_plan_arguments,
    )
    subparsers.add_parser(
        "simulate",
        help="replay a trace through a policy on a virtual clock (profile latencies, "
        "validation-record answers); no Triton needed",
        arguments=_simulate_arguments,
    )
    subparsers.add_parser(
        "baselines",
        help="write the triton-fixed baseline models (smallest, middle, largest "
        "Pareto subnet, Triton's dynamic batcher tuned for an SLO) into model_repository/",
        arguments=_baselines_arguments,
    )


def _train_arguments(t: argparse.ArgumentParser) -> None:
    from superserve.supernet.train import TrainConfig

    t.add_argument("--family", default="elastic-cnn", help="elastic-cnn (default) or elastic-vit")
    t.add_argument(
        "--data-dir", help="folder with the Fashion-MNIST IDX .gz files (default /usr/share/datasets/fashion-mnist)"
    )
    t.add_argument(
        "--out",
        help="weights path (default backends/python_supernet/weights/supernet.pt for "
        "elastic-cnn, vit.pt for elastic-vit)",
    )
    t.add_argument("--epochs-largest", type=int, help="default: the family's recipe (cnn 5, vit 2)")
    t.add_argument("--epochs-sandwich", type=int, help="default: the family's recipe (cnn 3, vit 6)")
    t.add_argument("--batch-size", type=int, help="default 128")
    t.add_argument("--lr", type=float, help="default: the family's recipe (cnn 0.1 SGD, vit 0.002 AdamW)")
    t.add_argument("--seed", type=int, default=TrainConfig().seed)
    t.add_argument("--limit", type=int, help="train on the first N images only (smoke runs)")
    t.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    t.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from superserve.scheduler.paths import backend_dir
    from superserve.supernet.pipeline import DEFAULT_OUT, TRAIN_DEFAULTS, train_supernet

    if args.family not in TRAIN_DEFAULTS:
        print(
            f"superserve train: --family must be one of {', '.join(TRAIN_DEFAULTS)} (families trained here), "
            f"not {args.family!r}",
            file=sys.stderr,
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    given = {
        k: getattr(args, k)
        for k in ("epochs_largest", "epochs_sandwich", "batch_size", "lr", "limit")
        if getattr(args, k) is not None
    }
    cfg = dataclasses.replace(TRAIN_DEFAULTS[args.family], seed=args.seed, **given)
    out = args.out or backend_dir() / "weights" / DEFAULT_OUT[args.family]
    command = command_line()
    meta = train_supernet(out, cfg, args.data_dir, device, command, family=args.family)
    print(f"weights: {out}  sha256 {meta['sha256']}")
    print(f"{'subnet':24} {'val':>6} {'test':>6} {'ms@b8':>7} {'MMACs':>7}")
    for r in meta["subnets"]:
        if r["pareto"]:
            print(
                f"{r['name']:24} {r['val_accuracy']:6.4f} {r.get('test_accuracy', 0):6.4f} "
                f"{r['latency_ms']:7.3f} {r['macs'] / 1e6:7.2f}"
            )
    return 0


def _add_model_arguments(am: argparse.ArgumentParser) -> None:
    from superserve.scheduler.offline.model_config import add_model

    am.add_argument("--family", required=True, help="elastic-cnn, elastic-vit or ofa-mobilenetv3")
    am.add_argument("--weights", required=True, help="weights file (.pt with its .json beside it)")
    am.add_argument("--name", help="model name (default: the weights file's stem)")
    am.add_argument("--repository", help="model repository (default model_repository/)")
    am.add_argument(
        "--baselines",
        action="store_true",
        help="also write <name>-fixed-<subnet> models pinned to the smallest, a middle and the largest Pareto subnet",
    )
    am.add_argument("--max-batch-size", type=int, default=default_of(add_model, "max_batch_size"))
    am.add_argument("--force", action="store_true", help="overwrite existing configs")
    am.set_defaults(func=_cmd_add_model)


def _cmd_add_model(args: argparse.Namespace) -> int:
    from superserve.scheduler.offline.model_config import add_model

    try:
        written = add_model(
            args.family,
            args.weights,
            name=args.name,
            repo=args.repository,
            baselines=args.baselines,
            force=args.force,
            max_batch_size=args.max_batch_size,
        )
    except (OSError, ValueError, ImportError) as e:  # missing or mismatched weights, unknown family, name taken
        print(f"superserve add-model: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


def _import_ofa_arguments(io: argparse.ArgumentParser) -> None:
    from superserve.supernet.ofa_adapter import import_checkpoint

    io.add_argument("--checkpoint", required=True, help="OFA's .pth state dict (e.g. ofa_mbv3_d234_e346_k357_w1.0)")
    io.add_argument("--out", required=True, help="weights to write (.pt, with .json beside it)")
    io.add_argument("--resolution", type=int, default=default_of(import_checkpoint, "resolution"))
    io.add_argument("--num-classes", type=int, default=default_of(import_checkpoint, "num_classes"))
    io.add_argument("--width-mult", type=float, default=default_of(import_checkpoint, "width_mult"))
    io.add_argument(
        "--calibration-images",
        help=".npy float32 [N, 3, R, R] in [0, 1]: per-subnet BN statistics "
        "(default: the checkpoint's shared statistics for every subnet)",
    )
    io.add_argument(
        "--subnets",
        help="comma-separated subnet names to serve (default: the 27 uniform kernel/ratio/depth candidates)",
    )
    io.set_defaults(func=_cmd_import_ofa)


def _cmd_import_ofa(args: argparse.Namespace) -> int:
    import numpy as np

    from superserve.supernet.ofa_adapter import import_checkpoint

    try:
        images = np.load(args.calibration_images).astype(np.float32) if args.calibration_images else None
        meta = import_checkpoint(
            args.checkpoint,
            args.out,
            args.resolution,
            args.num_classes,
            args.width_mult,
            images=images,
            subnets=args.subnets.split(",") if args.subnets else None,
            command=command_line(),
        )
    except (OSError, ImportError, ValueError) as e:  # WeightsMismatch, a bad subnet name, a missing file
        print(f"superserve import-ofa: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out} ({len(meta['calibrated'])} subnets; {meta['calibration']}); serve it with "
        f"'superserve add-model --family ofa-mobilenetv3 --weights {args.out}'"
    )
    return 0


def _profile_arguments(pr: argparse.ArgumentParser) -> None:
    from superserve.scheduler.offline.profiler import build_profile

    pr.add_argument("--triton-grpc", help="a running Triton's gRPC host:port (default: start one on free ports)")
    pr.add_argument(
        "--model",
        default=default_of(build_profile, "model"),
        help="model_repository entry to "
        "profile (default supernet; another model's profile goes to profiles/<model>/<hardware>.json)",
    )
    pr.add_argument(
        "--reps", type=int, default=default_of(build_profile, "reps"), help="timed requests per (subnet, batch) point"
    )
    pr.add_argument("--batch-sizes", help="comma-separated (default 1,2,4,8,16,32,64)")
    pr.add_argument("--hardware", help="hardware name (default: detected CPU model and cores, or GPU name)")
    pr.add_argument("--out", help="default profiles/<hardware>.json")
    pr.set_defaults(func=_cmd_profile)


def _cmd_profile(args: argparse.Namespace) -> int:
    import contextlib
    import json

    import tritonclient.grpc as grpcclient

    from superserve.scheduler import paths
    from superserve.scheduler.offline.model_config import model_weights
    from superserve.scheduler.ports import free_ports
    from superserve.scheduler.offline.profiler import BATCH_SIZES, build_profile, write_profile
    from superserve.scheduler.provenance import hardware_name
    from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess

    config = paths.model_repository() / args.model / "config.pbtxt"
    if not config.exists():
        print(
            f"superserve profile: no model {args.model!r} in {paths.model_repository()} "
            "('superserve add-model' writes one)",
            file=sys.stderr,
        )
        return 2
    named = Path(model_weights(config.read_text()) or paths.default_weights())
    weights = named if named.is_absolute() else paths.backend_dir() / named
    meta = json.loads(weights.with_suffix(".json").read_text())
    hardware = args.hardware or hardware_name()
    # The default model's profile is profiles/<hardware>.json; another model's profiles/<model>/<hardware>.json.
    folder = paths.repo_root() / "profiles" / ("" if args.model == "supernet" else args.model)
    out = Path(args.out) if args.out else folder / f"{hardware}.json"
    with contextlib.ExitStack() as stack:
        url = args.triton_grpc
        if not url:
            http, grpc, metrics = free_ports(3)
            triton = stack.enter_context(
                TritonProcess(TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, models=(args.model,)))
            )
            url = triton.cfg.grpc_url
        client = grpcclient.InferenceServerClient(url)
        batches = tuple(int(b) for b in args.batch_sizes.split(",")) if args.batch_sizes else BATCH_SIZES
        prof = build_profile(client, meta, hardware, batches, args.reps, model=args.model)
    write_profile(prof, out)
    print(f"wrote {out} ({len(prof['subnets'])} subnets, batches {prof['batch_sizes']})")
    print(f"{'subnet':22} {'acc':>6} " + " ".join(f"{'b' + str(b):>8}" for b in prof["batch_sizes"]) + "   (mean ms)")
    for r in prof["subnets"]:
        print(
            f"{r['name']:22} {r['accuracy']:6.4f} "
            + " ".join(f"{r['latency_ms'][str(b)]['mean']:8.2f}" for b in prof["batch_sizes"])
        )
    return 0


def _record_arguments(rv: argparse.ArgumentParser) -> None:
    from superserve.supernet import validation

    rv.add_argument(
        "--split",
        choices=("val", "test"),
        default=default_of(validation.record, "split"),
        help="val (planning input); test only to report a plan's accuracy (profiles/test-<sha12>.npz)",
    )
    rv.add_argument("--weights", help="default backends/python_supernet/weights/supernet.pt")
    rv.add_argument("--data-dir", help="Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)")
    rv.add_argument("--out", help="default profiles/validation-<sha12>.npz")
    rv.set_defaults(func=_cmd_record)


def _cmd_record(args: argparse.Namespace) -> int:
    from superserve.scheduler import paths
    from superserve.supernet import validation

    weights = Path(args.weights) if args.weights else paths.default_weights()
    rec = validation.record(weights, args.data_dir, command=command_line(), split=args.split)
    out = Path(args.out) if args.out else validation.default_path(paths.repo_root(), rec.supernet, args.split)
    rec.save(out)
    print(f"{args.split} record: {out}  ({len(rec.subnets)} subnets x {len(rec.labels)} images)")
    for i, name in enumerate(rec.subnets):
        print(
            f"  {name:24} {args.split} accuracy {float((rec.predictions[i] == rec.labels).mean()):.4f}  "
            f"mean max-softmax {float(rec.max_softmax[i].mean()):.3f}"
        )
    return 0


def _plan_arguments(pl: argparse.ArgumentParser) -> None:
    from superserve.scheduler.offline.planner import PlanConfig, build_plan

    c = PlanConfig()
    pl.add_argument("--profile", help="default profiles/<hardware>.json")
    pl.add_argument("--record", help="validation record (default profiles/validation-<sha12>.npz)")
    pl.add_argument(
        "--test-record",
        help="test-split record to report plan accuracy on (default profiles/test-<sha12>.npz if present)",
    )
    pl.add_argument("--slo-ms", type=float, default=c.slo_ms)
    pl.add_argument("--margin-ms", type=float, default=c.margin_ms, help="as superserve serve's reply margin")
    pl.add_argument("--workers", type=int, default=c.workers, help="Triton workers the plan is for")
    pl.add_argument("--gears", type=int, default=c.n_gears, help="rate ranges between 0 and the peak rate")
    pl.add_argument("--peak-rps", type=float, help="default: the fastest subnet's best throughput x workers")
    pl.add_argument("--max-stages", type=int, default=default_of(build_plan, "max_stages"), choices=(1, 2, 3))
    pl.add_argument("--measure", choices=("max_softmax", "margin"), default=default_of(build_plan, "measure"))
    pl.add_argument("--thresholds", help="comma-separated confidence grid (default 0.5,0.6,...,0.99)")
    pl.add_argument("--out", help="default plans/<hardware>.json")
    pl.set_defaults(func=_cmd_plan)


def _cmd_plan(args: argparse.Namespace) -> int:
    from superserve.scheduler import paths
    from superserve.scheduler.offline import planner
    from superserve.scheduler.core.profile import Profile
    from superserve.scheduler.sidecar.server import find_profile
    from superserve.supernet.validation import ValidationRecord, default_path

    profile = Profile.load(find_profile(args.profile))
    record = ValidationRecord.load(
        args.record or default_path(paths.repo_root(), profile.supernet), expect_supernet=profile.supernet
    )
    test_path = (
        Path(args.test_record) if args.test_record else default_path(paths.repo_root(), profile.supernet, "test")
    )
    test = ValidationRecord.load(test_path, profile.supernet) if test_path.exists() else None
    thresholds = tuple(float(t) for t in args.thresholds.split(",")) if args.thresholds else planner.THRESHOLDS
    cfg = planner.PlanConfig(
        slo_ms=args.slo_ms, margin_ms=args.margin_ms, workers=args.workers, n_gears=args.gears, peak_rps=args.peak_rps
    )
    plan = planner.build_plan(profile, record, cfg, thresholds, args.max_stages, args.measure, test, command_line())
    out = Path(args.out) if args.out else paths.repo_root() / "plans" / f"{profile.hardware}.json"
    planner.write_plan(plan, out)
    print(f"gear plan for SLO {args.slo_ms:g} ms, peak {plan['peak_rps']} req/s: {out}")
    for g in plan["gears"]:
        print(
            f"  {g['min_rps']:7.1f}-{g['max_rps']:7.1f} req/s  b<={g['max_batch']:<3} val acc {g['accuracy']:.4f}  "
            f"sim p95 {g['simulated']['quantile_ms']} ms  "
            + " > ".join(
                s["subnet"] + (f"@{s['threshold']:g}" if s["threshold"] is not None else "") for s in g["stages"]
            )
        )
    if plan["infeasible_above_rps"] is not None:
        print(
            f"  SLO {args.slo_ms:g} ms is infeasible at {plan['infeasible_above_rps']} req/s and above: "
            "no cascade meets it there"
        )
    rep = plan["report"]
    for key in ("batch_1", f"batch_{profile.max_batch}"):
        e = rep[key]
        print(
            f"  {key}: largest {rep['largest']['name']} val acc {rep['largest']['accuracy']:.4f}; best cascade "
            f"at no more cost {e['best_at_equal_cost']['name']} {e['best_at_equal_cost']['accuracy']:.4f}; "
            f"as accurate at {e['cheapest_as_accurate']['cost_ratio']:.2f}x the cost"
        )
    return 0


def _simulate_arguments(sm: argparse.ArgumentParser) -> None:
    from superserve.scheduler.sidecar.engine import EngineConfig
    from superserve.scheduler.offline.sim import SimConfig

    e, h = EngineConfig(), SimConfig()  # simulate plans as superserve serve does by default, on SimConfig's host
    sm.add_argument(
        "--policy",
        default="slackfit,cascade",
        help="comma-separated: slackfit, fixed:<subnet>, clipper:<subnet>, cascade",
    )
    sm.add_argument("--subnet", help="policies fixed and clipper")
    sm.add_argument("--plan", help="policy cascade: the gear plan (default plans/<hardware>.json)")
    sm.add_argument("--profile", help="default profiles/<hardware>.json")
    sm.add_argument("--trace", help="a saved trace (superserve trace ...); default: bursty CV2 8 at --rate")
    sm.add_argument("--rate", type=float, default=300.0, help="requests/s of the generated trace")
    sm.add_argument("--duration", type=float, default=30.0)
    sm.add_argument("--slo-ms", default=e.default_slo_ms, help="ms; with --models also MODEL=MS,...")
    sm.add_argument(
        "--models",
        help="simulate several served models on one queue (as serve --models), each request for one of them; "
        "--profile and --subnet then take MODEL=VALUE,...",
    )
    sm.add_argument("--margin-ms", type=float, default=e.margin_ms)
    sm.add_argument("--min-confidence", type=float, help="escalation threshold for every request")
    sm.add_argument("--workers", type=int, default=h.workers)
    from superserve.scheduler.core import latency_view

    sm.add_argument(
        "--latency-model",
        choices=latency_view.KINDS,
        default=e.latency_model,
        help="the latency model policies plan with, as serve's (slackfit-affine[:q] and slackfit-quantile[:q] "
        "in --policy pick one per run)",
    )
    sm.add_argument("--latency-quantile", type=float, default=e.latency_quantile)
    sm.add_argument(
        "--no-adapt-latency",
        dest="adapt_latency",
        action="store_false",
        default=e.adapt_latency,
        help="plan with the profile as measured",
    )
    sm.add_argument(
        "--host-scale", type=float, default=1.0, help="the simulated host runs every forward at this times the profile"
    )
    sm.add_argument("--jitter", type=float, default=h.jitter_sigma, help="lognormal sigma of each batch's latency")
    sm.add_argument("--call-ms", type=float, default=h.call_ms, help="added to every batch (the hop, the reply path)")
    sm.add_argument(
        "--stall-share",
        type=float,
        default=h.stall_share,
        help="share of batches that stall (a shared host descheduling the worker)",
    )
    sm.add_argument("--stall-ms", type=float, default=h.stall_ms, help="mean stall, ms (exponential)")
    sm.add_argument("--seed", type=int, default=h.seed, help="of the trace, the images drawn and the simulated host")
    sm.add_argument("--out", help="write the summaries as JSON here")
    sm.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from superserve.client.simulate import main as simulate

    return simulate(args)


def _baselines_arguments(bl: argparse.ArgumentParser) -> None:
    from superserve.scheduler.sidecar.engine import EngineConfig

    bl.add_argument("--slo-ms", type=float, default=EngineConfig().default_slo_ms)
    bl.add_argument("--subnets", default="smallest,middle,largest", help="roles or subnet names, comma-separated")
    bl.add_argument("--out", help="model repository to write into (default model_repository/)")
    bl.set_defaults(func=_cmd_baselines)


def _cmd_baselines(args: argparse.Namespace) -> int:
    from superserve.client import triton_fixed
    from superserve.scheduler import paths
    from superserve.scheduler.core.profile import Profile
    from superserve.scheduler.sidecar.server import find_profile

    profile = Profile.load(find_profile(None))
    out = Path(args.out) if args.out else paths.model_repository()
    subnets = [triton_fixed.pick(profile, s) for s in args.subnets.split(",") if s]
    for name in triton_fixed.write_models(out, profile, subnets, args.slo_ms):
        print(f"wrote {out / name / 'config.pbtxt'}")
    return 0
