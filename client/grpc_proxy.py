"""The floor of any Python gRPC sidecar: a proxy that forwards each ModelInfer's bytes to one upstream Triton and
its answer back, with no decoding, scheduling or batching (one upstream call per request).

``superserve bench-overhead`` runs it beside the sidecar on the same stream: the sidecar's CPU per request minus
the proxy's is what the scheduler's own Python costs; the proxy's is what grpc.aio's server and client cost on
this machine whatever the sidecar does (docs/data-path.md).

``python -m superserve.client.grpc_proxy --port P --upstream HOST:PORT`` prints ``proxy ready <port>`` once serving.
"""
from __future__ import annotations

import argparse
import asyncio

import grpc

from superserve.client.standin_worker import serve_until_signalled

SERVICE = "inference.GRPCInferenceService"


async def serve(host: str, port: int, upstream: str) -> None:
    channel = grpc.aio.insecure_channel(upstream)
    infer = channel.unary_unary(f"/{SERVICE}/ModelInfer")  # bytes in, bytes out

    async def model_infer(request: bytes, context) -> bytes:
        return await infer(request, timeout=30)

    handler = grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(
        model_infer)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    await serve_until_signalled(server, f"{host}:{port}", "proxy ready")
    await channel.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="host:port of Triton's gRPC")
    a = ap.parse_args()
    asyncio.run(serve(a.host, a.port, a.upstream))


if __name__ == "__main__":
    main()
