"""Does a second supernet instance in one Triton pay on this machine? (issue 18 item 3)

Two Tritons run side by side on free loopback ports, the same supernet with 1 and with 2 model instances
(``TritonConfig.instances``: a copy of its config in the linked repository). Each is driven in turn by
``concurrency`` closed-loop gRPC clients sending batches of ``batch`` rows of one subnet (the most accurate by
default: it is what the autoscaler's demand is costed in), for ``seconds`` each, in interleaved rounds (A B A B)
so that a busy host's drift falls on both alike. Two clients is what the sidecar sends one worker: at most two
batches in flight (pipelining). The result, rows per second and call latency per (instances, batch), and the
ratio of 2 to 1 instances per round, goes to ``results/<name>.json``; ``auto`` in scheduler/core/instance_count.py must
agree with it (its tests read this file).

    python -m superserve.client.instances_bench              # about 2 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from superserve.client import results
from superserve.scheduler.ports import free_ports
from superserve.scheduler.core.profile import Profile
from superserve.scheduler.sidecar.server import find_profile
from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess


async def closed_loop(url: str, subnet: str, batch: int, concurrency: int, seconds: float) -> tuple[int, list[float]]:
    """(rows answered, call latencies in ms) of ``concurrency`` clients sending back to back for ``seconds``."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio

    client = grpcaio.InferenceServerClient(url)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    rows, lat = 0, []
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal rows
        inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        while time.perf_counter() < stop:
            t = time.perf_counter()
            await client.infer("supernet", [inp], parameters={"subnet": subnet})
            lat.append((time.perf_counter() - t) * 1000)
            rows += batch
    try:
        await asyncio.gather(*(loop() for _ in range(concurrency)))
    finally:
        await client.close()
    return rows, lat


def run(name: str, batches: tuple[int, ...], rounds: int, seconds: float, concurrency: int, subnet: str | None,
        out_dir: Path, command: str) -> Path:
    profile = Profile.load(find_profile(None))
    subnet = subnet or profile.subnets[-1].name
    cores = len(os.sched_getaffinity(0))
    tritons = {}
    try:
        for n in (1, 2):
            http, grpc, metrics = free_ports(3)
            tritons[n] = TritonProcess(TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics,
                                                    models=("supernet",), instances=n)).start()
        for n, t in tritons.items():  # warm-up: every instance's first calls pay lazy initialisation
            asyncio.run(closed_loop(t.cfg.grpc_url, subnet, 8, 2 * n, 2.0))
        cells: dict[tuple[int, int], list[dict]] = {}
        for r in range(rounds):
            for b in batches:
                order = (1, 2) if r % 2 == 0 else (2, 1)
                for n in order:
                    load = os.getloadavg()[0]
                    rows, lat = asyncio.run(closed_loop(tritons[n].cfg.grpc_url, subnet, b, concurrency, seconds))
                    cell = {"round": r, "rows_per_s": round(rows / seconds, 1),
                            "p50_ms": round(float(np.percentile(lat, 50)), 2),
                            "p99_ms": round(float(np.percentile(lat, 99)), 2), "calls": len(lat),
                            "load_avg_1m": round(load, 2)}
                    cells.setdefault((n, b), []).append(cell)
                    print(f"round {r} batch {b:3d} instances {n}: {cell['rows_per_s']:8.1f} rows/s  "
                          f"p50 {cell['p50_ms']:6.2f} ms  p99 {cell['p99_ms']:6.2f} ms  (load {load:.2f})", flush=True)
    finally:
        for t in tritons.values():
            t.stop()
    summary = {}
    for b in batches:
        ratios = [two["rows_per_s"] / one["rows_per_s"] for one, two in zip(cells[(1, b)], cells[(2, b)])]
        summary[str(b)] = {"rows_per_s_1": statistics.median(c["rows_per_s"] for c in cells[(1, b)]),
                           "rows_per_s_2": statistics.median(c["rows_per_s"] for c in cells[(2, b)]),
                           "ratio_2_over_1_per_round": [round(x, 3) for x in ratios],
                           "ratio_2_over_1_median": round(statistics.median(ratios), 3)}
        print(f"batch {b}: 2 instances / 1 = {summary[str(b)]['ratio_2_over_1_median']:.3f} (per round "
              f"{summary[str(b)]['ratio_2_over_1_per_round']})")
    result = {**results.header(command), "subnet": subnet, "cores": cores, "concurrency": concurrency,
              "seconds_per_cell": seconds, "rounds": rounds, "batches": list(batches),
              "method": "two Tritons (1 and 2 instances of the supernet, torch_threads 1 each) on free loopback "
                        f"ports; {concurrency} closed-loop gRPC clients per cell, interleaved A/B rounds",
              "cells": [{"instances": n, "batch": b, **c} for (n, b), cs in sorted(cells.items()) for c in cs],
              "summary": summary}
    path = results.write(result, out_dir / f"{name}.json")
    print(f"wrote {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m superserve.client.instances_bench", description=__doc__.split("\n")[0])
    p.add_argument("--name", default="instances-cpu")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per cell")
    p.add_argument("--concurrency", type=int, default=2, help="closed-loop clients (the sidecar: 2 batches in flight)")
    p.add_argument("--subnet", help="default: the profile's most accurate")
    p.add_argument("--out-dir", help="default results/")
    a = p.parse_args(argv)
    try:
        batches = tuple(int(b) for b in a.batches.split(","))
    except ValueError:
        p.error(f"--batches must be comma-separated integers, got {a.batches!r}")
    if a.rounds < 1 or a.seconds <= 0 or a.concurrency < 1 or min(batches) < 1:
        p.error("--rounds, --seconds, --concurrency and every batch must be positive")
    run(a.name, batches, a.rounds, a.seconds, a.concurrency, a.subnet,
        Path(a.out_dir) if a.out_dir else results.default_dir(),
        " ".join(["python -m superserve.client.instances_bench", *map(shlex.quote, sys.argv[1:] if argv is None
                                                                    else argv)]).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
