"""`superserve triton` as a user runs it: prints its URLs when ready, stops quickly on SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import tritonclient.http as httpclient

from tests.conftest import free_ports


@pytest.mark.slow
def test_cli_serves_our_repository_and_stops_on_sigterm(tmp_path, weights_path):
    http, grpc, metrics = free_ports(3)
    log = tmp_path / "triton.log"
    proc = subprocess.Popen([sys.executable, "-m", "superserve.scheduler.cli", "triton", "--http-port", str(http),
                             "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--log-file", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Triton ready"):
                break
        assert lines and lines[-1].startswith("Triton ready"), "".join(lines)
        assert f"http://127.0.0.1:{http}" in lines[-1] and f"127.0.0.1:{grpc}" in lines[-1]
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
        assert client.is_model_ready("supernet")
        config = client.get_model_config("supernet")
        assert config["backend"] == "python_supernet" and config["max_batch_size"] >= 64
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - t < 15
        assert "supernet" in log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # Nothing of the process group (server, Python backend stubs) is left.
    time.sleep(0.5)
    try:
        os.killpg(proc.pid, 0)
        leaked = True
    except ProcessLookupError:
        leaked = False
    assert not leaked, "tritonserver or a backend stub outlived `superserve triton`"
