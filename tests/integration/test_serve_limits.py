"""Issue 12 item 6, slow and idle clients, against the real `superserve serve` (limits.py wired into its front
ends): a half-sent header or body is closed with 408 after its timeout, an idle keep-alive connection is closed,
and with a small connection cap the idle connections up to the cap are held while every one beyond gets 503 at
once, the server's descriptors stay bounded by the cap (the 20,000 idle connections that stalled it before
cannot pile up), gRPC keeps serving, and HTTP serves again once the idle ones go."""
from __future__ import annotations

import os
import signal
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from superserve.client.prometheus_text import scrape
from superserve.scheduler import paths
from superserve.scheduler.sidecar.server import serve_subprocess
from tests.conftest import free_ports

PROFILE = str(sorted((paths.repo_root() / "profiles").glob("*.json"))[0])
CAP = 64
EXCESS = 200


def serve(triton, tmp, *extra):
    http, grpc_port = free_ports(2)
    args = ["--http-port", str(http), "--grpc-port", str(grpc_port), "--worker", triton.cfg.grpc_url,
            "--profile", PROFILE, *extra]
    return serve_subprocess(args, str(tmp / "serve.log")), http, grpc_port


@pytest.fixture(scope="module")
def impatient(triton_plain, tmp_path_factory):
    """Short timeouts: 1 s for a head, a body or an idle keep-alive connection."""
    tmp = tmp_path_factory.mktemp("impatient")
    ctx, http, grpc_port = serve(triton_plain, tmp, "--header-timeout-s", "1", "--body-timeout-s", "1",
                                 "--keepalive-timeout-s", "1")
    with ctx as proc:
        yield http
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, (tmp / "serve.log").read_text()


def until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and how long that took (fails after limit_s)."""
    sock.settimeout(limit_s)
    t0, data = time.monotonic(), b""
    while True:
        chunk = sock.recv(65536)  # socket.timeout if still open after limit_s
        if not chunk:
            return data, time.monotonic() - t0
        data += chunk


def test_half_sent_header_is_closed_after_the_header_timeout(impatient):
    with socket.create_connection(("127.0.0.1", impatient), timeout=5) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        data, took = until_closed(s, 10)
    assert data.startswith(b"HTTP/1.1 408"), data
    assert 0.8 < took < 5, took


def test_half_sent_body_is_closed_after_the_body_timeout(impatient):
    with socket.create_connection(("127.0.0.1", impatient), timeout=5) as s:
        s.sendall(b"POST /v2/models/supernet/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inputs\"")
        data, took = until_closed(s, 10)
    assert data.startswith(b"HTTP/1.1 408"), data
    assert 0.8 < took < 5, took


def test_idle_keepalive_connection_is_closed(impatient):
    with socket.create_connection(("127.0.0.1", impatient), timeout=5) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        data, took = until_closed(s, 10)
    assert data.startswith(b"HTTP/1.1 200"), data  # answered, then closed when idle (aiohttp's default: 1 hour)
    assert took < 5, took


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def metric(http: int, name: str) -> float:
    return scrape(f"127.0.0.1:{http}")[name]


def infer(client):
    mod = grpcclient if isinstance(client, grpcclient.InferenceServerClient) else httpclient
    x = mod.InferInput("INPUT", [1, 1, 28, 28], "FP32")
    x.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    return client.infer("supernet", [x], parameters={"slo_ms": 2000}).as_numpy("LOGITS")


def test_connection_cap_refuses_cleanly_and_bounds_descriptors(triton_plain, tmp_path):
    ctx, http, grpc_port = serve(triton_plain, tmp_path, "--max-connections", str(CAP))
    with ctx as proc:
        baseline = fds(proc.pid)
        idle = [socket.create_connection(("127.0.0.1", http), timeout=5) for _ in range(CAP)]
        try:
            # Every connection beyond the cap gets 503 at once and is closed; none is left hanging.
            for _ in range(EXCESS):
                with socket.create_connection(("127.0.0.1", http), timeout=5) as s:
                    data, took = until_closed(s, 5)
                    assert data.startswith(b"HTTP/1.1 503") and b"too many connections" in data, data
            # The idle ones under the cap are still open (nothing was sent to them).
            for s in idle[:8]:
                s.setblocking(False)
                with pytest.raises(BlockingIOError):
                    s.recv(1)
            # Descriptors: the cap's worth, not one per connection tried.
            assert fds(proc.pid) <= baseline + CAP + 16, (baseline, fds(proc.pid))
            # gRPC is another door: it still serves while HTTP is full.
            assert infer(grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")).shape == (1, 10)
        finally:
            for s in idle:
                s.close()
        # Once the idle connections are gone, a normal tritonclient request is served.
        deadline, result = time.monotonic() + 10, None
        while result is None:
            try:
                result = infer(httpclient.InferenceServerClient(f"127.0.0.1:{http}", network_timeout=10))
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert result.shape == (1, 10)
        assert metric(http, "sched_http_connections_refused_total") == EXCESS
        assert metric(http, "sched_http_connections") <= 2


def test_every_limit_refusal_is_counted_in_metrics(triton_plain, tmp_path):
    """Through the real serve: a gRPC call over the cap on calls in progress, a gRPC message and an HTTP body over
    the 64 MiB limit each get refused (RESOURCE_EXHAUSTED, 413) and counted by protocol and reason, which grpc.aio's
    own limits never were; a call that times out waiting is not counted as a size refusal."""
    import grpc

    ctx, http, grpc_port = serve(triton_plain, tmp_path, "--grpc-max-concurrent-rpcs", "1")

    def refusals(protocol: str, reason: str) -> float:
        return metric(http, f'sched_limit_refusals_total{{protocol="{protocol}",reason="{reason}"}}')

    with ctx:
        assert refusals("grpc", "concurrent_rpcs") == refusals("grpc", "message_too_large") == 0
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}",
                                   options=[("grpc.max_send_message_length", 100 << 20)]) as ch:
            # A call that sends no message holds the one slot until its deadline.
            holder = ch.stream_unary("/inference.GRPCInferenceService/ModelInfer").future(_never(), timeout=2)
            time.sleep(0.5)
            with pytest.raises(Exception, match="too many concurrent RPCs"):
                infer(g)
            with pytest.raises(grpc.RpcError) as e:
                holder.result(timeout=10)
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert infer(g).shape == (1, 10)  # the slot is free again
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")(b"\x00" * (70 << 20), timeout=30)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        req = urllib.request.Request(f"http://127.0.0.1:{http}/v2/models/supernet/infer", data=b"{" * (70 << 20),
                                     method="POST")
        with pytest.raises(urllib.error.HTTPError) as h:
            urllib.request.urlopen(req, timeout=30)
        assert h.value.code == 413
        time.sleep(0.3)
        assert refusals("grpc", "concurrent_rpcs") == 1
        assert refusals("grpc", "message_too_large") == 1  # the 70 MB message; not the call that timed out
        assert refusals("http", "body_too_large") == 1
        assert infer(httpclient.InferenceServerClient(f"127.0.0.1:{http}")).shape == (1, 10)


def _never():
    """A request stream that never yields (and never ends) within the call's deadline."""
    time.sleep(30)
    yield b""
