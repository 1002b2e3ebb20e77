"""Batch calls to Triton over HTTP (scheduler/sidecar/triton_http.py, `serve --worker-http`): the same answers as
Triton gives directly, Triton's own refusals mapped as on the gRPC path, the call's deadline not the worker's
fault, a dead worker an explicit failure, and sockets reused rather than leaked."""
from __future__ import annotations

import asyncio
import json
import signal

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from superserve.scheduler import paths
from superserve.scheduler.core.errors import DeadlineInfeasible, InvalidInput, WorkerFailed
from superserve.scheduler.sidecar.server import serve_subprocess
from superserve.scheduler.sidecar.triton_http import TritonHttpWorker
from tests.conftest import free_ports

SMALL, LARGE = "d1.1.1-w25.25.25", "d3.3.3-w100.100.100"


def direct(triton, x: np.ndarray, subnet: str) -> np.ndarray:
    c = grpcclient.InferenceServerClient(triton.cfg.grpc_url)
    inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return c.infer("supernet", [inp], parameters={"subnet": subnet}).as_numpy("LOGITS")


def test_worker_answers_as_triton_does_and_maps_its_errors(triton_plain):
    x = np.random.default_rng(1).random((5, 1, 28, 28), dtype=np.float32)

    async def run():
        w = TritonHttpWorker(triton_plain.cfg.grpc_url, triton_plain.cfg.http_url)
        try:
            assert await w.ready()
            out = {}
            for subnet in (SMALL, LARGE):
                logits, infos = await w.infer(x, subnet, 10.0)
                out[subnet] = logits
                assert len(infos) == 5 and {json.loads(i)["subnet"] for i in infos} == {subnet}
            with pytest.raises(InvalidInput, match="subnet"):  # Triton's 400: the request's fault
                await w.infer(x, "d9.9.9-w1.1.1", 10.0)
            with pytest.raises(DeadlineInfeasible):  # the call's own deadline, not the worker's failure
                await w.infer(x, LARGE, 1e-6)
            logits, _ = await w.infer(x[:1], SMALL, 10.0)  # a fresh socket after the abandoned one
            assert np.allclose(logits, out[SMALL][:1], atol=1e-5)
            assert len(w._all) == len(w._idle) == 1, "sockets leaked or not reused"
            return out
        finally:
            await w.close()

    out = asyncio.run(run())
    for subnet, logits in out.items():
        assert np.allclose(logits, direct(triton_plain, x, subnet), atol=1e-5)


def test_nothing_listening_is_the_workers_failure(triton_plain):
    (port,) = free_ports(1)

    async def run():
        w = TritonHttpWorker(triton_plain.cfg.grpc_url, f"127.0.0.1:{port}")
        try:
            await w.infer(np.zeros((1, 1, 28, 28), np.float32), SMALL, 5.0)
        finally:
            await w.close()

    with pytest.raises(WorkerFailed, match=str(port)):
        asyncio.run(run())


def test_sidecar_with_http_transport_serves_concurrent_batches(triton_plain, tmp_path):
    http, grpc = free_ports(2)
    profile_file = sorted((paths.repo_root() / "profiles").glob("*.json"))[0]
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--worker", triton_plain.cfg.grpc_url,
            "--worker-http", triton_plain.cfg.http_url, "--profile", str(profile_file)]
    x = np.random.default_rng(2).random((24, 1, 28, 28), dtype=np.float32)
    with serve_subprocess(args, str(tmp_path / "serve.log")) as proc:
        import tritonclient.grpc.aio as aio

        async def load():
            c = aio.InferenceServerClient(f"127.0.0.1:{grpc}")

            async def one(i):
                inp = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
                inp.set_data_from_numpy(x[i:i + 1])
                r = await c.infer("supernet", [inp], parameters={"slo_ms": 2000, "subnet": LARGE})
                return r.as_numpy("LOGITS")[0], json.loads(r.as_numpy("INFO")[0][0])

            try:
                return await asyncio.gather(*(one(i) for i in range(len(x))))
            finally:
                await c.close()

        answers = asyncio.run(load())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, (tmp_path / "serve.log").read_text()
    want = direct(triton_plain, x, LARGE)
    assert np.allclose(np.stack([a for a, _ in answers]), want, atol=1e-5)
    assert max(info["batch_size"] for _, info in answers) > 1, "24 concurrent requests never shared a batch"


@pytest.mark.parametrize("kwargs,message", [
    (dict(workers=("127.0.0.1:1",), worker_transport="http"), "needs each worker's HTTP host:port"),
    (dict(workers=("127.0.0.1:1", "127.0.0.1:2"), worker_http=("127.0.0.1:3",)), "one worker HTTP address per"),
    (dict(worker_transport="quic"), "grpc or http"),
])
def test_transport_settings_are_checked(kwargs, message):
    from superserve.scheduler.sidecar.server import ServeConfig

    with pytest.raises(ValueError, match=message):
        ServeConfig(**kwargs)
