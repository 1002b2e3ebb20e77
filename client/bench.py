"""``superserve bench``: the policies side by side on one saved open-loop trace.

Each policy runs on fresh servers (its own ``superserve serve``, or for ``triton-fixed:*`` a plain
Triton with the pinned model), is warmed up, then gets exactly the same arrivals, images and SLOs.
Rates are relative to this machine's capacity: the largest subnet's best throughput, measured here
through the whole stack (load generator + Triton, same cores) unless ``--capacity-rps`` is given.
Writes ``results/<name>.json`` (docs/design.md format plus per-second series) and PNG plots beside it.

Policies: ``slackfit`` (ours) · ``slackfit-classic`` (SlackFit as before issue 13: mean latency
scaled by a running mean, one batch in flight per worker, the paper's latency buckets) · ``slackfit-paper``
(SlackFit looking only in the latency bucket just under the slack, as the paper does) · ``slackfit-drop`` (SlackFit
dropping a request that fits only the likely latency, as before it served them best effort) · ``slackfit-margin``
(SlackFit with ``serve --measure-margin``: the reply time's and the event loop's lag measured) · ``slackfit-affine[:q]``
/ ``slackfit-quantile[:q]`` (SlackFit with that latency model, scheduler/core/latency_view.py, planned at quantile q)
· ``clipper[:subnet]`` (AIMD batch on one subnet, default largest)
· ``infaas`` (cheapest variant per request; separate models loaded on demand) · ``fixed:<subnet>``
(our scheduler, one subnet) · ``triton-fixed:<subnet>`` (Triton's dynamic batcher, no sidecar).
``<subnet>`` is ``smallest``, ``middle``, ``largest`` or a profiled subnet name; ``triton-fixed:pareto``
is one ``triton-fixed:<name>`` run per Pareto subnet of the profile (the frontier of fixed baselines,
client/frontier.py), most accurate first, after every other policy. With ``frontier_stop`` those runs
stop once the less accurate subnets cannot change the headline ratios (``frontier.frontier_done``); the
file lists the subnets skipped. Each adaptive policy's two ratios against that frontier are in the file
under ``headline``.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from superserve.client import batchlog, frontier, noise, phases, priority, prometheus_text, report, results, traces, triton_fixed
from superserve.client.loadgen import (DEADLINE_SLACK_S, Target, assign_slos, records_json, run_open_loop,
                                      slo_classes)
from superserve.scheduler import paths
from superserve.scheduler.core import policy_names
from superserve.scheduler.provenance import command_line
from superserve.scheduler.ports import free_ports
from superserve.scheduler.core.profile import Profile
from superserve.scheduler.policies.slackfit import PAPER_BUCKETS
from superserve.scheduler.sidecar.server import find_profile, serve_subprocess
from superserve.scheduler.core.summary import describe, summarize
from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess
from superserve.supernet.data import load_split

DEFAULT_POLICIES = ("slackfit", "cascade", "slackfit+escalate", "clipper", "infaas", "triton-fixed:smallest",
                    "triton-fixed:middle", "triton-fixed:largest")
QUICK_POLICIES = ("slackfit", "clipper", "triton-fixed:largest")
QUICK_DURATION_S, QUICK_WARMUP = 12.0, 20
"""``bench --quick``: trace seconds and warm-up requests (otherwise BenchConfig's)."""
PAPER_ARGS = ("--slackfit-buckets", str(PAPER_BUCKETS))
"""slackfit-paper: SlackFit looking only in the latency bucket just under the slack, as the paper does."""
CLASSIC_ARGS = ("--latency-model", "ewma", "--no-pipeline", *PAPER_ARGS)
"""slackfit-classic: SlackFit with the latency handling and the bucket rule from before issue 13."""
SLACKFIT_VARIANTS = {"slackfit-classic": CLASSIC_ARGS, "slackfit-paper": PAPER_ARGS,
                     "slackfit-drop": ("--slackfit-overflow", "drop"), "slackfit-margin": ("--measure-margin",),
                     "slackfit-affine": ("--latency-model", "affine"),
                     "slackfit-quantile": ("--latency-model", "quantile")}
"""SlackFit with another latency model, for A/B runs side by side; ``<variant>:<q>`` also sets
``--latency-quantile q``."""
ESCALATE_DEFAULT = "0.8"
"""slackfit+escalate: SlackFit picks the first subnet, answers below this max-softmax go up while slack allows."""


@dataclass(frozen=True)
class BenchConfig:
    name: str = "bench"
    policies: tuple[str, ...] = DEFAULT_POLICIES
    kind: str = "bursty"
    """Trace kind: poisson, bursty, ramp or azure (ignored with ``trace_file``)."""
    rate_x: float = 1.0
    """Mean arrival rate as a multiple of the capacity."""
    cv2: float = 8.0
    duration_s: float = 60.0
    seed: int = 0
    slo: str = "100"
    """slo_ms, or classes "50:0.5,200:0.5"."""
    min_accuracy: str | None = None
    """Accuracy-floor classes "0:0.6,0.92:0.4" sent as min_accuracy (INFaaS's request contract)."""
    trace_file: str | None = None
    capacity_rps: float | None = None
    """Skip the capacity measurement and use this."""
    azure_file: str | None = None
    warmup: int = 40
    out_dir: Path = field(default_factory=lambda: paths.repo_root() / "results")
    serve_args: tuple[str, ...] = ()
    """Extra options for every ``superserve serve`` (e.g. --margin-ms 10)."""
    records: bool = False
    """Also write every request's record (large) to results/<name>.records.json."""
    compare_python: str | None = None
    """Also run every sidecar policy as ``<policy>@compare`` with this interpreter's ``superserve serve``
    (e.g. an older checkout's .venv/bin/python): before and after on the same trace, in one results file,
    in the order A B B A (second runs suffixed ``#2``)."""
    noise: float = 0.0
    """A co-tenant burning this many cores during each policy's run (noise.py; above 1: several processes)."""
    client_nice: int | None = None
    """Niceness of the load generator while it measures (priority.py; e.g. -10: a client on a host of its own,
    emulated on a busy one); None: unchanged."""
    deadline_slack_s: float = DEADLINE_SLACK_S
    """Each request's gRPC deadline is its SLO plus this (0: a client that gives up at its target, and the sidecar
    plans with what is left of the deadline, core/admission.py ``within_deadline``)."""
    profile: str | None = None
    """Profile file (default: this machine's, see server.find_profile)."""
    frontier_stop: bool = False
    """Stop the ``triton-fixed:pareto`` runs once the less accurate subnets cannot change the ratios."""
    one_triton: bool = False
    """Serve every ``triton-fixed`` run from one Triton started once (``fixed_pool``: each model loaded
    when first needed) instead of a fresh Triton per run."""
    extra: dict = field(default_factory=dict)
    """Copied into the results file as is (the sweep records its cell here)."""

    def __post_init__(self):
        noise.shares(self.noise)  # raises naming the range: [0, this host's cores]
        if self.deadline_slack_s < 0:
            raise ValueError(f"deadline_slack_s must be >= 0, got {self.deadline_slack_s}")
        if self.rate_x <= 0 or self.duration_s <= 0:
            raise ValueError(f"rate_x and duration_s must be > 0, got {self.rate_x}, {self.duration_s}")
        slo_classes(self.slo)
        if self.min_accuracy:
            slo_classes(self.min_accuracy, allow_zero=True)
        for p in self.policies:
            policy_names.parse(p, field="policies")  # PolicyNameError (a ValueError) naming the bad one


def make_trace(cfg: BenchConfig, rate_rps: float) -> traces.Trace:
    if cfg.trace_file:
        return traces.Trace.load(cfg.trace_file)
    if cfg.kind == "poisson":
        return traces.poisson(rate_rps, cfg.duration_s, cfg.seed)
    if cfg.kind == "bursty":  # half steady, half in Gamma bursts (SuperServe's synthetic traces)
        return traces.bursty(rate_rps / 2, rate_rps / 2, cfg.cv2, cfg.duration_s, cfg.seed)
    if cfg.kind == "ramp":
        return traces.ramp(rate_rps / 2, rate_rps * 1.5, rate_rps / cfg.duration_s, cfg.duration_s, cfg.seed)
    if cfg.kind == "azure":
        path = cfg.azure_file or paths.repo_root() / "client" / "data" / "azure_functions_sample.csv"
        return traces.azure(path, rate_rps, cfg.duration_s, cfg.seed)
    raise ValueError(f"unknown trace kind {cfg.kind!r}")


class FixedPool:
    """One running Triton (explicit model control) for a frontier's many ``triton-fixed`` runs at one
    SLO: each subnet's pinned model is loaded the first time a run needs it and stays loaded for the
    next cells, instead of a fresh Triton per run (6-10 s each on 2 shared cores). A loaded model no run
    is using costs memory (its Python backend process, about 250 MB), not CPU; every run still has its
    own warm-up, trace and co-tenant, and Triton queues each model's requests apart."""

    def __init__(self, triton: TritonProcess, profile: Profile, slo_ms: float, repo: Path):
        self.triton, self.profile, self.slo_ms, self.repo = triton, profile, slo_ms, repo
        self.loaded: dict[str, Target] = {}

    def target(self, subnet: str) -> Target:
        if subnet not in self.loaded:
            import tritonclient.grpc as grpcclient

            model = triton_fixed.write_models(self.repo, self.profile, [subnet], self.slo_ms)[0]
            client = grpcclient.InferenceServerClient(self.triton.cfg.grpc_url)
            try:
                client.load_model(model, headers=self.triton.control_headers())
            finally:
                client.close()
            self.loaded[subnet] = Target(self.triton.cfg.grpc_url, model=model, slo_param=False, triton_timeout=True)
        return self.loaded[subnet]


@contextlib.contextmanager
def fixed_pool(profile: Profile, slo_ms: float, workdir: Path):
    """A ``FixedPool`` on free loopback ports, stopped on exit."""
    repo = Path(workdir) / "pool-repo"
    repo.mkdir(parents=True, exist_ok=True)
    http, grpc, metrics = free_ports(3)
    cfg = TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, model_repository=str(repo),
                       explicit=True, log_file=str(Path(workdir) / "pool-triton.log"))
    with TritonProcess(cfg) as t:
        yield FixedPool(t, profile, slo_ms, repo)


@contextlib.contextmanager
def policy_server(policy: str, profile: Profile, slo_ms: float, workdir: Path, serve_args=(), python=None,
                  profile_path: str | None = None, pool: FixedPool | None = None):
    """Fresh servers for one policy; yields the load generator's Target (its ``batch_log``: the
    sidecar's per-batch log, for the schedulers). ``python``: run the sidecar with that interpreter
    instead of this one (``<policy>@compare``; an older checkout may not know --batch-log). ``pool``:
    a ``triton-fixed`` policy whose subnet it holds (for the same SLO) runs there."""
    spec = policy_names.parse(policy)
    kind, arg = spec.kind, spec.arg
    if spec.triton_fixed:
        subnet = triton_fixed.pick(profile, arg or "largest")
        if pool is not None and pool.slo_ms == slo_ms:
            yield pool.target(subnet)
            return
        repo = workdir / "repo"
        model = triton_fixed.write_models(repo, profile, [subnet], slo_ms)[0]
        http, grpc, metrics = free_ports(3)
        with TritonProcess(TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, model_repository=str(repo),
                                        models=(model,), log_file=str(workdir / "triton.log"))) as t:
            yield Target(t.cfg.grpc_url, model=model, slo_param=False, triton_timeout=True)
        return
    http, grpc, th, tg, tm = free_ports(5)
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--triton-http-port", str(th),
            "--triton-grpc-port", str(tg), "--triton-metrics-port", str(tm),
            "--policy", str(spec.served_as),
            "--default-slo-ms", str(slo_ms), "--triton-log-file", str(workdir / "triton.log")]
    if python is None:  # another checkout's serve may not know --batch-log or --request-log
        args += ["--batch-log", str(workdir / "batches.jsonl"), "--request-log", str(workdir / "requests.jsonl")]
    if profile_path:
        args += ["--profile", str(profile_path)]
    if kind in SLACKFIT_VARIANTS:
        args += list(SLACKFIT_VARIANTS[kind]) + (["--latency-quantile", arg] if arg else [])
    if kind in ("clipper", "fixed"):
        args += ["--subnet", triton_fixed.pick(profile, arg or "largest")]
    if kind == "cascade" and arg:
        args += ["--plan", arg]
    if kind == "slackfit+escalate":
        args += ["--min-confidence", arg or ESCALATE_DEFAULT]
    args += list(serve_args)
    with serve_subprocess(args, str(workdir / "serve.log"), python=python):
        yield Target(f"127.0.0.1:{grpc}", metrics_url=f"http://127.0.0.1:{http}/metrics",
                     batch_log=None if python else str(workdir / "batches.jsonl"),
                     request_log=None if python else str(workdir / "requests.jsonl"))


def scheduler_view(target: Target) -> dict:
    """The sidecar's own counts (deadline from arrival at the scheduler, not at the client), to tell
    profile error from client and transport time."""
    if not target.metrics_url:
        return {}
    samples = prometheus_text.scrape(target.metrics_url, ("sched_requests_total{", "sched_model_load",
                                                          "sched_profile_latency_scale", "sched_escalation"))
    return {k.replace("sched_requests_total{outcome=", "").strip('"}'): v for k, v in samples.items()}


async def _warm(target: Target, images, labels, n: int) -> None:
    """Closed-loop warm-up outside the measurement (first calls pay lazy initialisation)."""
    if n:
        arr = np.linspace(0, n / 200, n)
        await run_open_loop(target, arr, np.full(n, 10_000.0), images, labels)


async def _closed_loop(target: Target, images, seconds: float, concurrency: int) -> int:
    """``concurrency`` clients sending back to back for ``seconds``; returns the answers received."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio

    client = grpcaio.InferenceServerClient(target.url)
    stop = time.perf_counter() + seconds
    done = 0

    async def loop(k: int) -> None:
        nonlocal done
        inp = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(images[k:k + 1])
        while time.perf_counter() < stop:
            await client.infer(target.model, [inp])
            done += 1
    try:
        await asyncio.gather(*(loop(k) for k in range(concurrency)))
    finally:
        await client.close()
    return done


def measure_capacity(profile: Profile, images, labels, seconds: float = 6.0, concurrency: int = 64,
                     profile_path: str | None = None) -> dict:
    """The largest subnet's best throughput on this machine, load generator included: Triton's
    dynamic batcher on a model pinned to it, kept saturated by ``concurrency`` closed-loop clients
    (enough to fill its largest batches; an open-loop flood would measure the client's collapse)."""
    largest = profile.subnets[-1].name
    with tempfile.TemporaryDirectory(prefix="superserve-capacity-") as d, \
            policy_server(f"triton-fixed:{largest}", profile, 1000.0, Path(d), profile_path=profile_path) as target:
        asyncio.run(_warm(target, images, labels, 40))
        cap = asyncio.run(_closed_loop(target, images, seconds, concurrency)) / seconds
    profiled = max(b * 1000 / profile.subnets[-1].latency_ms[b] for b in profile.batch_sizes)
    print(f"capacity: {largest} answers {cap:.0f} req/s through the whole stack on this machine "
          f"(profile alone: {profiled:.0f} req/s)", flush=True)
    return {"rps": round(cap, 1), "subnet": largest, "profiled_rps": round(profiled, 1),
            "method": f"triton-fixed largest, {concurrency} closed-loop gRPC clients for {seconds:.0f} s"}


PARETO = f"triton-fixed:{policy_names.PARETO}"


def expand_pareto(policies: tuple[str, ...], profile: Profile) -> tuple[list[str], list[str]]:
    """(policies to run in order, the frontier runs): ``triton-fixed:pareto`` becomes one
    ``triton-fixed:<subnet>`` per Pareto subnet, most accurate first, after every other policy (the
    stopping rule needs the adaptive policies' points); subnets already named explicitly are not
    run twice."""
    if PARETO not in policies:
        return list(policies), []
    rest = [p for p in policies if p != PARETO]
    named = {triton_fixed.pick(profile, s.arg or "largest") for s in map(policy_names.parse, rest) if s.triton_fixed}
    sweep = [f"triton-fixed:{s.name}" for s in reversed(profile.subnets) if s.name not in named]
    return rest + sweep, sweep


def _headlines(result: dict, accuracy_of: dict[str, float]) -> dict:
    return {p: frontier.headline(result, p, accuracy_of=accuracy_of)
            for p in result["policies"] if frontier.is_adaptive(p)}


def run(cfg: BenchConfig, command: str, pool: FixedPool | None = None) -> Path:
    """One results file: every policy of ``cfg`` on the same trace. ``pool``: a running Triton with the
    fixed models (``fixed_pool``); without it, with ``cfg.one_triton``, one is started for this run."""
    if pool is None and cfg.one_triton and any(policy_names.parse(p).triton_fixed for p in cfg.policies):
        profile = Profile.load(str(find_profile(cfg.profile)))
        slo = max(s for s, _ in slo_classes(cfg.slo))
        with tempfile.TemporaryDirectory(prefix="superserve-pool-") as d, fixed_pool(profile, slo, Path(d)) as p:
            return run(cfg, command, p)
    profile_path = str(find_profile(cfg.profile))
    profile = Profile.load(profile_path)
    accuracy_of = {s.name: s.accuracy for s in profile.subnets}
    images, labels = load_split("test")
    capacity = {"rps": cfg.capacity_rps, "method": "given (--capacity-rps)"} if cfg.capacity_rps else \
        measure_capacity(profile, images, labels, profile_path=profile_path)
    trace = make_trace(cfg, cfg.rate_x * capacity["rps"])
    classes = slo_classes(cfg.slo)
    slos = assign_slos(len(trace.arrivals_s), classes, cfg.seed)
    floors = assign_slos(len(trace.arrivals_s), slo_classes(cfg.min_accuracy, allow_zero=True), cfg.seed, stream=104729) \
        if cfg.min_accuracy else None
    print(f"trace: {trace.kind}, {len(trace.arrivals_s)} requests over {trace.duration_s:.0f} s "
          f"({trace.rate_rps:.0f} req/s = {trace.rate_rps / capacity['rps']:.2f}x capacity), slo_ms {cfg.slo}", flush=True)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trace_path = trace.save(out_dir / f"{cfg.name}.trace.json")
    result = dict(results.header(command),
                  trace=dict(trace.describe(), file=trace_path.name), slo_ms=cfg.slo,
                  min_accuracy=cfg.min_accuracy, serve_args=list(cfg.serve_args), capacity=capacity,
                  rate_x=cfg.rate_x, profile=Path(profile_path).name,
                  pareto_accuracy_range=[profile.subnets[0].accuracy, profile.subnets[-1].accuracy],
                  noise={"fraction_of_core": cfg.noise, "processes": len(noise.shares(cfg.noise)), "seed": cfg.seed, "cycle_ms": [noise.MIN_CYCLE_MS, noise.MAX_CYCLE_MS],
                         "method": "a duty-cycled spinning process, restarted with the same seed for each policy's "
                                   "warm-up and run"},
                  compare_python=cfg.compare_python,
                  fixed_servers="one Triton holding every fixed model (bench.fixed_pool)" if pool else
                  "a fresh Triton per fixed run", **cfg.extra, policies={}, series={})
    all_records = {}
    order, pareto_runs = expand_pareto(cfg.policies, profile)
    runs = [(p, None) for p in order]
    if cfg.compare_python:  # A B B A per sidecar policy, so a drift in the machine's other load hits both alike
        runs = [r for p in order for r in ([(p, None)] if policy_names.parse(p).triton_fixed or  # a variant is
                                           policy_names.kind_of(p) in SLACKFIT_VARIANTS else  # itself the comparison
                                           [(p, None), (p + "@compare", cfg.compare_python),
                                            (p + "@compare#2", cfg.compare_python), (p + "#2", None)])]
    if pareto_runs:
        result["frontier"] = {"subnets": pareto_runs, "run": [], "skipped": [],
                              "stop_rule": "frontier_done (client/frontier.py)" if cfg.frontier_stop else "none: every subnet"}
    for i, (policy, python) in enumerate(runs):
        if policy in pareto_runs and cfg.frontier_stop and result["frontier"]["run"] and _frontier_done(result, accuracy_of):
            result["frontier"]["skipped"] = [p for p, _ in runs[i:] if p in pareto_runs]
            print(f"frontier: the {len(result['frontier']['skipped'])} less accurate fixed subnets left cannot change "
                  f"the ratios; skipped", flush=True)
            break
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="superserve-bench-") as d:
            with policy_server(policy_names.parse(policy).base, profile, max(s for s, _ in classes), Path(d),
                               cfg.serve_args, python, profile_path, pool) as target, noise.cotenant(cfg.noise, cfg.seed):
                asyncio.run(_warm(target, images, labels, cfg.warmup))
                before = scheduler_view(target)
                skip, skip_requests = batchlog.count(target.batch_log), batchlog.count(target.request_log)
                with priority.client_nice(cfg.client_nice) as applied:
                    recs = asyncio.run(run_open_loop(target, trace.arrivals_s, slos, images, labels, floors,
                                                     deadline_slack_s=cfg.deadline_slack_s))
                result["client_nice"] = {"asked": cfg.client_nice, "applied": applied}
                after = scheduler_view(target)
                batches = batchlog.summarize(batchlog.read(target.batch_log, skip=skip))
                where = phases.from_files(recs, target.request_log, skip=skip_requests)
        summary = summarize(recs)
        spec = policy_names.parse(policy)
        if spec.triton_fixed and not spec.compare:
            sub = triton_fixed.pick(profile, spec.arg or "largest")
            summary["fixed_subnet"], summary["fixed_accuracy"] = sub, accuracy_of[sub]
        if policy in pareto_runs:
            result["frontier"]["run"].append(policy)
        if batches:
            summary["batches"] = batches
        if where:
            summary["phases"] = where
        if after:
            summary["scheduler_view"] = {k: round(v - before.get(k, 0), 3) if not k.endswith("scale") else v
                                         for k, v in after.items()}
        summary["run_s"] = round(time.monotonic() - t0, 1)
        result["policies"][policy] = summary
        result["series"][policy] = report.series(recs, trace.duration_s)
        all_records[policy] = recs
        print(f"{policy:28} {describe(summary)}  ({time.monotonic() - t0:.0f} s)", flush=True)
        if batches:
            print(f"{'':28} batches {batches['n']}  observed/planned p50 {batches['observed_over_planned']['p50']} "
                  f"p99 {batches['observed_over_planned']['p99']}  over plan {batches['over_plan_share']}  "
                  f"worker idle {batches['worker_idle_ms_per_batch']} ms/batch ({batches['worker_idle_share']} of "
                  f"backlogged time)  final factor {batches['final_factor']}", flush=True)
        if where and where["late"]:
            lp = where["late_answers"]
            print(f"{'':28} {where['late']} late at the client: p50 ms to scheduler {lp['to_scheduler']['p50']}, "
                  f"in it {lp['in_scheduler']['p50']}, back to client {lp['to_client']['p50']}; most time lost "
                  f"{where['late_blame']}", flush=True)
    result["arrivals_per_s"] = report.arrival_series(trace, 1.0)
    if any(policy_names.parse(p).triton_fixed for p in result["policies"]):
        result["headline"] = _headlines(result, accuracy_of)
        for p, h in result["headline"].items():
            print(f"{p:28} vs the fixed frontier ({h['fixed_runs']} subnets): accuracy gain at 0.99 "
                  f"{_fmt(h['gain_at_target'])} (real {_fmt(h['real_gain_at_target'])}, best fixed at 0.99 "
                  f"{h['best_fixed_at_target']}), at equal attainment {_fmt(h['gain_at_equal_attainment'])}; "
                  f"attainment ratio at equal accuracy "
                  f"{'n/a' if h['attainment_ratio'] is None else format(h['attainment_ratio'], '.3f')}", flush=True)
    path = results.write(result, out_dir / f"{cfg.name}.json")
    if cfg.records:
        (out_dir / f"{cfg.name}.records.json").write_text(
            json.dumps({p: records_json(r) for p, r in all_records.items()}))
    for png in report.plots(result, all_records, out_dir / cfg.name):
        print(f"plot {png}")
    print(f"wrote {path}")
    return path


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def _frontier_done(result: dict, accuracy_of: dict[str, float]) -> bool:
    fixed = {p.name: p for p in frontier.fixed_points(result, accuracy_of)}
    run = [fixed[p] for p in result["frontier"]["run"] if p in fixed]
    named = [q for n, q in fixed.items() if n not in result["frontier"]["run"]]
    adaptive = [frontier.Point(p, s["mean_served_accuracy"], s["slo_attainment"])
                for p, s in result["policies"].items() if frontier.is_adaptive(p) and s.get("mean_served_accuracy")]
    # explicitly named fixed subnets count where they fall in accuracy order
    ordered = sorted(run + named, key=lambda q: -q.accuracy)
    upto = [q for q in ordered if q.accuracy >= run[-1].accuracy]
    return frontier.frontier_done(upto, adaptive)


def main(args) -> int:
    policies = tuple(p for p in args.policies.split(",") if p) if args.policies else \
        (QUICK_POLICIES if args.quick else DEFAULT_POLICIES)
    cfg = BenchConfig(name=args.name or ("bench-quick" if args.quick else "bench"), policies=policies,
                      kind=args.trace_kind, rate_x=args.rate, cv2=args.cv2,
                      duration_s=args.duration or (QUICK_DURATION_S if args.quick else BenchConfig.duration_s),
                      seed=args.seed, slo=args.slo_ms,
                      min_accuracy=args.min_accuracy, trace_file=args.trace, capacity_rps=args.capacity_rps, azure_file=args.azure_file,
                      warmup=QUICK_WARMUP if args.quick else BenchConfig.warmup, records=args.records,
                      compare_python=args.compare_python,
                      serve_args=tuple(shlex.split(args.serve_args or "")), noise=args.noise, profile=args.profile,
                      client_nice=getattr(args, "client_nice", None),
                      deadline_slack_s=getattr(args, "deadline_slack_s", DEADLINE_SLACK_S),
                      frontier_stop=getattr(args, "frontier_stop", False), one_triton=getattr(args, "one_triton", False),
                      out_dir=Path(args.out_dir) if args.out_dir else paths.repo_root() / "results")
    command = command_line()
    run(cfg, command)
    return 0
