"""``superserve profile``: end-to-end latency of every Pareto subnet at each batch size, measured
through a running Triton with gRPC (what the scheduler's dispatch pays), written as the profile
the scheduler reads (docs/design.md format)."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from superserve.supernet.progress import Progress

log = logging.getLogger(__name__)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


def input_of(weights_meta: dict) -> tuple[str, tuple[int, ...]]:
    """(input name, dims without batch) of the weights' family, from their JSON (docs/design.md)."""
    if "input" in weights_meta:
        return weights_meta["input"]["name"], tuple(weights_meta["input"]["dims"])
    from .model_config import specs  # JSON written before input specs were recorded: ask the family
    spec = specs(weights_meta)[0]
    return spec.name, spec.dims


def timed_infer(client, model: str, x: np.ndarray, subnet: str | None, input_name: str = "INPUT") -> float:
    """One synchronous gRPC infer; returns its wall time in ms."""
    inp = grpcclient.InferInput(input_name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    t = time.perf_counter()
    client.infer(model, [inp], parameters={"subnet": subnet} if subnet else None)
    return (time.perf_counter() - t) * 1000


def latency_stats(ms) -> dict:
    a = np.asarray(ms)
    return {"mean": round(float(a.mean()), 3), "p50": round(float(np.percentile(a, 50)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "n": len(a)}


def measure(client, model: str, subnets: list[str], batch_sizes, reps: int, warmup: int = 5,
            label: str = "profile", input_name: str = "INPUT", dims: tuple[int, ...] | None = None
            ) -> dict[str, dict[str, dict]]:
    """{subnet: {batch: stats}}, one request at a time (no queueing in the numbers), on random inputs
    in [0, 1) of the model's input dims (default: those of the default weights)."""
    if dims is None:
        from .. import paths
        input_name, dims = input_of(json.loads(paths.default_weights().with_suffix(".json").read_text()))
    rng = np.random.default_rng(0)
    out, bar = {}, Progress(len(subnets) * len(batch_sizes), label)
    for name in subnets:
        out[name] = {}
        for b in batch_sizes:
            x = rng.random((b, *dims), dtype=np.float32)
            for _ in range(warmup):
                timed_infer(client, model, x, name, input_name)
            out[name][str(b)] = latency_stats([timed_infer(client, model, x, name, input_name) for _ in range(reps)])
            bar.update(1, f"{name} b{b}")
    return out


def pareto_on_latency(rows: list[dict]) -> list[dict]:
    """Drop subnets that another subnet beats on accuracy while being no slower at every batch."""
    def dominated(r):
        return any(o is not r and o["accuracy"] > r["accuracy"]
                   and all(o["latency_ms"][b]["mean"] <= r["latency_ms"][b]["mean"] for b in r["latency_ms"])
                   for o in rows)
    return [r for r in rows if not dominated(r)]


def build_profile(client, weights_meta: dict, hardware: str, batch_sizes=BATCH_SIZES, reps: int = 30,
                  model: str = "supernet", warmup: int = 5, label: str = "profile") -> dict:
    acc = {r["name"]: r for r in weights_meta["subnets"]}
    names = list(weights_meta["pareto"])
    input_name, dims = input_of(weights_meta)
    lat = measure(client, model, names, batch_sizes, reps, warmup, label, input_name, dims)
    rows = [{"name": n, "accuracy": acc[n].get("test_accuracy", acc[n]["val_accuracy"]),
             "params": acc[n]["params"], "flops": 2 * acc[n]["macs"], "latency_ms": lat[n]} for n in names]
    kept = pareto_on_latency(rows)
    if len(kept) < len(rows):
        log.info("dropped %d subnets not Pareto-optimal on measured latency: %s", len(rows) - len(kept),
                 ", ".join(r["name"] for r in rows if r not in kept))
    return {"hardware": hardware, "supernet": weights_meta["sha256"], "model": model,
            "family": weights_meta.get("family", "elastic-cnn"), "batch_sizes": list(batch_sizes),
            "reps": reps, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "subnets": sorted(kept, key=lambda r: r["accuracy"])}


def write_profile(profile: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile, indent=1) + "\n")
    return path
