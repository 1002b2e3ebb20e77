"""Several Triton workers and their failures, as users meet them: real tritonserver processes behind the
real `superserve serve`, a worker killed with SIGKILL under open-loop load, restarted on the same ports,
and `serve --workers 2` starting and stopping its own Tritons."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from superserve.client.loadgen import Target, run_open_loop
from superserve.client.prometheus_text import scrape
from superserve.scheduler.core.summary import summarize
from superserve.client.traces import poisson
from superserve.scheduler import paths
from superserve.scheduler.sidecar.server import serve_subprocess
from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess
from tests.conftest import free_ports


def wait_for(cond, timeout_s: float, what: str, poll_s: float = 0.1):
    """Poll ``cond()`` until it returns something true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def triton_config(tmp: Path, name: str) -> TritonConfig:
    http, grpc, metrics = free_ports(3)
    return TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, models=("supernet",),
                        log_file=str(tmp / f"{name}.log"))


def start_all(procs: list[TritonProcess]) -> None:
    import concurrent.futures as cf
    with cf.ThreadPoolExecutor(len(procs)) as ex:
        list(ex.map(lambda p: p.start(), procs))


async def load_then_signal(url: str, grpc: str, bkey: str, b: TritonProcess, trace, slo_ms: float, sig):
    """Open-loop ``trace`` through the scheduler; once worker b has really served part of it (3 batches:
    a condition, not a fixed delay), send ``sig`` to b's process group. Returns every request's record."""
    n = len(trace.arrivals_s)
    images = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    load = asyncio.create_task(run_open_loop(Target(f"127.0.0.1:{grpc}"), trace.arrivals_s, np.full(n, slo_ms),
                                             images, np.zeros(64, int)))
    while scrape(url).get(f'sched_worker_batches_total{{{bkey},outcome="ok"}}', 0) < 3:
        assert not load.done(), "the load ended before worker b served 3 batches"
        await asyncio.sleep(0.05)
    os.killpg(b.proc.pid, sig)
    return await load


def outcomes(m: dict) -> dict[str, float]:
    return {k.split('"')[1]: v for k, v in m.items() if k.startswith("sched_requests_total{")}


@pytest.mark.slow
def test_killed_worker_is_retried_around_marked_down_and_readmitted(tmp_path):
    a, b = TritonProcess(triton_config(tmp_path, "a")), TritonProcess(triton_config(tmp_path, "b"))
    restarted = None
    try:
        start_all([a, b])
        http, grpc = free_ports(2)
        profile = sorted((paths.repo_root() / "profiles").glob("*.json"))[0]
        args = ["--http-port", str(http), "--grpc-port", str(grpc), "--worker", a.cfg.grpc_url,
                "--worker", b.cfg.grpc_url, "--profile", str(profile)]
        with serve_subprocess(args, str(tmp_path / "serve.log")):
            url = f"127.0.0.1:{http}"
            bkey = f'worker="{b.cfg.grpc_url}"'
            before = outcomes(scrape(url))
            trace = poisson(100.0, 3.0, seed=1)  # ~300 requests over 3 s
            n = len(trace.arrivals_s)
            records = asyncio.run(load_then_signal(url, grpc, bkey, b, trace, 300.0, signal.SIGKILL))
            b.stop()  # reap it
            after = scrape(url)
            # Every request answered exactly once: at the client (one record each, a result or an
            # explicit typed error) and at the scheduler (its outcome counters grew by exactly n).
            s = summarize(records)
            assert s["requests"] == n
            assert {r.status for r in records if r.outcome == "error"} <= {"INTERNAL"}, \
                [(r.status, r.message) for r in records if r.outcome == "error"][:5]
            assert {r.status for r in records if r.outcome == "rejected"} <= {"UNAVAILABLE"}
            assert s["late"] + s["dropped"] + s["rejected"] + s["errors"] + sum(r.outcome == "ok" for r in records) == n
            grown = {k: v - before.get(k, 0) for k, v in outcomes(after).items()}
            assert sum(grown.values()) == n, grown
            assert s["slo_attainment"] > 0.5, s  # worker a kept serving
            # b is out of rotation, and the scheduler says why.
            m = wait_for(lambda: (lambda m: m if m[f"sched_worker_healthy{{{bkey}}}"] == 0 else None)(scrape(url)),
                         10, "worker b marked unhealthy")
            assert sum(v for k, v in m.items() if k.startswith(f"sched_worker_failures_total{{{bkey}")) >= 1
            assert m[f'sched_worker_healthy{{worker="{a.cfg.grpc_url}"}}'] == 1
            assert "sched_batch_retries_total" in m and "sched_request_retries_total" in m
            print("after the kill:", {k: v for k, v in s.items() if k != "subnets"},
                  {k: v for k, v in m.items() if "retries" in k or "failures" in k})
            served_before = m.get(f'sched_worker_batches_total{{{bkey},outcome="ok"}}', 0)

            # Restart Triton on the same ports: re-admitted, and it serves batches again.
            restarted = TritonProcess(b.cfg).start()
            m = wait_for(lambda: (lambda m: m if m[f"sched_worker_healthy{{{bkey}}}"] == 1 else None)(scrape(url)),
                         20, "worker b re-admitted")
            assert m[f"sched_worker_readmissions_total{{{bkey}}}"] >= 1
            g = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
            x = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
            x.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))

            def b_served():
                g.infer("supernet", [x], parameters={"slo_ms": 1000})
                return scrape(url).get(f'sched_worker_batches_total{{{bkey},outcome="ok"}}', 0) > served_before
            wait_for(b_served, 20, "a batch served by the restarted worker b", poll_s=0)
    finally:
        for p in (a, b, restarted):
            if p is not None:
                p.stop()


def test_hung_worker_is_abandoned_and_readmitted_when_it_answers_again(tmp_path):
    """SIGSTOP freezes a worker (its TCP connections stay open, so calls hang rather than fail): its
    batch is abandoned after the hang rule's time and served by the other worker; SIGCONT brings it back."""
    a, b = TritonProcess(triton_config(tmp_path, "a")), TritonProcess(triton_config(tmp_path, "b"))
    restarted = None
    try:
        start_all([a, b])
        http, grpc = free_ports(2)
        profile = sorted((paths.repo_root() / "profiles").glob("*.json"))[0]
        args = ["--http-port", str(http), "--grpc-port", str(grpc), "--worker", a.cfg.grpc_url,
                "--worker", b.cfg.grpc_url, "--profile", str(profile), "--hang-floor-ms", "300"]
        with serve_subprocess(args, str(tmp_path / "serve.log")):
            url = f"127.0.0.1:{http}"
            bkey = f'worker="{b.cfg.grpc_url}"'
            before = outcomes(scrape(url))
            trace = poisson(60.0, 3.0, seed=2)
            n = len(trace.arrivals_s)
            try:
                records = asyncio.run(load_then_signal(url, grpc, bkey, b, trace, 3000.0, signal.SIGSTOP))
                m = wait_for(lambda: (lambda m: m if m[f"sched_worker_healthy{{{bkey}}}"] == 0 else None)(scrape(url)),
                             10, "frozen worker b marked unhealthy")
            finally:
                os.killpg(b.proc.pid, signal.SIGCONT)
            s = summarize(records)
            grown = {k: v - before.get(k, 0) for k, v in outcomes(m).items()}
            assert s["requests"] == n and sum(grown.values()) == n, grown
            assert sum(r.outcome in ("ok", "late") for r in records) == n, \
                [(r.outcome, r.status, r.message) for r in records if r.outcome not in ("ok", "late")][:5]
            failures = {k: v for k, v in m.items() if k.startswith(f"sched_worker_failures_total{{{bkey}")}
            assert sum(failures.values()) >= 1, failures
            print("frozen worker:", failures, {k: v for k, v in m.items() if "retries" in k})
            # Resumed, Triton's Python backend sometimes aborts (boost::interprocess::lock_exception: its
            # shared-memory lock with the stub timed out while frozen). Then it must stay out of rotation
            # until a Triton answers on its port again; either way it is re-admitted once one does.
            wait_for(lambda: scrape(url)[f"sched_worker_healthy{{{bkey}}}"] == 1 or not b.alive(), 20,
                     "worker b re-admitted after SIGCONT, or its Triton exited")
            if not b.alive():
                assert scrape(url)[f"sched_worker_healthy{{{bkey}}}"] == 0
                b.stop()
                restarted = TritonProcess(b.cfg).start()
                wait_for(lambda: scrape(url)[f"sched_worker_healthy{{{bkey}}}"] == 1, 20,
                         "worker b re-admitted after its Triton restarted")
    finally:
        for p in (a, b, restarted):
            if p is not None:
                p.stop()


def _listening_tritons(grpc_ports) -> list[int]:
    """Pids of processes whose command line names one of these Triton gRPC ports."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "tritonserver" in cmd and any(f"--grpc-port={p} " in cmd + " " for p in grpc_ports):
                pids.append(int(d.name))
    return pids


def test_serve_workers_2_starts_two_tritons_answers_and_stops_cleanly(tmp_path, weights_path):
    http, grpc = free_ports(2)
    profile = sorted((paths.repo_root() / "profiles").glob("*.json"))[0]
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--workers", "2", "--profile", str(profile),
            "--triton-http-port", "0", "--triton-grpc-port", "0", "--triton-metrics-port", "0",
            "--triton-log-file", str(tmp_path / "triton.log")]
    with serve_subprocess(args, str(tmp_path / "serve.log")) as proc:
        m = scrape(f"127.0.0.1:{http}")
        workers = [k.split('"')[1] for k in m if k.startswith("sched_worker_healthy{")]
        assert len(workers) == 2 and all(m[f'sched_worker_healthy{{worker="{w}"}}'] == 1 for w in workers)
        ports = [int(w.rsplit(":", 1)[1]) for w in workers]
        assert len(_listening_tritons(ports)) == 2
        assert (tmp_path / "triton.log.0").exists() and (tmp_path / "triton.log.1").exists()
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
        x = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
        x.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
        for _ in range(4):
            assert g.infer("supernet", [x], parameters={"slo_ms": 1000}).as_numpy("LOGITS").shape == (1, 10)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, (tmp_path / "serve.log").read_text()[-2000:]
    assert not _listening_tritons(ports), "Triton workers left running after serve stopped"


def test_serve_rejects_worker_and_workers_together(tmp_path):
    import sys
    r = subprocess.run([sys.executable, "-m", "superserve.scheduler.cli", "serve", "--worker", "127.0.0.1:1",
                        "--workers", "2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not both" in r.stderr
    r = subprocess.run([sys.executable, "-m", "superserve.scheduler.cli", "serve", "--workers", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and ">= 1" in r.stderr
