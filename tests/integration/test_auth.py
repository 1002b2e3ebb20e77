"""Issue 12 item 5, the bearer token: the real `superserve serve --token-file` in front of a real Triton. Every
inference and metadata route of both protocols refuses a missing or wrong token (HTTP 401 with
WWW-Authenticate, gRPC UNAUTHENTICATED), counted in /metrics and never reaching the engine; health and /metrics
stay open unless --protect-health; a non-loopback --host without a token is refused unless --insecure-public."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from superserve.client.prometheus_text import name_of, parse
from superserve.scheduler import paths
from superserve.scheduler.sidecar.server import serve_subprocess
from tests.conftest import free_ports

TOKEN = "test-token-" + "7f3a9c2e" * 4
PROFILE = str(sorted((paths.repo_root() / "profiles").glob("*.json"))[0])
GOOD = {"Authorization": f"Bearer {TOKEN}"}
BAD = {"Authorization": f"Bearer {TOKEN[:-1]}x"}


def start(tmp, triton, *extra):
    http, grpc_port = free_ports(2)
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    args = ["--http-port", str(http), "--grpc-port", str(grpc_port), "--worker", triton.cfg.grpc_url,
            "--profile", PROFILE, "--token-file", str(token_file), *extra]
    return serve_subprocess(args, str(tmp / "serve.log")), f"127.0.0.1:{http}", f"127.0.0.1:{grpc_port}"


@pytest.fixture(scope="module")
def guarded(triton_plain, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    ctx, http, grpc_url = start(tmp, triton_plain)
    with ctx as proc:
        yield proc, http, grpc_url
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, (tmp / "serve.log").read_text()


def get(url: str, headers: dict | None = None, method: str = "GET", body: bytes | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def metric(http: str, name: str) -> dict[str, float]:
    _, _, text = get(f"http://{http}/metrics", GOOD)
    return {key[len(name):]: v for key, v in parse(text.decode()).items() if name_of(key) == name}


def image() -> np.ndarray:
    return np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)


def http_infer(client: httpclient.InferenceServerClient, headers: dict | None):
    x = httpclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
    x.set_data_from_numpy(image(), binary_data=True)
    # A copy: tritonclient.http adds its own headers to the dict it is given.
    return client.infer("supernet", [x], parameters={"slo_ms": 2000}, headers=dict(headers) if headers else None)


def grpc_infer(client: grpcclient.InferenceServerClient, headers: dict | None):
    x = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
    x.set_data_from_numpy(image())
    return client.infer("supernet", [x], parameters={"slo_ms": 2000}, headers=headers, client_timeout=30)


HTTP_GUARDED = [("GET", "/v2"), ("GET", "/v2/models/supernet"), ("GET", "/v2/models/supernet/config"),
                ("GET", "/v2/models/supernet/ready"), ("GET", "/v2/models/supernet/versions/1"),
                ("POST", "/v2/models/supernet/infer"), ("GET", "/v2/no/such/route")]


def test_http_routes_need_the_token_and_refusals_never_reach_the_engine(guarded):
    proc, http, _ = guarded
    requests_before = sum(metric(http, "sched_requests_total").values())
    failures_before = metric(http, "sched_auth_failures_total")
    body = json.dumps({"inputs": [{"name": "INPUT", "shape": [1], "datatype": "FP32", "data": [0]}]}).encode()
    for headers in (None, BAD, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        for method, path in HTTP_GUARDED:
            data = body if method == "POST" else None
            status, resp_headers, text = get(f"http://{http}{path}", headers, method, data)
            assert status == 401, (headers, path, status, text)
            assert resp_headers.get("WWW-Authenticate", "").startswith("Bearer"), resp_headers
            assert TOKEN not in text.decode()
    # The malformed infer body above would be a 400 counted 'invalid' had it reached the front end.
    assert sum(metric(http, "sched_requests_total").values()) == requests_before
    failures = metric(http, "sched_auth_failures_total")
    n = len(HTTP_GUARDED)
    missing, invalid = '{protocol="http",reason="missing"}', '{protocol="http",reason="invalid"}'
    assert failures[missing] - failures_before[missing] == n
    assert failures[invalid] - failures_before[invalid] == 3 * n

    # Health and metrics stay open; with the token, everything works through tritonclient.
    for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
        assert get(f"http://{http}{path}")[0] == 200, path
    client = httpclient.InferenceServerClient(http, network_timeout=30)
    assert client.is_server_live() and client.is_server_ready()
    with pytest.raises(InferenceServerException) as e:
        http_infer(client, None)
    assert str(e.value.status()) == "401"
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("supernet")
    assert client.get_model_metadata("supernet", headers=GOOD)["name"] == "supernet"
    assert client.get_model_config("supernet", headers=GOOD)["name"] == "supernet"
    assert client.is_model_ready("supernet", headers=GOOD)
    assert client.get_server_metadata(headers=GOOD)["name"] == "superserve"
    assert http_infer(client, GOOD).as_numpy("LOGITS").shape == (1, 10)
    assert metric(http, "sched_requests_total")['{outcome="ok"}'] >= 1
    # Nor is the token on the command line for anyone on the host to read.
    assert TOKEN.encode() not in open(f"/proc/{proc.pid}/cmdline", "rb").read()


def test_grpc_routes_need_the_token(guarded):
    _, http, grpc_url = guarded
    before = metric(http, "sched_auth_failures_total")
    client = grpcclient.InferenceServerClient(grpc_url)
    calls = [lambda h: grpc_infer(client, h), lambda h: client.get_model_metadata("supernet", headers=h),
             lambda h: client.get_model_config("supernet", headers=h),
             lambda h: client.is_model_ready("supernet", headers=h),
             lambda h: client.get_server_metadata(headers=h)]
    bad_headers = (None, {"authorization": BAD["Authorization"]})
    for headers in bad_headers:
        for call in calls:
            with pytest.raises(InferenceServerException) as e:
                call(headers)
            assert e.value.status() == "StatusCode.UNAUTHENTICATED", e.value
    # Undecodable protobuf with no token: refused for the token, the body is never parsed.
    with grpc.insecure_channel(grpc_url) as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as e:
            raw(b"\xff\xff\xff", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    after = metric(http, "sched_auth_failures_total")
    assert after['{protocol="grpc",reason="missing"}'] - before['{protocol="grpc",reason="missing"}'] == len(calls) + 1
    assert after['{protocol="grpc",reason="invalid"}'] - before['{protocol="grpc",reason="invalid"}'] == len(calls)

    assert client.is_server_live() and client.is_server_ready()
    good = {"authorization": GOOD["Authorization"]}
    assert all(call(good) for call in calls[1:])
    assert grpc_infer(client, good).as_numpy("LOGITS").shape == (1, 10)


def test_protect_health_closes_health_and_metrics(triton_plain, tmp_path):
    ctx, http, grpc_url = start(tmp_path, triton_plain, "--protect-health")
    with ctx:
        for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
            assert get(f"http://{http}{path}")[0] == 401, path
            assert get(f"http://{http}{path}", GOOD)[0] == 200, path
        client = grpcclient.InferenceServerClient(grpc_url)
        for call in (client.is_server_live, client.is_server_ready):
            with pytest.raises(InferenceServerException, match="UNAUTHENTICATED|nauthenticated"):
                call()
            assert call(headers={"authorization": GOOD["Authorization"]})


def run_serve(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "superserve.scheduler.cli", "serve", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_public_host_without_a_token_is_refused_unless_explicit(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SUPERSERVE_TOKEN"}
    http, grpc_port = free_ports(2)
    ports = ["--http-port", str(http), "--grpc-port", str(grpc_port), "--worker", "127.0.0.1:1"]
    r = run_serve(["--host", "0.0.0.0", *ports], env)
    assert r.returncode == 2 and "--insecure-public" in r.stderr and "not loopback" in r.stderr, r.stderr
    short = tmp_path / "short"
    short.write_text("abc")
    r = run_serve(["--token-file", str(short), *ports], env)
    assert r.returncode == 2 and "at least 16" in r.stderr and "abc" not in r.stderr, r.stderr
    r = run_serve(["--token-file", str(tmp_path / "missing"), *ports], env)
    assert r.returncode == 2 and "No such file" in r.stderr, r.stderr
    r = run_serve(["--token-file", str(short), *ports], {**env, "SUPERSERVE_TOKEN": TOKEN})
    assert r.returncode == 2 and "given twice" in r.stderr, r.stderr


def test_token_from_the_environment_on_a_public_host(triton_plain, tmp_path, monkeypatch):
    """SUPERSERVE_TOKEN lets serve bind every interface (as docker-compose.yml does) and is enforced."""
    monkeypatch.setenv("SUPERSERVE_TOKEN", TOKEN)
    http, grpc_port = free_ports(2)
    args = ["--host", "0.0.0.0", "--http-port", str(http), "--grpc-port", str(grpc_port),
            "--worker", triton_plain.cfg.grpc_url, "--profile", PROFILE]
    with serve_subprocess(args, str(tmp_path / "serve.log")):
        assert get(f"http://127.0.0.1:{http}/v2/models/supernet")[0] == 401
        assert get(f"http://127.0.0.1:{http}/v2/models/supernet", GOOD)[0] == 200
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED|nauthenticated"):
            client.get_model_metadata("supernet")
    assert TOKEN not in (tmp_path / "serve.log").read_text()
