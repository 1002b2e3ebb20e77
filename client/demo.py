"""``superserve demo``: the main job in one command. Starts ``superserve serve`` (the scheduler and
an embedded Triton) on free loopback ports, sends bursts of labelled Fashion-MNIST test images over
gRPC at a loose and a tight latency target, plus an infeasible and a malformed request, and prints
what came back: answers, drops, the subnets SlackFit chose, accuracy, latency. The headline is the
client's own count of answers within their SLO (the reply path is part of the deadline); the
scheduler's count is printed beside it. Every request sent is accounted for."""
from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections import Counter

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from superserve.client import prometheus_text
from superserve.scheduler.ports import free_ports
from superserve.scheduler.sidecar.server import serve_subprocess
from superserve.supernet.data import load_split


async def _send(client, x: np.ndarray, label: int, params: dict) -> dict:
    inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    t = time.perf_counter()
    try:
        r = await client.infer("supernet", [inp], parameters=params)
    except InferenceServerException as e:
        return {"status": str(e.status()).replace("StatusCode.", ""), "message": e.message()}
    info = json.loads(r.as_numpy("INFO")[0][0])
    return {"status": "OK", "ms": (time.perf_counter() - t) * 1000, "info": info,
            "correct": int(r.as_numpy("LOGITS")[0].argmax() == label)}


async def _burst(url: str, images, labels, slo_ms: float) -> list[dict]:
    client = grpcaio.InferenceServerClient(url)
    try:
        return await asyncio.gather(*(_send(client, images[i:i + 1], labels[i], {"slo_ms": slo_ms})
                                      for i in range(len(labels))))
    finally:
        await client.close()


def _report(title: str, results: list[dict], slo_ms: float) -> None:
    """The client's numbers first: in time means answered within slo_ms as this client measured it."""
    ok = [r for r in results if r["status"] == "OK"]
    statuses = Counter(r["status"] for r in results)
    in_time = sum(r["ms"] <= slo_ms for r in ok)
    print(f"\n{title}: {len(results)} sent -> {in_time} answered in time at the client "
          f"({in_time / max(len(results), 1):.1%}), {len(ok) - in_time} answered late; statuses: "
          + ", ".join(f"{v} {k}" for k, v in statuses.most_common()))
    if ok:
        ms = np.array([r["ms"] for r in ok])
        print(f"  served accuracy (profile) {np.mean([r['info']['accuracy'] for r in ok]):.4f}   "
              f"on the labels {np.mean([r['correct'] for r in ok]):.4f}   latency p50 {np.percentile(ms, 50):.1f} ms "
              f"p99 {np.percentile(ms, 99):.1f} ms   mean batch {np.mean([r['info']['batch_size'] for r in ok]):.1f}")
        for subnet, n in Counter(r["info"]["subnet"] for r in ok).most_common(4):
            print(f"  {n:4d} x {subnet}")


def _outcomes(http_url: str) -> Counter:
    samples = prometheus_text.scrape(http_url, ("sched_requests_total{",), timeout_s=5)
    return Counter({k: int(v) for k, v in prometheus_text.by_label(samples, "sched_requests_total", "outcome").items()})


def main(requests: int = 200, log_file: str | None = None) -> int:
    images, labels = load_split("test")
    http, grpc, th, tg, tm = free_ports(5)
    log = log_file or tempfile.mkstemp(prefix="superserve-serve-", suffix=".log")[1]
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--triton-http-port", str(th),
            "--triton-grpc-port", str(tg), "--triton-metrics-port", str(tm)]
    with serve_subprocess(args, log):
        print(f"SuperServe ready: HTTP http://127.0.0.1:{http}  gRPC 127.0.0.1:{grpc}  (log {log})")
        url = f"127.0.0.1:{grpc}"
        sent, answered = 0, 0
        for title, slo in (("loose SLO 2000 ms", 2000.0), ("tight SLO 100 ms", 100.0)):
            before = _outcomes(f"127.0.0.1:{http}")
            res = asyncio.run(_burst(url, images[sent:sent + requests], labels[sent:sent + requests], slo))
            _report(f"burst of {requests}, {title}", res, slo)
            seen = _outcomes(f"127.0.0.1:{http}") - before
            print(f"  scheduler's clock (deadline from arrival at the scheduler, reply path not included): "
                  f"{seen['ok']} in time, {seen['late']} late, {seen['dropped']} dropped as infeasible")
            sent += len(res)
            answered += len(res)
        client = grpcclient.InferenceServerClient(url)
        for title, params in (("slo_ms 0.01 (infeasible)", {"slo_ms": 0.01}),
                              ("slo_ms -5 (malformed)", {"slo_ms": -5})):
            r = asyncio.run(_burst_one(url, images[sent:sent + 1], labels[sent], params))
            print(f"\n{title}: {r['status']}: {r.get('message', '')}")
            sent += 1
            answered += 1
        print(f"\nserver still ready: {client.is_server_ready()}; {sent} requests sent, {answered} answered "
              f"(metrics: http://127.0.0.1:{http}/metrics)")
        return 0 if answered == sent else 1


async def _burst_one(url, x, label, params):
    client = grpcaio.InferenceServerClient(url)
    try:
        return await _send(client, x, label, params)
    finally:
        await client.close()
