"""client/locustfile.py against the real stack: `superserve serve` (scheduler + embedded Triton) on free
loopback ports, Locust run headless as a subprocess with --csv, over gRPC (gevent) and HTTP, with SLO
classes whose misses count as failures, and with the burst shape driving the user count."""
from __future__ import annotations

import csv
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from superserve.scheduler import paths
from superserve.scheduler.sidecar.server import serve_subprocess
from tests.conftest import free_ports

LOCUSTFILE = paths.repo_root() / "client" / "locustfile.py"
LOOSE, INFEASIBLE = "supernet slo=2000ms", "supernet slo=0.01ms"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory, weights_path):
    """`superserve serve` with its embedded Triton; yields (http host:port, grpc host:port)."""
    log = tmp_path_factory.mktemp("locust-stack") / "serve.log"
    ports = free_ports(5)
    http, grpc, th, tg, tm = ports
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--triton-http-port", str(th),
            "--triton-grpc-port", str(tg), "--triton-metrics-port", str(tm),
            "--profile", str(sorted((paths.repo_root() / "profiles").glob("*.json"))[0])]
    with serve_subprocess(args, str(log)) as proc:
        yield f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    assert all(port_free(p) for p in ports), f"a port of {ports} is still bound after shutdown"


def run_locust(tmp_path: Path, user_class: str, host: str, *args: str, timeout_s: float = 45):
    """Run Locust headless; return (exit code, output, {name: stats row}, {name: superserve row})."""
    prefix = tmp_path / user_class
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), user_class, "--host", host, "--headless",
           "--only-summary", "--csv", str(prefix), *args]
    proc = subprocess.run(cmd, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout_s)
    out = proc.stdout + proc.stderr
    stats_file = Path(f"{prefix}_stats.csv")
    assert stats_file.exists(), f"no {stats_file.name} (exit {proc.returncode}):\n{out[-3000:]}"
    with open(stats_file) as f:
        stats = {r["Name"]: r for r in csv.DictReader(f)}
    with open(f"{prefix}_superserve.csv") as f:
        summary = {r["name"]: r for r in csv.DictReader(f)}
    with open(f"{prefix}_exceptions.csv") as f:
        assert len(f.readlines()) == 1, f"Locust recorded exceptions:\n{out[-3000:]}"
    return proc.returncode, out, stats, summary


def check_classes(rc, out, stats, summary, request_type):
    # Locust exits 1 when any request failed; the infeasible class guarantees failures. 2 would mean an
    # unhandled exception in the locustfile.
    assert rc == 1, out[-3000:]
    loose, infeasible = stats[LOOSE], stats[INFEASIBLE]
    assert loose["Type"] == infeasible["Type"] == request_type
    assert int(loose["Request Count"]) > 10, out[-3000:]
    assert int(loose["Failure Count"]) <= 0.1 * int(loose["Request Count"]), out[-3000:]
    assert int(infeasible["Request Count"]) > 0
    assert infeasible["Failure Count"] == infeasible["Request Count"], out[-3000:]
    # Dropped at once by the scheduler (504 / DEADLINE_EXCEEDED), not answered late.
    s = summary[INFEASIBLE]
    assert int(s["dropped"]) == int(s["sent"]) > 0 and int(s["in_time"]) == 0
    s = summary[LOOSE]
    assert int(s["in_time"]) > 0 and 0.5 < float(s["mean_served_accuracy"]) <= 1
    assert float(s["real_accuracy"]) > 0.5 and s["top_subnet"]


def test_grpc_users_count_misses_as_failures(stack, tmp_path):
    _, grpc = stack
    result = run_locust(tmp_path, "TritonGrpcUser", grpc, "-u", "3", "-r", "3", "-t", "8s",
                        "--slo-classes", "2000:0.75,0.01:0.25", "--user-rps", "5")
    check_classes(*result, request_type="grpc")


def test_http_users_count_misses_as_failures(stack, tmp_path):
    http, _ = stack
    result = run_locust(tmp_path, "TritonHttpUser", f"http://{http}", "-u", "3", "-r", "3", "-t", "8s",
                        "--slo-classes", "2000:0.75,0.01:0.25", "--user-rps", "5")
    check_classes(*result, request_type="http")


def test_burst_shape_spikes_and_ends_the_run(stack, tmp_path):
    _, grpc = stack
    start = time.monotonic()
    # No -t: the shape alone must end the run (else the subprocess timeout fails the test).
    rc, out, stats, summary = run_locust(
        tmp_path, "TritonGrpcUser", grpc, "--slo-classes", "2000", "--user-rps", "5", "--bursts",
        "--burst-base-users", "1", "--burst-peak-users", "3", "--burst-period", "4", "--burst-length", "1.5",
        "--burst-duration", "8")
    assert time.monotonic() - start < 30, out[-3000:]
    assert rc in (0, 1), out[-3000:]
    assert int(stats[LOOSE]["Request Count"]) > 10
    assert int(stats[LOOSE]["Failure Count"]) <= 0.1 * int(stats[LOOSE]["Request Count"]), out[-3000:]
    with open(tmp_path / "TritonGrpcUser_stats_history.csv") as f:
        users = [int(r["User Count"]) for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    assert 3 in users, users
    first_peak = users.index(3)
    assert 1 in users[first_peak:], f"user count never fell back to the base after a burst: {users}"
