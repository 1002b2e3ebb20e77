"""Issue 12, item 7, with real processes: a Triton killed hard leaves its Python backend's shared memory in
/dev/shm, which the launcher removes at its next start (only its own regions, only of dead owners); and
SIGTERM to `superserve serve` under open-loop load stops admitting (503), answers everything admitted,
and exits 0."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from superserve.client.prometheus_text import scrape
from superserve.client.soak_bench import children_of
from superserve.scheduler import paths
from superserve.scheduler.sidecar import shm_regions
from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess
from tests.conftest import free_ports

LARGEST = "d3.3.3-w100.100.100"


def read_until(proc: subprocess.Popen, prefix: str, timeout_s: float = 120) -> str:
    deadline, lines = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting {prefix!r}:\n" + "".join(lines))


def prefix_of(pid: int) -> str:
    arg = next(a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
               if a.startswith("--backend-config=python,shm-region-prefix-name="))
    return arg.rsplit("=", 1)[1]


def tritonserver_child(ppid: int) -> int:
    for pid, comm in children_of(ppid):
        if comm == "tritonserver":
            return pid
    raise AssertionError(f"no tritonserver child of {ppid}")


def wait_until(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        time.sleep(0.05)


def test_shared_memory_of_a_killed_triton_is_removed_at_the_next_start_and_no_one_elses(tmp_path, weights_path):
    # 1. `superserve triton`, then kill -9 of everything: launcher, server and backend stubs.
    http, grpc, metrics = free_ports(3)
    cli = subprocess.Popen([sys.executable, "-m", "superserve.scheduler.cli", "triton", "--http-port", str(http),
                            "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--model", "supernet",
                            "--log-file", str(tmp_path / "killed.log")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    sleeper = None
    try:
        read_until(cli, "Triton ready")
        server = tritonserver_child(cli.pid)
        killed = prefix_of(server)
        left = shm_regions.regions(killed)
        assert left, f"the Python backend made no region named {killed}*"
        os.killpg(server, signal.SIGKILL)  # the server and its stubs (their own process group)
        os.killpg(cli.pid, signal.SIGKILL)  # and the launcher, before it can clean up after them
        cli.wait(timeout=10)
        wait_until(lambda: not shm_regions.owner_alive(killed), 10, "the killed group to be gone")
        assert all(p.exists() for p in left), "kill -9 no longer leaves the regions behind; this test tests nothing"

        # 2. A region of our naming whose owner is alive (a stand-in process carrying the prefix) and one of
        # the backend's default naming (another Triton's): neither may be touched.
        live = shm_regions.new_prefix()
        live_file = Path("/dev/shm") / f"{live}test"
        other_file = Path("/dev/shm") / f"triton_python_backend_shm_region_test-{os.getpid()}"
        live_file.write_bytes(b"x")
        other_file.write_bytes(b"x")
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                                    f"shm-region-prefix-name={live}"])
        wait_until(lambda: shm_regions.owner_alive(live), 10, "the stand-in owner to start")

        # 3. The next start removes the dead server's regions, only those; its own are named afresh.
        h2, g2, m2 = free_ports(3)
        triton = TritonProcess(TritonConfig(http_port=h2, grpc_port=g2, metrics_port=m2, models=("supernet",),
                                            log_file=str(tmp_path / "next.log")))
        with triton:
            assert not any(p.exists() for p in left)
            assert live_file.exists() and other_file.exists()
            own = shm_regions.regions(triton.shm_prefix)
            assert own and triton.shm_prefix != killed
            assert grpcclient.InferenceServerClient(triton.cfg.grpc_url).is_model_ready("supernet")
            # 4. kill -9 of the server alone (the fault tests' way): stopping it removes its regions at once.
            os.kill(triton.proc.pid, signal.SIGKILL)
            triton.proc.wait(timeout=10)
            assert any(p.exists() for p in own)
        assert not any(p.exists() for p in own)
        assert live_file.exists() and other_file.exists()
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
        for f in Path("/dev/shm").glob(f"*test-{os.getpid()}"):
            f.unlink()
        for f in Path("/dev/shm").glob("superserve_shm_*test"):
            f.unlink()


# -- SIGTERM to superserve serve ---------------------------------------------------------------
def start_serve(tmp_path: Path, drain_timeout_s: float):
    http, grpc = free_ports(2)
    profile = sorted((paths.repo_root() / "profiles").glob("*.json"))[0]
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "superserve.scheduler.cli", "serve", "--http-port", str(http),
                             "--grpc-port", str(grpc), "--profile", str(profile), "--drain-timeout-s",
                             str(drain_timeout_s), "--triton-http-port", "0", "--triton-grpc-port", "0",
                             "--triton-metrics-port", "0", "--triton-log-file", str(tmp_path / "triton.log")],
                            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    log.close()
    read_until(proc, "SuperServe ready")
    return proc, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"


def queue_depth(http_url: str) -> float:
    return scrape(http_url, ("sched_queue_depth",), timeout_s=5)["sched_queue_depth"]


async def grpc_call(client, x: np.ndarray, params: dict) -> tuple[str, str]:
    inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    try:
        r = await client.infer("supernet", [inp], parameters=params, client_timeout=30)
    except InferenceServerException as e:
        return str(e.status()).replace("StatusCode.", ""), e.message() or ""
    assert r.as_numpy("LOGITS").shape == (len(x), 10)
    return "OK", ""


async def http_call(client, x: np.ndarray, params: dict) -> tuple[str, str]:
    inp = httpclient.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    try:
        r = await client.infer("supernet", [inp], parameters=params, timeout=30)
    except InferenceServerException as e:
        return str(e.status()), e.message() or ""
    except Exception as e:  # noqa: BLE001 - connection refused once the port is closed
        return "connection", f"{type(e).__name__}: {e}"
    assert r.as_numpy("LOGITS").shape == (len(x), 10)
    return "200", ""


async def sigterm_under_load(proc, http_url: str, grpc_url: str, backlog: int, sigterm_at_s: float):
    """A backlog of slow 64-row requests (one batch each), then open-loop 1-row requests every 20 ms over
    both protocols for 3 s, and SIGTERM at ``sigterm_at_s``. Returns (backlog results, open-loop results
    as (send time - SIGTERM time, result), seconds from SIGTERM to exit)."""
    rng = np.random.default_rng(0)
    g, h = grpcaio.InferenceServerClient(grpc_url), httpaio.InferenceServerClient(http_url)
    try:
        heavy = [asyncio.create_task((grpc_call(g, *a) if i % 2 else http_call(h, *a)))
                 for i, a in enumerate((rng.random((64, 1, 28, 28), dtype=np.float32),
                                        {"slo_ms": 30000, "subnet": LARGEST}) for _ in range(backlog))]
        await asyncio.to_thread(wait_until, lambda: queue_depth(http_url) >= backlog // 2, 20, "the backlog to queue")
        t0 = time.monotonic()
        light, term_t = [], None
        for i in range(150):
            now = time.monotonic() - t0
            if term_t is None and now >= sigterm_at_s:
                proc.send_signal(signal.SIGTERM)
                term_t = time.monotonic()
            x = rng.random((1, 1, 28, 28), dtype=np.float32)
            call = grpc_call(g, x, {"slo_ms": 5000}) if i % 2 else http_call(h, x, {"slo_ms": 5000})
            light.append((time.monotonic() - (term_t or float("inf")), asyncio.create_task(call)))
            await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 - time.monotonic()))
        results = [await t for t in heavy]
        light = [(dt, await t) for dt, t in light]
        code = await asyncio.to_thread(proc.wait, 60)
        assert code == 0, f"serve exited {code}"
        return results, light, time.monotonic() - term_t
    finally:
        await g.close()
        await h.close()


SERVED = {("OK", ""), ("200", "")}


def refused_while_draining(r) -> bool:
    return r[0] in ("UNAVAILABLE", "503") and "shutting down: not admitting" in r[1]


def port_closed(r) -> bool:
    """Refused by a closed port, or, over gRPC, cancelled by the server's stop (it gives calls that arrived after
    the drain a 1 s grace, server.py; on a loaded host a call can still be reading then): an explicit error."""
    return r[0] == "connection" or (r[0] == "UNAVAILABLE" and "connect" in r[1].lower()) or r[0] == "CANCELLED"


def test_sigterm_stops_admitting_answers_everything_admitted_and_exits_0(tmp_path, weights_path):
    proc, http_url, grpc_url = start_serve(tmp_path, drain_timeout_s=60)
    try:
        heavy, light, exit_s = asyncio.run(sigterm_under_load(proc, http_url, grpc_url, backlog=16, sigterm_at_s=0.3))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "serve.log").read_text()
    # Everything queued at SIGTERM was served, not cut off: the backlog took a while to drain.
    assert all(r in SERVED for r in heavy), heavy
    before = [r for dt, r in light if dt < -0.05]
    after = [r for dt, r in light if dt > 0.05]
    assert before and all(r in SERVED for r in before), before
    # Sent after SIGTERM: refused with 503 / UNAVAILABLE while draining, or the port was already closed.
    assert all(refused_while_draining(r) or port_closed(r) for r in after), \
        [r for r in after if not (refused_while_draining(r) or port_closed(r))]
    refused = [r for r in after if refused_while_draining(r)]
    assert {r[0] for r in refused} == {"UNAVAILABLE", "503"}, "both protocols must refuse while draining"
    assert "drained in" in log and "cut off" in log and exit_s < 30, log[-2000:]
    assert re.search(r"drained in [0-9.]+ s: [0-9]+ answered, 0 cut off", log), log[-2000:]


def test_a_drain_that_times_out_answers_the_rest_with_an_explicit_503(tmp_path, weights_path):
    proc, http_url, grpc_url = start_serve(tmp_path, drain_timeout_s=0.3)
    try:
        heavy, light, exit_s = asyncio.run(sigterm_under_load(proc, http_url, grpc_url, backlog=40, sigterm_at_s=0.1))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    cut = [r for r in heavy if r[0] in ("UNAVAILABLE", "503") and "before the drain timeout" in r[1]]
    assert cut, heavy  # 40 batches of 64 rows take far longer than 0.3 s
    assert all(r in SERVED or r in cut for r in heavy), heavy
    assert all(r in SERVED or r in cut or refused_while_draining(r) or port_closed(r) for _, r in light)
    assert exit_s < 20
