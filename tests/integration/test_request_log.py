"""``serve --request-log``: one line per answered request with its id and the scheduler's stamps, on the clock the
client shares (CLOCK_MONOTONIC), and the client's gRPC deadline when it set one; the sidecar plans with that
deadline when it ends before the SLO (client/phases.py reads the log; core/admission.py ``within_deadline``)."""
from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from superserve.scheduler import paths
from superserve.scheduler.sidecar.server import serve_subprocess
from tests.conftest import free_ports


@pytest.fixture(scope="module")
def logged_sidecar(triton_plain, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("request-log")
    http, grpc = free_ports(2)
    profile = sorted((paths.repo_root() / "profiles").glob("*.json"))[0]
    log = tmp / "requests.jsonl"
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--worker", triton_plain.cfg.grpc_url,
            "--profile", str(profile), "--request-log", str(log)]
    with serve_subprocess(args, str(tmp / "serve.log")) as proc:
        yield f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", log
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, (tmp / "serve.log").read_text()


def _rows(log) -> dict:
    return {r["id"]: r for r in map(json.loads, log.read_text().splitlines())}


def test_each_answer_is_logged_between_the_clients_send_and_receive_with_its_grpc_deadline(logged_sidecar):
    http_url, grpc_url, log = logged_sidecar
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    client = grpcclient.InferenceServerClient(grpc_url)
    stamps = {}
    for i, timeout_s in enumerate((None, 0.8, 0.8)):  # under a second gRPC sends timeouts to the ms
        inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        sent = time.monotonic() * 1000
        client.infer("supernet", [inp], parameters={"slo_ms": 200}, request_id=f"g{i}", client_timeout=timeout_s)
        stamps[f"g{i}"] = (sent, time.monotonic() * 1000, timeout_s)
    client.close()
    hc = httpclient.InferenceServerClient(http_url)
    inp = httpclient.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    sent = time.monotonic() * 1000
    hc.infer("supernet", [inp], parameters={"slo_ms": 200}, request_id="h0")
    stamps["h0"] = (sent, time.monotonic() * 1000, None)
    hc.close()

    rows = _rows(log)  # line-buffered: every answered request is in the file when its answer is
    assert set(stamps) <= set(rows), rows
    for rid, (sent, received, timeout_s) in stamps.items():
        r = rows[rid]
        assert sent <= r["decoded"] <= r["answered"] <= r["encoded"] <= received, (rid, sent, r, received)
        assert r["protocol"] == ("http" if rid.startswith("h") else "grpc")
        if timeout_s is None:
            assert "deadline" not in r, r
        else:  # gRPC stamped the deadline when it read the call: after the send, before the front end ran
            assert sent + timeout_s * 1000 - 1 <= r["deadline"] <= r["decoded"] + timeout_s * 1000 + 1, (sent, r)
