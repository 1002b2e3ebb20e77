"""``superserve bench-overhead``: what the sidecar costs, measured against Triton itself (issue 14).

Three measurements, each written to one results file with the command, commit and hardware:
1. **CPU per request**: the same open-loop Poisson stream (one pinned subnet) first straight to
   ``tritonserver``, then through a trivial Python gRPC proxy (grpc_proxy.py: the floor of any sidecar
   written on grpc.aio), then through the sidecar (policy ``fixed`` on that subnet, or ``--policy``, e.g.
   slackfit, choosing the subnet); CPU seconds of each process (``/proc/<pid>/stat``; ``tritonserver``
   without its Python backend stub processes) over the requests answered. The ratio sidecar / Triton-direct
   is the headline; sidecar / proxy is what the scheduler's own Python adds to the library's floor.
2. **Added latency at low load**: one request at a time, direct and via the sidecar interleaved,
   over gRPC and HTTP (tritonclient), p50 and p99 of each and the difference.
3. **Dispatch throughput**: the sidecar in front of a zero-cost stand-in worker (standin_worker.py,
   answers at once); rising open-loop rates, the highest at which every request is answered within
   10 ms (the goal), the highest with p99 within 10 ms, and the highest it sustains (median within
   10 ms; the sweep stops past that). The load generator's own CPU and the stand-in's are reported beside the
   sidecar's, and the
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
from contextlib import ExitStack, contextmanager

import numpy as np
import grpc
from tritonclient.grpc import service_pb2

from superserve.client import prometheus_text, results
from superserve.client.scheduler_bench import _pct
from superserve.scheduler.ports import free_ports
from superserve.scheduler.core.profile import Profile
from superserve.scheduler.sidecar.server import find_profile, serve_subprocess
from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess

INFER = "/inference.GRPCInferenceService/ModelInfer"
WITHIN_MS = 10.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (its threads, not its children)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request_bytes(subnet: str | None, slo_ms: float | None) -> bytes:
    """One serialised ModelInfer: ``subnet`` pinned (None: the policy chooses), ``slo_ms`` set (None: Triton)."""
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    req = service_pb2.ModelInferRequest(model_name="supernet")
    req.inputs.add(name="INPUT", datatype="FP32", shape=[1, 1, 28, 28])
    req.raw_input_contents.append(x.tobytes())
    if subnet is not None:
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
    vals = prometheus_text.scrape(metrics_url, ("sched_batch_size_",))
    return vals["sched_batch_size_count"], vals["sched_batch_size_sum"]


@contextmanager
def _ready_process(module: str, args: list[str], ready: str):
    """``python -m module args`` until the block ends; up once it prints a line starting ``ready``."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith(ready):
            raise RuntimeError(f"{module} did not start: {line!r}")
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def standin(port: int):
    """The zero-cost stand-in worker (standin_worker.py) on ``port``."""
    return _ready_process("superserve.client.standin_worker", ["--port", str(port)], "standin ready")


def grpc_proxy(port: int, upstream: str):
    """The trivial gRPC proxy (grpc_proxy.py) on ``port`` in front of ``upstream``: the floor of a Python sidecar."""
    return _ready_process("superserve.client.grpc_proxy", ["--port", str(port), "--upstream", upstream], "proxy ready")


def _sidecar(worker: str, subnet: str, python: str | None, extra: tuple = (), policy: str = "fixed"):
    http, grpc_port = free_ports(2)
    log = tempfile.mkstemp(prefix="superserve-serve-", suffix=".log")[1]
    pin = ("--subnet", subnet) if policy == "fixed" else ()
    args = ["--http-port", str(http), "--grpc-port", str(grpc_port), "--worker", worker,
            "--policy", policy, *pin, *extra]
    return serve_subprocess(args, log, python=python), f"127.0.0.1:{http}", f"127.0.0.1:{grpc_port}"


@contextmanager
def sidecars_up(worker: str, subnet: str, pythons: dict, policy: str = "fixed"):
    """Every sidecar (name -> (interpreter, extra serve options)) in front of ``worker`` at once, so
    measurements of them can be interleaved in time (the machine's other load drifts; interleaving spreads
    it evenly)."""
    with ExitStack() as stack:
        up = {}
        for name, (python, extra) in pythons.items():
            cm, http_url, grpc_url = _sidecar(worker, subnet, python, extra, policy)
            up[name] = (stack.enter_context(cm).pid, http_url, grpc_url)
        yield up


def _merge(parts: list[dict]) -> dict:
    """Rounds of one target -> one measurement (CPU summed over rounds, latency pooled)."""
    lat = [v for p in parts for v in p.pop("_lat")]
    n = max(len(lat), 1)
    cpu = {k: round(sum(p["_cpu"][k] for p in parts) * 1000 / n, 4) for k in parts[0]["_cpu"]}
    out = {"rate_rps": parts[0]["rate_rps"], "duration_s": sum(p["duration_s"] for p in parts), "rounds": len(parts),
           "answered": len(lat), "errors": sum(p["errors"] for p in parts), "p50_ms": _pct(lat, 50) if lat else None,
           "p99_ms": _pct(lat, 99) if lat else None, "max_ms": round(max(lat), 3) if lat else None,
           "cpu_ms_per_request": cpu}
    if "_batches" in parts[0]:
        b, r = sum(p["_batches"][0] for p in parts), sum(p["_batches"][1] for p in parts)
        out["mean_batch_rows"] = round(r / max(b, 1), 3)
    for p in parts:
        p.pop("_cpu"), p.pop("_batches", None)
    return out


def _round(url: str, body: bytes, rate: float, duration_s: float, pids: dict, metrics_url: str | None, seed: int):
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    b0, gen0 = _batches(metrics_url), time.process_time()
    lat, errors = asyncio.run(_open_loop(url, body, rate, duration_s, seed))
    cpu = {k: cpu_seconds(p) - before[k] for k, p in pids.items()}
    cpu["load_generator"] = time.process_time() - gen0
    part = {"rate_rps": rate, "duration_s": duration_s, "errors": errors, "_lat": lat, "_cpu": cpu}
    if metrics_url is not None:
        b1 = _batches(metrics_url)
        part["_batches"] = (b1[0] - b0[0], b1[1] - b0[1])
    return part


def cpu_ratio(triton: TritonProcess, pythons: dict, subnet: str, rate: float, duration_s: float,
              rounds: int = 4, policy: str = "fixed") -> dict:
    """The same stream straight to Triton, through the trivial Python gRPC proxy (the floor of any Python
    sidecar) and through each sidecar, in ``rounds`` interleaved phases; CPU per request of each process, and
    sidecar CPU over tritonserver's own when called directly and over the proxy's."""
    tpid = triton.proc.pid
    (proxy_port,) = free_ports(1)
    pinned = subnet if policy == "fixed" else None
    with sidecars_up(triton.cfg.grpc_url, subnet, pythons, policy) as up, \
            grpc_proxy(proxy_port, triton.cfg.grpc_url) as proxy:
        targets = {"triton_direct": (triton.cfg.grpc_url, request_bytes(subnet, None), {"tritonserver": tpid}, None),
                   "python_grpc_proxy": (f"127.0.0.1:{proxy_port}", request_bytes(subnet, None),
                                         {"proxy": proxy.pid, "tritonserver": tpid}, None)}
        body = request_bytes(pinned, 1000.0 if pinned else None)  # a choosing policy plans for the default SLO
        for name, (pid, http_url, grpc_url) in up.items():
            targets[name] = (grpc_url, body, {"sidecar": pid, "tritonserver": tpid}, http_url)
        for url, body, _, _ in targets.values():
            asyncio.run(_open_loop(url, body, rate, 2.0, 99))  # warm-up, not measured
        parts = {k: [] for k in targets}
        for r in range(rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            for k in order:
                url, body, pids, metrics = targets[k]
                parts[k].append(_round(url, body, rate, duration_s / rounds, pids, metrics, seed=r))
    out = {k: _merge(v) for k, v in parts.items()}
    direct = out["triton_direct"]["cpu_ms_per_request"]["tritonserver"]
    floor = out["python_grpc_proxy"]["cpu_ms_per_request"]["proxy"]
    for k in up:
        own = out[k]["cpu_ms_per_request"]["sidecar"]
        out[k]["sidecar_over_triton_direct_cpu"] = round(own / direct, 3)
        out[k]["sidecar_over_python_proxy_cpu"] = round(own / floor, 3)
        out[k]["sidecar_minus_python_proxy_ms"] = round(own - floor, 4)
    return out


def added_latency(triton: TritonProcess, pythons: dict, subnet: str, reps: int) -> dict:
    """One request at a time, rotating over Triton direct and every sidecar, per protocol."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    out = {}
    with sidecars_up(triton.cfg.grpc_url, subnet, pythons) as up:
        for proto, mod in (("grpc", grpcclient), ("http", httpclient)):
            urls = {"triton_direct": triton.cfg.grpc_url if proto == "grpc" else f"127.0.0.1:{triton.cfg.http_port}"}
            urls |= {k: (g if proto == "grpc" else h) for k, (_, h, g) in up.items()}
            clients = {k: mod.InferenceServerClient(u) for k, u in urls.items()}
            inp = mod.InferInput("INPUT", [1, 1, 28, 28], "FP32")
            inp.set_data_from_numpy(x)
            times = {k: [] for k in urls}
            names = list(urls)
            for i in range(reps + 20):
                for k in names[i % len(names):] + names[:i % len(names)]:
                    params = {"subnet": subnet} | ({} if k == "triton_direct" else {"slo_ms": 1000})
                    t = time.perf_counter()
                    clients[k].infer("supernet", [inp], parameters=params)
                    if i >= 20:
                        times[k].append((time.perf_counter() - t) * 1000)
            res = {k: {"p50_ms": _pct(v, 50), "p99_ms": _pct(v, 99), "n": len(v)} for k, v in times.items()}
            for k in up:
                res[k]["added_p50_ms"] = round(res[k]["p50_ms"] - res["triton_direct"]["p50_ms"], 3)
                res[k]["added_p99_ms"] = round(res[k]["p99_ms"] - res["triton_direct"]["p99_ms"], 3)
                print(f"  {proto} {k}: added p50 {res[k]['added_p50_ms']:+.2f} ms, "
                      f"p99 {res[k]['added_p99_ms']:+.2f} ms "
                      f"(direct p50 {res['triton_direct']['p50_ms']:.2f} p99 {res['triton_direct']['p99_ms']:.2f})",
                      flush=True)
            out[proto] = res
    return out


def dispatch_throughput(pythons: dict, subnet: str, rates: list[float], duration_s: float,
                        policy: str = "fixed") -> dict:
    """Each sidecar in front of the zero-cost stand-in, rates rising, sidecars alternating at each rate."""
    (port,) = free_ports(1)
    out = {}
    with standin(port) as worker:
        floor = _round(f"127.0.0.1:{port}", request_bytes(subnet, None), rates[0], duration_s, {"standin": worker.pid},
                       None, seed=0)
        out["grpc_server_floor"] = _merge([floor])
        body = request_bytes(subnet, 1000.0) if policy == "fixed" else request_bytes(None, None)
        with sidecars_up(f"127.0.0.1:{port}", subnet, pythons, policy) as up:
            for _, _, g in up.values():
                asyncio.run(_open_loop(g, body, rates[0], 1.0, 99))  # warm-up
            state = {k: {"highest_rate_all_within_10ms": None, "highest_rate_p99_within_10ms": None,
                         "highest_rate_sustained": None, "runs": [], "stopped": False} for k in up}
            for i, rate in enumerate(rates):
                for k in (list(up) if i % 2 == 0 else list(reversed(up))):
                    st = state[k]
                    if st["stopped"]:
                        continue
                    pid, h, g = up[k]
                    r = _merge([_round(g, body, rate, duration_s,
                                       {"sidecar": pid, "standin": worker.pid}, h, seed=i)])
                    ok = r["errors"] == 0 and r["answered"] > 0
                    r["all_within_10ms"] = ok and r["max_ms"] <= WITHIN_MS
                    r["p99_within_10ms"] = ok and r["p99_ms"] <= WITHIN_MS
                    st["runs"].append(r)
                    print(f"  {k}: {rate:.0f} req/s -> p50 {r['p50_ms']} p99 {r['p99_ms']} max {r['max_ms']} ms, "
                          f"batch {r.get('mean_batch_rows')}, cpu/req {r['cpu_ms_per_request']}", flush=True)
                    r["sustained"] = ok and r["p50_ms"] <= WITHIN_MS  # keeping up: the median still fast
                    for key, met in (("highest_rate_all_within_10ms", r["all_within_10ms"]),
                                     ("highest_rate_p99_within_10ms", r["p99_within_10ms"]),
                                     ("highest_rate_sustained", r["sustained"])):
                        if met:
                            st[key] = rate
                    st["stopped"] = not r["sustained"]  # past saturation every higher rate fails too
            for k, st in state.items():
                st.pop("stopped")
                out[k] = st
    return out


def bench_overhead(reps: int = 300, rate: float = 200.0, duration_s: float = 20.0,
                   rates: tuple = (100, 250, 500, 750, 1000, 1500, 2000, 3000), step_s: float = 5.0,
                   compare_python: str | None = None, compare_transport: bool = False,
                   name: str = "sidecar_overhead", policy: str = "fixed") -> int:
    profile = Profile.load(find_profile(None))
    subnet = profile.subnets[0].name
    th, tg, tm = free_ports(3)
    sidecars = {"sidecar": (None, ())} | ({"sidecar_compare": (compare_python, ())} if compare_python else {})
    if compare_transport:  # the same sidecar with its batch calls over HTTP (scheduler/sidecar/triton_http.py)
        sidecars["sidecar_http_transport"] = (None, ("--worker-http", f"127.0.0.1:{th}"))
    grpc_only = {k: v for k, v in sidecars.items() if not v[1]}  # the stand-in worker speaks gRPC only
    with TritonProcess(TritonConfig(http_port=th, grpc_port=tg, metrics_port=tm)) as triton:
        where = f", subnet {subnet}" if policy == "fixed" else f" (Triton direct and the proxy: {subnet})"
        print(f"1. CPU per request at {rate:g} req/s for {duration_s:g} s, sidecar policy {policy}{where}", flush=True)
        cpu = cpu_ratio(triton, sidecars, subnet, rate, duration_s, policy=policy)
        for k, v in cpu.items():
            print(f"  {k}: {v['cpu_ms_per_request']} p50 {v['p50_ms']} p99 {v['p99_ms']}", flush=True)
        print(f"2. added latency, one request at a time, {reps} reps per target", flush=True)
        latency = added_latency(triton, sidecars, subnet, reps)
    print(f"3. dispatch throughput, stand-in worker, {step_s:g} s per rate", flush=True)
    dispatch = dispatch_throughput(grpc_only, subnet, list(rates), step_s, policy)
    summary = {}
    for k in sidecars:
        c, d = cpu[k], dispatch.get(k, {})
        summary[k] = {"sidecar_cpu_ms_per_request": c["cpu_ms_per_request"]["sidecar"],
                      "sidecar_over_triton_direct_cpu": c["sidecar_over_triton_direct_cpu"],
                      "python_grpc_proxy_cpu_ms_per_request": cpu["python_grpc_proxy"]["cpu_ms_per_request"]["proxy"],
                      "sidecar_over_python_proxy_cpu": c["sidecar_over_python_proxy_cpu"],
                      "added_p50_ms": {p: latency[p][k]["added_p50_ms"] for p in latency},
                      "added_p99_ms": {p: latency[p][k]["added_p99_ms"] for p in latency},
                      "dispatch_rps_all_within_10ms": d.get("highest_rate_all_within_10ms"),
                      "dispatch_rps_p99_within_10ms": d.get("highest_rate_p99_within_10ms"),
                      "dispatch_rps_sustained_p50_within_10ms": d.get("highest_rate_sustained")}
        s = summary[k]
        s["goals_met"] = {"cpu_ms_per_request<=0.3": s["sidecar_cpu_ms_per_request"] <= 0.3,
                          "cpu<=triton_direct": s["sidecar_over_triton_direct_cpu"] <= 1.0,
                          "added_p50<=0.5ms": max(s["added_p50_ms"].values()) <= 0.5,
                          "added_p99<=2ms": max(s["added_p99_ms"].values()) <= 2.0,
                          "dispatch>=3000rps": (s["dispatch_rps_all_within_10ms"] or 0) >= 3000}
        print(f"{k}: {s}", flush=True)
    result = dict(results.header(), subnet=subnet, policy=policy, compare_python=compare_python,
                  compare_transport=compare_transport,
                  load_average=os.getloadavg(), cores=os.cpu_count(),
                  goals={"sidecar_cpu_ms_per_request_max": 0.3, "sidecar_over_triton_cpu_max": 1.0,
                         "added_p50_ms_max": 0.5, "added_p99_ms_max": 2.0, "dispatch_rps_min": 3000},
                  summary=summary, cpu_per_request=cpu, latency=latency, dispatch=dispatch)
    path = results.write(result, results.named(name))
    print(f"wrote {path}")
    return 0
