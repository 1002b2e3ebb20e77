"""Every ServeError a request can meet reaches the client with its documented code (docs/design.md, Errors)
through both real front ends: the scheduler's aiohttp app and its grpc.aio server on free loopback ports, an
engine with in-process stand-in workers behind them. The request is sent over the wire (HTTP JSON, gRPC
ModelInfer) and the status read from the answer; each refusal is counted once, under its outcome."""
from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import grpc
import numpy as np
import pytest
from aiohttp import web
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from superserve.scheduler.sidecar.api_grpc import GrpcFrontend, add_to_server
from superserve.scheduler.sidecar.api_http import HttpFrontend
from superserve.scheduler.sidecar.dataplane import ModelSurface
from superserve.scheduler.sidecar.triton_worker import SupernetWorker
from superserve.scheduler.sidecar.engine import Engine, EngineConfig
from superserve.scheduler.core.errors import (Cancelled, DeadlineInfeasible, InvalidInput, ModelNotFound, Overloaded,
                                         ServeError, WorkerFailed)
from superserve.scheduler.core.health import HealthConfig
from superserve.scheduler.core.lifecycle import error_outcome
from superserve.scheduler.policies import make_policy
from superserve.scheduler.ports import free_ports
from tests.conftest import committed_profile as profile


class Worker(SupernetWorker):
    """Answers, or raises what a TritonWorker raises for a failed call."""

    RAISES = {"fail": lambda url: WorkerFailed(f"worker {url}: StatusCode.UNAVAILABLE: connection refused"),
              "cancelled": lambda url: Cancelled(f"worker {url}: the call was cancelled"),
              "invalid": lambda url: InvalidInput("input 'INPUT': Triton says no")}

    def __init__(self, url: str, mode: str = "ok"):
        self.url, self.mode = url, mode

    async def ready(self) -> bool:
        return True

    async def infer(self, images, subnet, timeout_s):
        if self.mode in self.RAISES:
            raise self.RAISES[self.mode](self.url)
        return np.zeros((len(images), 10), np.float32), [{"subnet": subnet, "confidence": 1.0}] * len(images)

    async def close(self) -> None:
        pass


# (error, how the request or the workers provoke it, HTTP status, gRPC code)
CASES = [
    (InvalidInput, dict(params={"slo_ms": -1}), 400, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidInput, dict(workers=("invalid",)), 400, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelNotFound, dict(model="resnet"), 404, grpc.StatusCode.NOT_FOUND),
    (DeadlineInfeasible, dict(params={"slo_ms": 0.01}), 504, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Overloaded, dict(workers=("fail",)), 503, grpc.StatusCode.UNAVAILABLE),
    (WorkerFailed, dict(workers=("fail", "ok"), max_attempts=1), 500, grpc.StatusCode.INTERNAL),
    (Cancelled, dict(workers=("cancelled",)), 499, grpc.StatusCode.CANCELLED),
]


def test_every_serve_error_is_covered():
    def leaves(cls):
        subs = cls.__subclasses__()
        return {cls} if not subs else set().union(*(leaves(s) for s in subs))
    assert leaves(ServeError) == {c[0] for c in CASES}


@contextlib.asynccontextmanager
async def serving(workers: tuple[str, ...], max_attempts: int):
    engine = Engine(EngineConfig(adapt_latency=False, margin_ms=0), profile(), make_policy("slackfit"),
                    [Worker(f"w{i}", m) for i, m in enumerate(workers)], health=HealthConfig(max_attempts=max_attempts))
    surface = ModelSurface("supernet", {"name": "supernet"}, {"name": "supernet", "max_batch_size": 64}, 64)
    runner = web.AppRunner(HttpFrontend(engine, surface).app)
    await runner.setup()
    http_port = free_ports(1)[0]
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    server = grpc.aio.server()
    meta = service_pb2.ModelMetadataResponse(name="supernet", versions=["1"])
    config = service_pb2.ModelConfigResponse(config=model_config_pb2.ModelConfig(name="supernet", max_batch_size=64))
    add_to_server(server, GrpcFrontend(engine, surface, meta, config))
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield engine, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    finally:
        await server.stop(None)
        await runner.cleanup()
        await engine.close()


async def http_status(url: str, model: str, params: dict) -> int:
    body = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [0.5] * 784}],
            "parameters": params}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/v2/models/{model}/infer", data=json.dumps(body)) as r:
            await r.read()
            return r.status


async def grpc_code(target: str, model: str, params: dict) -> grpc.StatusCode:
    req = service_pb2.ModelInferRequest(model_name=model)
    req.inputs.add(name="INPUT", datatype="FP32", shape=[1, 1, 28, 28])
    req.raw_input_contents.append(np.full((1, 1, 28, 28), 0.5, "<f4").tobytes())
    for k, v in params.items():
        req.parameters[k].double_param = float(v)
    async with grpc.aio.insecure_channel(target) as ch:
        try:
            await service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=10)
        except grpc.aio.AioRpcError as e:
            return e.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("error,how,status,code", CASES, ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_each_error_reaches_both_protocols_with_its_code(error, how, status, code):
    assert (error.http_status, error.grpc_code) == (status, code.name)  # the class says what the wire says
    model, params = how.get("model", "supernet"), how.get("params", {"slo_ms": 1000})

    async def go():
        seen = []
        for send in (lambda h, g: http_status(h, model, params), lambda h, g: grpc_code(g, model, params)):
            async with serving(how.get("workers", ("ok",)), how.get("max_attempts", 3)) as (engine, h, g):
                seen.append(await send(h, g))
                counts = dict(engine.stats.requests)
            assert counts == {error_outcome(error("")): 1}, counts  # counted once, under its outcome
        return seen

    assert asyncio.run(go()) == [status, code]


def test_a_served_request_is_200_and_ok_on_both():
    async def go():
        async with serving(("ok",), 3) as (engine, h, g):
            out = [await http_status(h, "supernet", {"slo_ms": 1000}), await grpc_code(g, "supernet", {"slo_ms": 1000})]
            return out, dict(engine.stats.requests)
    assert asyncio.run(go()) == ([200, grpc.StatusCode.OK], {"ok": 2})
