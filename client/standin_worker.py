"""A zero-cost stand-in for a Triton worker: Triton's gRPC service answering every ModelInfer at once
with canned LOGITS and INFO rows (no model). ``superserve serve --worker`` can point at it, so a
benchmark measures the scheduler's own dispatch throughput, not the network's forwards.

``python -m superserve.client.standin_worker --port P`` prints ``standin ready <port>`` once serving.
Responses are built from bytes (no tensors), so the stand-in itself costs as little CPU as gRPC allows.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct

import grpc
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

MODEL, CLASSES = "supernet", 10
_INFO_ROWS: dict[str, bytes] = {}


def info_row(subnet: str) -> bytes:
    """One INFO element naming the requested subnet (the scheduler looks it up in its profile), in the
    backend's form (supernet/serving.py ``info_rows``), so the scheduler takes its usual path with it."""
    if subnet not in _INFO_ROWS:
        info = json.dumps({"subnet": subnet, "accuracy": 0.9, "confidence": 0.9, "margin": 0.5, "queue_ms": None,
                           "infer_ms": 0.0, "batch_size": 1, "escalations": 0, "subnets": [subnet]}).encode()
        _INFO_ROWS[subnet] = struct.pack("<I", len(info)) + info
    return _INFO_ROWS[subnet]


LOGITS_ROW = struct.pack("<10f", *([0.0] * 9 + [1.0]))


class StandIn(service_pb2_grpc.GRPCInferenceServiceServicer):
    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context):
        return service_pb2.ModelReadyResponse(ready=request.name == MODEL)

    async def ModelMetadata(self, request, context):
        r = service_pb2.ModelMetadataResponse(name=MODEL, versions=["1"], platform="python")
        r.inputs.add(name="INPUT", datatype="FP32", shape=[-1, 1, 28, 28])
        r.outputs.add(name="LOGITS", datatype="FP32", shape=[-1, CLASSES])
        r.outputs.add(name="INFO", datatype="BYTES", shape=[-1, 1])
        return r

    async def ModelConfig(self, request, context):
        return service_pb2.ModelConfigResponse(config=model_config_pb2.ModelConfig(name=MODEL, max_batch_size=64))

    async def ModelInfer(self, request, context):
        rows = request.inputs[0].shape[0] if request.inputs and request.inputs[0].shape else 1
        r = service_pb2.ModelInferResponse(model_name=MODEL, model_version="1", id=request.id)
        r.outputs.add(name="LOGITS", datatype="FP32", shape=[rows, CLASSES])
        r.outputs.add(name="INFO", datatype="BYTES", shape=[rows, 1])
        subnet = request.parameters["subnet"].string_param if "subnet" in request.parameters else "standin"
        r.raw_output_contents.extend([LOGITS_ROW * rows, info_row(subnet) * rows])
        return r


async def serve_until_signalled(server: grpc.aio.Server, address: str, ready: str) -> None:
    """Bind ``server`` to ``address``, start it, print ``<ready> <port>`` (what the bench waits for), serve until
    SIGINT or SIGTERM, then stop (the stand-in's and the proxy's process body, client/grpc_proxy.py)."""
    port = server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print(f"{ready} {port}", flush=True)
    await stop.wait()
    await server.stop(0)


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(StandIn(), server)
    await serve_until_signalled(server, f"{host}:{port}", "standin ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
