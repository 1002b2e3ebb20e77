"""Check a running compose stack from outside, through the scheduler's published ports, with tritonclient.

    python tests/compose/check_stack.py --http 127.0.0.1:HTTP_PORT --grpc 127.0.0.1:GRPC_PORT \
        [--locust URL] [--workers N]

(scripts/compose_test.sh publishes the stack on loopback ports it picks free at run time and passes them here.)
With SUPERSERVE_TOKEN set (the scheduler's bearer token), every request sends it, and one more check makes sure a
request without it is refused.

Each check prints one line (``ok`` or ``FAIL`` with the reason); the last line is ``checks: N passed, M failed``
and the exit code is 1 if any check failed. Used by scripts/compose_test.sh; not collected by pytest.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from superserve.client.prometheus_text import by_label, labels, name_of, scrape

MODEL = "supernet"
INFO_KEYS = {"subnet", "accuracy", "confidence", "queue_ms", "infer_ms", "batch_size", "escalations"}
HEADERS: dict[str, str] = {}
"""{"authorization": "Bearer <token>"} when SUPERSERVE_TOKEN is set (main()). Pass ``auth()``, a copy:
tritonclient.http adds its own headers to the dict it is given."""


def auth() -> dict[str, str]:
    return dict(HEADERS)


class CheckFailed(AssertionError):
    pass


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


def image(seed: int) -> np.ndarray:
    """One request's INPUT: FP32 [1, 1, 28, 28] in [0, 1]."""
    return np.random.default_rng(seed).random((1, 1, 28, 28), dtype=np.float32)


def check_result(result, protocol: str) -> str:
    logits, info = result.as_numpy("LOGITS"), result.as_numpy("INFO")
    expect(logits is not None and logits.shape == (1, 10), f"LOGITS shape {None if logits is None else logits.shape}")
    expect(logits.dtype == np.float32 and bool(np.isfinite(logits).all()), f"LOGITS {logits.dtype}, not all finite")
    expect(info is not None and info.size == 1, f"INFO {None if info is None else info.shape}")
    meta = json.loads(info.reshape(-1)[0])
    expect(INFO_KEYS <= set(meta), f"INFO JSON lacks {sorted(INFO_KEYS - set(meta))}: {meta}")
    expect(isinstance(meta["subnet"], str) and meta["subnet"].startswith("d"), f"INFO subnet {meta['subnet']!r}")
    expect(0 < float(meta["accuracy"]) <= 1, f"INFO accuracy {meta['accuracy']}")
    return f"{protocol}: subnet {meta['subnet']} accuracy {meta['accuracy']} batch {meta['batch_size']}"


def http_infer(url: str) -> str:
    client = httpclient.InferenceServerClient(url, network_timeout=30)
    expect(client.is_server_ready(), "server not ready")
    expect(client.is_model_ready(MODEL, headers=auth()), f"model {MODEL} not ready")
    inp = httpclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(image(1), binary_data=True)
    out = [httpclient.InferRequestedOutput("LOGITS"), httpclient.InferRequestedOutput("INFO")]
    return check_result(client.infer(MODEL, [inp], outputs=out, parameters={"slo_ms": 500.0}, headers=auth()),
                        "HTTP")


def grpc_infer(url: str) -> str:
    client = grpcclient.InferenceServerClient(url)
    expect(client.is_server_ready(), "server not ready")
    expect(client.is_model_ready(MODEL, headers=auth()), f"model {MODEL} not ready")
    inp = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(image(2))
    return check_result(client.infer(MODEL, [inp], parameters={"slo_ms": 500.0}, client_timeout=30, headers=auth()),
                        "gRPC")


def grpc_burst(url: str, n: int = 32) -> str:
    """n requests in flight at once with mixed SLOs: every one answered, and the scheduler batched some."""
    client = grpcclient.InferenceServerClient(url)
    done, errors = [], []

    def callback(result, error):
        (errors if error else done).append(error or result)

    for i in range(n):
        inp = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(image(100 + i))
        client.async_infer(MODEL, [inp], callback, parameters={"slo_ms": 1000.0 if i % 2 else 2000.0},
                           client_timeout=30, headers=auth())
    deadline = time.monotonic() + 30
    while len(done) + len(errors) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    expect(not errors, f"{len(errors)} of {n} failed, first: {errors[0] if errors else ''}")
    expect(len(done) == n, f"only {len(done)} of {n} answered in 30 s")
    batches = [json.loads(r.as_numpy("INFO").reshape(-1)[0])["batch_size"] for r in done]
    for r in done:
        check_result(r, "gRPC")
    return f"gRPC burst: {n} answered, largest batch {max(batches)}"


def http_bad_parameter(url: str) -> str:
    client = httpclient.InferenceServerClient(url, network_timeout=30)
    inp = httpclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(image(3), binary_data=True)
    try:
        client.infer(MODEL, [inp], parameters={"slo_ms": -5.0}, headers=auth())
    except InferenceServerException as e:
        expect(str(e.status()) == "400", f"status {e.status()} ({e.message()}), want 400")
        return f"HTTP slo_ms=-5 -> 400: {e.message()[:80]}"
    raise CheckFailed("slo_ms=-5 was accepted")


def http_bad_shape(url: str) -> str:
    """A raw KServe v2 JSON request with the wrong shape, so no client library can fix it up."""
    body = json.dumps({"inputs": [{"name": "INPUT", "shape": [1, 1, 28, 27], "datatype": "FP32",
                                   "data": [0.5] * (28 * 27)}]}).encode()
    req = urllib.request.Request(f"http://{url}/v2/models/{MODEL}/infer", data=body,
                                 headers={"Content-Type": "application/json", **auth()})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raise CheckFailed(f"shape [1,1,28,27] answered {r.status}")
    except urllib.error.HTTPError as e:
        expect(e.code == 400, f"HTTP {e.code}, want 400")
        return f"HTTP shape [1,1,28,27] -> 400: {e.read()[:80].decode(errors='replace')}"


def grpc_bad_parameter(url: str) -> str:
    client = grpcclient.InferenceServerClient(url)
    inp = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(image(4))
    try:
        client.infer(MODEL, [inp], parameters={"no_such_parameter": 1}, client_timeout=30, headers=auth())
    except InferenceServerException as e:
        expect("INVALID_ARGUMENT" in str(e.status()), f"status {e.status()}, want INVALID_ARGUMENT")
        return f"gRPC unknown parameter -> {e.status()}"
    raise CheckFailed("an unknown parameter was accepted")


def unauthenticated(http: str, grpc_url: str) -> str:
    """With a token set, requests without it are refused on both protocols."""
    req = urllib.request.Request(f"http://{http}/v2/models/{MODEL}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raise CheckFailed(f"model metadata without the token answered {r.status}")
    except urllib.error.HTTPError as e:
        expect(e.code == 401, f"HTTP {e.code} without the token, want 401")
    try:
        grpcclient.InferenceServerClient(grpc_url).get_model_metadata(MODEL)
    except InferenceServerException as e:
        expect("UNAUTHENTICATED" in str(e.status()), f"gRPC {e.status()} without the token, want UNAUTHENTICATED")
    else:
        raise CheckFailed("gRPC model metadata without the token was answered")
    return "no token: HTTP 401, gRPC UNAUTHENTICATED"


def metrics(url: str, workers: int) -> str:
    samples = scrape(url)
    served = by_label(samples, "sched_requests_total", "outcome")
    expect(served, "no sched_requests_total in /metrics")
    healthy = [w for w, v in by_label(samples, "sched_worker_healthy", "worker").items() if v == 1]
    expect(len(healthy) == workers, f"{len(healthy)} healthy Triton workers in /metrics, expected {workers} "
                                    f"(docker compose --scale triton={workers})")
    used = [k for k, v in samples.items() if name_of(k) == "sched_worker_batches_total"
            and labels(k).get("outcome") == "ok" and v > 0]
    expect(len(used) == workers, f"{len(used)} of {workers} workers served batches")
    return f"/metrics: {len(served)} sched_requests_total series, {len(healthy)} healthy workers, all serving"


def locust_ui(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        expect(r.status == 200, f"HTTP {r.status}")
        page = r.read().decode(errors="replace")
    expect("locust" in page.lower(), "the page does not look like Locust's UI")
    return f"Locust web UI at {url}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--http", required=True, help="scheduler HTTP host:port")
    p.add_argument("--grpc", required=True, help="scheduler gRPC host:port")
    p.add_argument("--locust", help="Locust web UI URL (skipped if not given)")
    p.add_argument("--workers", type=int, default=1, help="Triton containers the scheduler must be using")
    args = p.parse_args()
    token = os.environ.get("SUPERSERVE_TOKEN", "").strip()
    if token:
        HEADERS["authorization"] = f"Bearer {token}"
    checks = [("HTTP infer", http_infer, args.http), ("gRPC infer", grpc_infer, args.grpc),
              ("gRPC burst", grpc_burst, args.grpc), ("HTTP bad parameter", http_bad_parameter, args.http),
              ("HTTP bad shape", http_bad_shape, args.http), ("gRPC bad parameter", grpc_bad_parameter, args.grpc),
              ("metrics", lambda url: metrics(url, args.workers), args.http)]
    if token:
        checks.append(("no token refused", lambda url: unauthenticated(url, args.grpc), args.http))
    if args.locust:
        checks.append(("Locust UI", locust_ui, args.locust))
    passed = failed = 0
    for name, fn, url in checks:
        start = time.perf_counter()
        try:
            detail = fn(url)
        except Exception as e:  # one failing check must not hide the others
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        else:
            passed += 1
            print(f"ok   {name} ({(time.perf_counter() - start) * 1000:.0f} ms): {detail}", flush=True)
    print(f"checks: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
