"""KServe v2 over gRPC: Triton's ``inference.GRPCInferenceService`` (the stubs generated inside
tritonclient.grpc), so tritonclient.grpc and its aio variant talk to the scheduler unchanged."""
from __future__ import annotations

import json
import logging

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .admission import check_input, parse_params
from .api_http import ModelSurface, bytes_raw
from .engine import Engine
from .errors import InvalidInput, ServeError

log = logging.getLogger(__name__)


def _param_value(p) -> object:
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def _input_array(req, index: int) -> np.ndarray | None:
    t = req.inputs[index]
    if len(req.raw_input_contents) > index:
        raw = req.raw_input_contents[index]
        return np.frombuffer(raw, dtype="<f4") if t.datatype == "FP32" and len(raw) % 4 == 0 else None
    if t.contents.fp32_contents:
        return np.asarray(t.contents.fp32_contents, dtype=np.float32)
    return None


class GrpcFrontend(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, engine: Engine, model: ModelSurface, metadata_pb, config_pb):
        self.engine, self.model = engine, model
        self._metadata, self._config = metadata_pb, config_pb

    async def _abort(self, context, e: ServeError):
        await context.abort(getattr(grpc.StatusCode, e.grpc_code), str(e))

    def _ready(self) -> bool:
        return any(w.healthy for w in self.engine.workers)

    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self._ready())

    async def _check_model(self, request, context) -> None:
        try:
            self.model.check(request.name, request.version)
        except ServeError as e:
            await self._abort(context, e)

    async def ModelReady(self, request, context):
        await self._check_model(request, context)
        return service_pb2.ModelReadyResponse(ready=self._ready())

    async def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(
            name="superserve", version="0.1.0", extensions=["binary_tensor_data", "parameters", "model_configuration"])

    async def ModelMetadata(self, request, context):
        await self._check_model(request, context)
        return self._metadata

    async def ModelConfig(self, request, context):
        await self._check_model(request, context)
        return self._config

    async def ModelInfer(self, request, context):
        try:
            self.model.check(request.model_name, request.model_version)
            raw = {k: _param_value(v) for k, v in request.parameters.items()}
            if any(k.startswith("sequence_") for k in raw):
                raise InvalidInput("sequence parameters are not supported: the supernet is stateless")
            params = parse_params(raw, self.engine.cfg.default_slo_ms, self.engine.cfg.max_slo_ms)
            if len(request.inputs) != 1:
                raise InvalidInput("request must have exactly one input, 'INPUT'")
            t = request.inputs[0]
            image = check_input(t.name, t.datatype, list(t.shape), _input_array(request, 0), self.model.max_rows)
            answer = await self.engine.infer(image, params)
        except ServeError as e:
            self.engine.record_rejection(e)
            await self._abort(context, e)
            return
        rows = len(answer.logits)
        wanted = [o.name for o in request.outputs] or ["LOGITS", "INFO"]
        resp = service_pb2.ModelInferResponse(model_name=self.model.name, model_version="1", id=request.id)
        for name in wanted:
            if name == "LOGITS":
                resp.outputs.add(name=name, datatype="FP32", shape=[rows, answer.logits.shape[1]])
                resp.raw_output_contents.append(answer.logits.astype("<f4").tobytes())
            elif name == "INFO":
                info = np.array([json.dumps(i).encode() for i in answer.infos], dtype=np.object_)
                resp.outputs.add(name=name, datatype="BYTES", shape=[rows, 1])
                resp.raw_output_contents.append(bytes_raw(info))
            else:
                await self._abort(context, InvalidInput(f"unknown output {name!r}; outputs are LOGITS, INFO"))
        return resp


def add_to_server(server: grpc.aio.Server, frontend: GrpcFrontend) -> None:
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(frontend, server)
