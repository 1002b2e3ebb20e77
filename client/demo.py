"""``superserve demo``: start the real Triton on free loopback ports, send a short concurrent burst
of labelled Fashion-MNIST test images over gRPC spread across the Pareto subnets, and print what
came back (per subnet: answers, accuracy on the labels, latency, batch sizes)."""
from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import defaultdict

import numpy as np
import tritonclient.grpc.aio as grpcaio
import tritonclient.grpc as grpcclient

from superserve.scheduler.triton_launcher import TritonConfig, TritonProcess
from superserve.supernet.data import load_split


async def _burst(url: str, subnets: list[str], images: np.ndarray, labels: np.ndarray) -> list[dict]:
    client = grpcaio.InferenceServerClient(url)

    async def one(i: int) -> dict:
        subnet = subnets[i % len(subnets)]
        inp = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(images[i:i + 1])
        t = time.perf_counter()
        try:
            r = await client.infer("supernet", [inp], parameters={"subnet": subnet})
        except Exception as e:  # reported, never dropped
            return {"subnet": subnet, "error": str(e)}
        info = json.loads(r.as_numpy("INFO")[0][0])
        return {"subnet": info["subnet"], "ms": (time.perf_counter() - t) * 1000, "batch": info["batch_size"],
                "correct": int(r.as_numpy("LOGITS")[0].argmax() == labels[i]), "profiled": info["accuracy"]}

    try:
        return await asyncio.gather(*(one(i) for i in range(len(labels))))
    finally:
        await client.close()


def main(requests: int = 200, log_file: str | None = None) -> int:
    from superserve.scheduler import paths
    from superserve.scheduler.ports import free_ports

    meta = json.loads(paths.default_weights().with_suffix(".json").read_text())
    pareto = meta["pareto"]
    subnets = [pareto[0], pareto[len(pareto) // 3], pareto[2 * len(pareto) // 3], pareto[-1]]
    images, labels = load_split("test")
    images, labels = images[:requests], labels[:requests]
    http, grpc, metrics = free_ports(3)
    with TritonProcess(TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, log_file=log_file)) as t:
        print(f"Triton ready: HTTP http://{t.cfg.http_url}  gRPC {t.cfg.grpc_url}; sending a burst of "
              f"{requests} requests over {len(subnets)} subnets", flush=True)
        start = time.perf_counter()
        results = asyncio.run(_burst(t.cfg.grpc_url, subnets, images, labels))
        wall = time.perf_counter() - start
    by = defaultdict(list)
    errors = [r for r in results if "error" in r]
    for r in results:
        if "error" not in r:
            by[r["subnet"]].append(r)
    print(f"\n{'subnet':22} {'answers':>7} {'acc(labels)':>11} {'acc(profile)':>12} {'p50 ms':>7} {'max ms':>7} {'mean batch':>10}")
    for s in subnets:
        rows = by.get(s, [])
        if rows:
            ms = [r["ms"] for r in rows]
            print(f"{s:22} {len(rows):7d} {statistics.mean(r['correct'] for r in rows):11.3f} "
                  f"{rows[0]['profiled']:12.4f} {statistics.median(ms):7.1f} {max(ms):7.1f} "
                  f"{statistics.mean(r['batch'] for r in rows):10.1f}")
    print(f"\n{len(results)} sent, {len(results) - len(errors)} answered, {len(errors)} errors in {wall:.2f} s")
    for e in errors[:5]:
        print("  error:", e["error"])
    return 0 if not errors and len(results) == requests else 1
