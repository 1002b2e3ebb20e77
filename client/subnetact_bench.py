"""``superserve bench-subnetact``: what SubNetAct buys, measured through the real Triton.

1. Latency of every Pareto subnet at batch 1, 8, 32 (gRPC, one request at a time).
2. Cost of switching subnet between consecutive requests versus keeping the same one.
3. Time Triton takes to load one subnet exported as its own model (explicit model control):
   the price a separate-models deployment (INFaaS) pays where SubNetAct switches.
4. Memory: the supernet's backend process versus the Pareto subnets as separate models
   (PSS and RSS of the Python-backend stub processes), and the bytes of weights alone.
Any supernet model of the repository (``--model vit``): its weights, input spec and family come from its
``model_repository/<model>/config.pbtxt`` and the weights' JSON, as ``serve --models`` reads them.
Writes ``results/<name>.json`` with the command, commit and hardware.
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from superserve.client import results
from superserve.scheduler.provenance import command_line
from superserve.scheduler.ports import free_ports
from superserve.scheduler.offline.profiler import latency_stats, measure, timed_infer
from superserve.scheduler.core.admission import InputSpec
from superserve.scheduler.sidecar.served_models import model_files
from superserve.scheduler.offline.variants import build_variant_repository
from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess
from superserve.supernet.checkpoint import load_checkpoint
from superserve.supernet.progress import Progress

log = logging.getLogger(__name__)


CNN_INPUT = InputSpec()
"""The built-in elastic CNN's input (1x28x28 grey)."""


def switching_cost(client, a: str, b: str, reps: int = 300, model: str = "supernet",
                   input_spec: InputSpec = CNN_INPUT) -> dict:
    """Latency of requests for ``a`` when the previous request was ``a`` versus ``b`` (batch 1),
    interleaved in one run so drift affects both alike."""
    x = np.random.default_rng(1).random((1, *input_spec.dims), dtype=np.float32)
    for _ in range(10):
        timed_infer(client, model, x, a, input_spec.name)
    same, switched, prev = [], [], a
    order = np.random.default_rng(2).random(2 * reps) < 0.5
    for use_b in order:
        if use_b:
            timed_infer(client, model, x, b, input_spec.name)
            prev = b
            continue
        ms = timed_infer(client, model, x, a, input_spec.name)
        (switched if prev == b else same).append(ms)
        prev = a
    s, w = latency_stats(same), latency_stats(switched)
    return {"subnet": a, "previous_other": b, "same_subnet_ms": s, "after_switch_ms": w,
            "switch_cost_ms_p50": round(w["p50"] - s["p50"], 3)}


def actuation_us(runner_model, names: list[str], reps: int = 2000) -> float:
    """In-process cost of choosing a subnet as the backend does per request (parse and validate the name; the
    elastic CNN also finds its SubnetNorm statistics row)."""
    row = getattr(runner_model, "row", None)  # families without per-subnet statistics rows have none
    t = time.perf_counter()
    for i in range(reps):
        cfg = runner_model.space.parse(names[i % len(names)])
        if row is not None:
            row(cfg)
    return round((time.perf_counter() - t) / reps * 1e6, 2)


def stub_memory_kb(triton: TritonProcess) -> dict[str, dict]:
    """PSS/RSS (kB) of each Python-backend stub of this server, keyed by model name."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not argv[0].endswith(b"triton_python_backend_stub") or int(argv[5]) != triton.proc.pid:
                continue
            model = argv[8].decode().rsplit("_", 2)[0]
            mem = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in
                   Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]) if k in ("Rss", "Pss")}
            out[model] = {"pss_kb": mem["Pss"], "rss_kb": mem["Rss"]}
        except (OSError, IndexError, ValueError):
            continue
    return out


def run(name: str, reps: int, command: str, model_name: str = "supernet") -> Path:
    files = model_files(model_name)
    spec = files.input
    model, meta = load_checkpoint(files.weights)
    pareto = meta["pareto"]
    result = {**results.header(command), "model": model_name, "family": files.family,
              "supernet": meta["sha256"], "pareto": pareto}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        variants = build_variant_repository(root, files.weights, with_supernet=True, config_model=model_name)
        exported = [variants[name] for name in pareto]
        http, grpc, metrics = free_ports(3)
        cfg = TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, model_repository=str(root),
                           explicit=True, models=(model_name,), log_file=str(Path(tmp) / "triton.log"))
        with TritonProcess(cfg) as triton:
            client = grpcclient.InferenceServerClient(cfg.grpc_url)
            result["latency_ms"] = measure(client, model_name, pareto, (1, 8, 32), reps, label="latency",
                                           input_name=spec.name, dims=spec.dims)
            mid = pareto[len(pareto) // 2]
            result["switching"] = {"triton_batch1": switching_cost(client, mid, pareto[0], reps * 5, model_name, spec),
                                   "in_process_actuation_us": actuation_us(model, pareto)}
            mem_supernet = stub_memory_kb(triton)[model_name]
            # Load every exported subnet as its own model, timing each load (and a reload).
            loads, bar = {}, Progress(len(exported) * 2, "load exported")
            for mname, sname in zip(exported, pareto):
                times = []
                for _ in range(2):
                    t = time.perf_counter()
                    client.load_model(mname, headers=triton.control_headers())
                    times.append((time.perf_counter() - t) * 1000)
                    if len(times) == 1:
                        client.unload_model(mname, headers=triton.control_headers())
                        while client.is_model_ready(mname):
                            time.sleep(0.05)
                    bar.update(1, mname)
                loads[sname] = {"first_load_ms": round(times[0], 1), "reload_ms": round(times[1], 1)}
            x = np.zeros((1, *spec.dims), dtype=np.float32)
            for mname in exported:  # each serves, once, so every process is warm like the supernet's
                timed_infer(client, mname, x, None, spec.name)
            mems = stub_memory_kb(triton)
            separate = [mems[m] for m in exported]
        load_ms = [v["reload_ms"] for v in loads.values()]
        result["load_as_own_model_ms"] = {"per_subnet": loads, "median_reload_ms": round(statistics.median(load_ms), 1)}
        weights_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        sep_weights = sum((root / m / "1" / "subnet.pt").stat().st_size for m in exported)
        result["memory"] = {
            "supernet_process_kb": mem_supernet,
            "separate_models_kb": {"pss_kb": sum(m["pss_kb"] for m in separate),
                                   "rss_kb": sum(m["rss_kb"] for m in separate), "models": len(separate)},
            "pss_ratio": round(sum(m["pss_kb"] for m in separate) / mem_supernet["pss_kb"], 2),
            "supernet_weights_bytes": weights_bytes,
            "separate_weights_file_bytes": sep_weights,
            "weights_ratio": round(sep_weights / weights_bytes, 2),
        }
    return results.write(result, results.named(name))


def main(name: str, reps: int, model: str = "supernet") -> int:
    command = command_line()
    out = run(name, reps, command, model)
    r = json.loads(out.read_text())
    print(f"wrote {out}")
    width = max(22, *(len(s) for s in r["pareto"]))
    print(f"{'subnet':{width}} " + " ".join(f"{'b' + b + ' p50/p99 ms':>18}" for b in ("1", "8", "32")))
    for s in r["pareto"]:
        cells = [f"{r['latency_ms'][s][b]['p50']:8.2f}/{r['latency_ms'][s][b]['p99']:<8.2f}" for b in ("1", "8", "32")]
        print(f"{s:{width}} " + " ".join(f"{c:>18}" for c in cells))
    sw, m = r["switching"], r["memory"]
    print(f"switch cost through Triton (p50, batch 1): {sw['triton_batch1']['switch_cost_ms_p50']:+.3f} ms; "
          f"in-process actuation {sw['in_process_actuation_us']} us; "
          f"loading a subnet as its own model: {r['load_as_own_model_ms']['median_reload_ms']} ms (median)")
    print(f"memory: supernet process PSS {m['supernet_process_kb']['pss_kb'] / 1024:.0f} MiB vs "
          f"{m['separate_models_kb']['models']} separate models {m['separate_models_kb']['pss_kb'] / 1024:.0f} MiB "
          f"({m['pss_ratio']}x); weights {m['supernet_weights_bytes'] / 1e6:.2f} MB vs "
          f"{m['separate_weights_file_bytes'] / 1e6:.2f} MB ({m['weights_ratio']}x)")
    return 0
