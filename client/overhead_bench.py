"""``superserve bench-overhead``: what the sidecar costs, measured against Triton itself (issue 14).

Three measurements, each written to one results file with the command, commit and hardware:
1. **CPU per request**: the same open-loop Poisson stream (one pinned subnet) first straight to
   ``tritonserver``, then through the sidecar (policy ``fixed`` on that subnet); CPU seconds of each
   process (``/proc/<pid>/stat``; ``tritonserver`` without its Python backend stub processes) over the
   requests answered. The ratio sidecar / Triton-direct is the headline.
2. **Added latency at low load**: one request at a time, direct and via the sidecar interleaved,
   over gRPC and HTTP (tritonclient), p50 and p99 of each and the difference.
3. **Dispatch throughput**: the sidecar in front of a zero-cost stand-in worker (standin_worker.py,
   answers at once); rising open-loop rates, the highest at which every request is answered within
   10 ms. The load generator's own CPU and the stand-in's are reported beside the sidecar's, and the
   stand-in hit directly gives the floor of the gRPC server library with a trivial handler.

The load generator here is lean on purpose (pre-serialised protobuf bytes over a bare ``grpc.aio``
channel), so that at thousands of requests a second it does not starve the process it measures.
``--compare-python`` runs every sidecar measurement a second time with another interpreter (e.g. an
older checkout's venv): before and after side by side, in one run, on the same Triton.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import numpy as np
import grpc
from tritonclient.grpc import service_pb2

from superserve.client.scheduler_bench import _header, _overhead, _pct, _write
from superserve.scheduler.ports import free_ports
from superserve.scheduler.profile import Profile
from superserve.scheduler.server import find_profile, serve_subprocess
from superserve.scheduler.triton_launcher import TritonConfig, TritonProcess

INFER = "/inference.GRPCInferenceService/ModelInfer"
WITHIN_MS = 10.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (its threads, not its children)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request_bytes(subnet: str, slo_ms: float | None) -> bytes:
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    req = service_pb2.ModelInferRequest(model_name="supernet")
    req.inputs.add(name="INPUT", datatype="FP32", shape=[1, 1, 28, 28])
    req.raw_input_contents.append(x.tobytes())
    req.parameters["subnet"].string_param = subnet
    if slo_ms is not None:
        req.parameters["slo_ms"].double_param = slo_ms
    return req.SerializeToString()


async def _open_loop(url: str, body: bytes, rate: float, duration_s: float, seed: int) -> tuple[list, int]:
    """Poisson arrivals at ``rate`` for ``duration_s``; returns (latency ms of each answer, errors)."""
    gaps = np.random.default_rng(seed).exponential(1 / rate, int(rate * duration_s * 1.2) + 10)
    arrivals = np.cumsum(gaps)
    arrivals = arrivals[arrivals < duration_s]
    lat, errors = [], 0
    async with grpc.aio.insecure_channel(url) as ch:
        call = ch.unary_unary(INFER)  # bytes in, bytes out: no (de)serialisation in the generator
        await call(body, timeout=30)  # connect and warm up

        async def one():
            nonlocal errors
            t = time.perf_counter()
            try:
                await call(body, timeout=30)
                lat.append((time.perf_counter() - t) * 1000)
            except grpc.RpcError:
                errors += 1

        tasks, start = [], time.perf_counter()
        for a in arrivals:
            delay = a - (time.perf_counter() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
    return lat, errors


def _batches(metrics_url: str | None) -> tuple[float, float]:
    """(batches, rows) the sidecar has dispatched so far, from its /metrics."""
    if metrics_url is None:
        return 0.0, 0.0
    import urllib.request
    text = urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=10).read().decode()
    vals = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("sched_batch_size_"))
    return float(vals["sched_batch_size_count"]), float(vals["sched_batch_size_sum"])


def load(url: str, body: bytes, rate: float, duration_s: float, pids: dict[str, int], seed: int = 0,
         metrics_url: str | None = None) -> dict:
    """Run the open loop and return answers, latency and CPU ms per request of each process in ``pids``
    (and of the load generator itself). With a sidecar's ``metrics_url``, also its mean batch size: CPU
    per request falls as batches grow (one call to the worker per batch), so the two go together."""
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    b0 = _batches(metrics_url)
    gen0 = time.process_time()
    lat, errors = asyncio.run(_open_loop(url, body, rate, duration_s, seed))
    gen = time.process_time() - gen0
    n = max(len(lat), 1)
    out = {"rate_rps": rate, "duration_s": duration_s, "answered": len(lat), "errors": errors,
           "p50_ms": _pct(lat, 50) if lat else None, "p99_ms": _pct(lat, 99) if lat else None,
           "max_ms": round(max(lat), 3) if lat else None,
           "cpu_ms_per_request": {k: round((cpu_seconds(p) - before[k]) * 1000 / n, 4) for k, p in pids.items()}}
    out["cpu_ms_per_request"]["load_generator"] = round(gen * 1000 / n, 4)
    if metrics_url is not None:
        b1 = _batches(metrics_url)
        out["mean_batch_rows"] = round((b1[1] - b0[1]) / max(b1[0] - b0[0], 1), 3)
    return out


@contextmanager
def standin(port: int):
    proc = subprocess.Popen([sys.executable, "-m", "superserve.client.standin_worker", "--port", str(port)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("standin ready"):
            raise RuntimeError(f"stand-in worker did not start: {line!r}")
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _sidecar(worker: str, subnet: str, python: str | None):
    http, grpc_port = free_ports(2)
    log = tempfile.mkstemp(prefix="superserve-serve-", suffix=".log")[1]
    args = ["--http-port", str(http), "--grpc-port", str(grpc_port), "--worker", worker,
            "--policy", "fixed", "--subnet", subnet]
    return serve_subprocess(args, log, python=python), f"127.0.0.1:{http}", f"127.0.0.1:{grpc_port}"


def cpu_ratio(triton: TritonProcess, sidecars: dict, subnet: str, rate: float, duration_s: float) -> dict:
    """Same stream straight to Triton, then through each sidecar; CPU per request and the ratios."""
    tpid = triton.proc.pid
    load(triton.cfg.grpc_url, request_bytes(subnet, None), rate, 2.0, {})  # warm-up, not measured
    direct = load(triton.cfg.grpc_url, request_bytes(subnet, None), rate, duration_s, {"tritonserver": tpid})
    out = {"triton_direct": direct}
    for name, python in sidecars.items():
        cm, http_url, grpc_url = _sidecar(triton.cfg.grpc_url, subnet, python)
        with cm as proc:
            load(grpc_url, request_bytes(subnet, 1000.0), rate, 2.0, {})  # warm-up, not measured
            via = load(grpc_url, request_bytes(subnet, 1000.0), rate, duration_s,
                       {"sidecar": proc.pid, "tritonserver": tpid}, metrics_url=http_url)
        via["sidecar_over_triton_direct_cpu"] = round(
            via["cpu_ms_per_request"]["sidecar"] / direct["cpu_ms_per_request"]["tritonserver"], 3)
        out[name] = via
    return out


def added_latency(triton: TritonProcess, sidecars: dict, subnet: str, reps: int) -> dict:
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    out = {}
    for name, python in sidecars.items():
        cm, http_url, grpc_url = _sidecar(triton.cfg.grpc_url, subnet, python)
        with cm:
            out[name] = _overhead(x, subnet, reps, {
                "grpc": (grpcclient, triton.cfg.grpc_url, grpc_url),
                "http": (httpclient, f"127.0.0.1:{triton.cfg.http_port}", http_url)})
    return out


def dispatch_throughput(sidecars: dict, subnet: str, rates: list[float], duration_s: float) -> dict:
    (port,) = free_ports(1)
    out = {}
    with standin(port) as worker:
        floor = load(f"127.0.0.1:{port}", request_bytes(subnet, None), rates[0], duration_s, {"standin": worker.pid})
        out["grpc_server_floor"] = floor
        for name, python in sidecars.items():
            cm, http_url, grpc_url = _sidecar(f"127.0.0.1:{port}", subnet, python)
            runs, best, best_p99 = [], None, None
            with cm as proc:
                load(grpc_url, request_bytes(subnet, 1000.0), rates[0], 1.0, {})  # warm-up, not measured
                for rate in rates:
                    r = load(grpc_url, request_bytes(subnet, 1000.0), rate, duration_s,
                             {"sidecar": proc.pid, "standin": worker.pid}, metrics_url=http_url)
                    ok = r["errors"] == 0 and r["answered"] > 0
                    r["all_within_10ms"] = ok and r["max_ms"] <= WITHIN_MS
                    r["p99_within_10ms"] = ok and r["p99_ms"] <= WITHIN_MS
                    runs.append(r)
                    print(f"  {name}: {rate:.0f} req/s -> p50 {r['p50_ms']} p99 {r['p99_ms']} max {r['max_ms']} ms, "
                          f"batch {r.get('mean_batch_rows')}, cpu/req {r['cpu_ms_per_request']}", flush=True)
                    if r["all_within_10ms"]:
                        best = rate
                    if r["p99_within_10ms"]:
                        best_p99 = rate
                    else:
                        break
            out[name] = {"highest_rate_all_within_10ms": best, "highest_rate_p99_within_10ms": best_p99, "runs": runs}
    return out


def bench_overhead(reps: int = 300, rate: float = 200.0, duration_s: float = 20.0,
                   rates: tuple = (250, 500, 750, 1000, 1500, 2000, 3000), step_s: float = 5.0,
                   compare_python: str | None = None, name: str = "sidecar_overhead") -> int:
    profile = Profile.load(find_profile(None))
    subnet = profile.subnets[0].name
    sidecars = {"sidecar": None} | ({"sidecar_compare": compare_python} if compare_python else {})
    th, tg, tm = free_ports(3)
    with TritonProcess(TritonConfig(http_port=th, grpc_port=tg, metrics_port=tm)) as triton:
        print(f"1. CPU per request at {rate:g} req/s for {duration_s:g} s, subnet {subnet}", flush=True)
        cpu = cpu_ratio(triton, sidecars, subnet, rate, duration_s)
        for k, v in cpu.items():
            print(f"  {k}: {v['cpu_ms_per_request']} p50 {v['p50_ms']} p99 {v['p99_ms']}", flush=True)
        print(f"2. added latency, one request at a time, {reps} reps", flush=True)
        latency = added_latency(triton, sidecars, subnet, reps)
    print(f"3. dispatch throughput, stand-in worker, {step_s:g} s per rate", flush=True)
    dispatch = dispatch_throughput(sidecars, subnet, list(rates), step_s)
    result = dict(_header(), subnet=subnet, compare_python=compare_python,
                  goals={"sidecar_cpu_ms_per_request_max": 0.3, "sidecar_over_triton_cpu_max": 1.0,
                         "added_p50_ms_max": 0.5, "added_p99_ms_max": 2.0, "dispatch_rps_min": 3000},
                  cpu_per_request=cpu, latency=latency, dispatch=dispatch)
    path = _write(name, result)
    print(f"wrote {path}")
    return 0
