"""Issue 12 with real processes: Triton's control key is on no command line that local users can read in /proc
(neither the server's nor its backend stubs'), yet Triton checks it; and Triton dies with the process that launched
it when that process is killed with SIGKILL (`superserve triton` and `superserve serve`), instead of running on as
an orphan holding its ports."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from superserve.client.soak_bench import children_of
from superserve.scheduler import paths
from superserve.scheduler.sidecar import hidden_key
from superserve.scheduler.sidecar.server import serve_subprocess
from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess
from tests.conftest import free_ports

needs_cc = pytest.mark.skipif(hidden_key.build() is None, reason="no C compiler: the key goes on the command line")


def post(url: str, headers: dict) -> tuple[int, str]:
    req = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json",
                                                                          **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def proc_file(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


@needs_cc
def test_control_key_is_on_no_command_line_and_still_checked(tmp_path, weights_path):
    http, grpc, metrics = free_ports(3)
    with TritonProcess(TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, models=("supernet",),
                                    log_file=str(tmp_path / "triton.log"))) as triton:
        key = triton.control_key.encode()
        server, stubs = triton.proc.pid, [pid for pid, _ in children_of(triton.proc.pid)]
        assert stubs, "no Python backend stub under tritonserver"
        assert hidden_key.PLACEHOLDER.encode() in proc_file(server, "cmdline")
        for pid in (server, *stubs):
            assert key not in proc_file(pid, "cmdline"), pid
            assert key not in proc_file(pid, "environ"), pid  # wiped, even from the owner's view
        for pid in stubs:  # nothing of the mechanism reaches Triton's children
            env = proc_file(pid, "environ")
            assert hidden_key.KEY_VAR.encode() not in env and b"LD_PRELOAD" not in env
        # Triton has the real key: a wrong one (or the placeholder) is refused as restricted, the real one passes
        # the restriction and meets model control off ("not allowed").
        unload = f"http://{triton.cfg.http_url}/v2/repository/models/supernet/unload"
        for wrong in ("guess", hidden_key.PLACEHOLDER, triton.control_key[:-1]):
            status, body = post(unload, {"superserve-control": wrong})
            assert status == 403 and "restricted" in body, (wrong, status, body)
        status, body = post(unload, triton.control_headers("http"))
        assert status != 200 and "not allowed" in body, (status, body)
        status, _ = post(f"http://{triton.cfg.http_url}/v2/repository/index", triton.control_headers("http"))
        assert status == 200


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = proc_file(pid, "stat").decode()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def assert_gone_within(pids: list[int], seconds: float) -> float:
    t0 = time.monotonic()
    while any(alive(p) for p in pids):
        assert time.monotonic() - t0 < seconds, f"still running {seconds:g} s after the launcher's SIGKILL: " \
            + str([(p, proc_file(p, 'comm').decode().strip()) for p in pids if alive(p)])
        time.sleep(0.05)
    return time.monotonic() - t0


def tritonservers(ppid: int) -> list[int]:
    return [pid for pid, comm in children_of(ppid) if comm == "tritonserver"]


def test_triton_dies_with_a_sigkilled_triton_launcher(tmp_path, weights_path):
    http, grpc, metrics = free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "superserve.scheduler.cli", "triton", "--http-port", str(http),
                             "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--model", "supernet",
                             "--log-file", str(tmp_path / "triton.log")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        while line and not line.startswith("Triton ready"):
            line = proc.stdout.readline()
        assert line.startswith("Triton ready"), (tmp_path / "triton.log").read_text()[-2000:]
        servers = tritonservers(proc.pid)
        assert len(servers) == 1
        stubs = [pid for pid, _ in children_of(servers[0])]
        os.kill(proc.pid, signal.SIGKILL)  # the launcher alone: Triton runs in a session of its own
        proc.wait(timeout=10)
        assert_gone_within(servers, 5.0)
        assert_gone_within(stubs, 15.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_triton_dies_with_a_sigkilled_serve(tmp_path, weights_path):
    """`serve` starts its Tritons from a worker thread (asyncio.to_thread): they must still outlive that thread
    and die with the process."""
    http, grpc, th, tg, tm = free_ports(5)
    profile = sorted((paths.repo_root() / "profiles").glob("*.json"))[0]
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--profile", str(profile), "--triton-http-port",
            str(th), "--triton-grpc-port", str(tg), "--triton-metrics-port", str(tm),
            "--triton-log-file", str(tmp_path / "triton.log")]
    with serve_subprocess(args, str(tmp_path / "serve.log")) as proc:
        servers = tritonservers(proc.pid)
        assert len(servers) == 1
        time.sleep(1.0)  # the start-up threads are idle by now; Triton must still be up
        assert alive(servers[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=10) as r:
            assert r.status == 200
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert_gone_within(servers, 5.0)


LAUNCHER = """
import sys
from superserve.scheduler.sidecar.server import serve_subprocess
with serve_subprocess(sys.argv[2:], sys.argv[1]) as proc:
    print(proc.pid, flush=True)
    sys.stdin.read()  # until killed
"""


def test_a_sidecar_dies_with_the_sigkilled_process_that_started_it(tmp_path, weights_path):
    """A benchmark or test killed with SIGKILL (or one whose clean-up never ran) leaves no `superserve serve` and no
    Triton behind: serve_subprocess starts the sidecar with the parent-death signal, as the launcher starts Triton."""
    http, grpc, th, tg, tm = free_ports(5)
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--triton-http-port", str(th), "--triton-grpc-port",
            str(tg), "--triton-metrics-port", str(tm), "--triton-log-file", str(tmp_path / "triton.log")]
    bench = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(tmp_path / "serve.log"), *args],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        sidecar = int(bench.stdout.readline())
        servers = tritonservers(sidecar)
        assert alive(sidecar) and len(servers) == 1
        os.kill(bench.pid, signal.SIGKILL)
        bench.wait(timeout=10)
        assert_gone_within([sidecar, *servers], 10.0)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
