"""KServe v2 over gRPC: Triton's ``inference.GRPCInferenceService`` (the stubs generated inside
tritonclient.grpc), so tritonclient.grpc and its aio variant talk to the scheduler unchanged.

A thin codec over dataplane.py. The handlers are registered with a request deserializer that
never raises: an undecodable protobuf reaches the handler as ``Undecodable`` and is answered
INVALID_ARGUMENT naming the decode error (gRPC's own deserializer failure would be a bare
INTERNAL/UNKNOWN, and Triton answers INTERNAL "Unable to parse request"; it is the client's mistake)."""
from __future__ import annotations

import logging

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

from ..core.errors import InvalidInput, ServeError
from .dataplane import SERVER_METADATA, DataPlane, InferRequest, InputTensor, ModelCatalog, ModelSurface
from .engine import Engine

log = logging.getLogger(__name__)
SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]


class Undecodable:
    """A request body that did not parse as the method's protobuf message."""

    def __init__(self, error: Exception):
        self.error = error


def _lenient(message_cls):
    def parse(data: bytes):
        try:
            return message_cls.FromString(data)
        except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and, for some inputs, others
            return Undecodable(e)
    return parse


def _param_value(p) -> object:
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def _values(req, index: int) -> np.ndarray | None:
    t = req.inputs[index]
    if len(req.raw_input_contents) > index:
        raw = req.raw_input_contents[index]
        return np.frombuffer(raw, dtype="<f4") if t.datatype == "FP32" and len(raw) % 4 == 0 else None
    if t.contents.fp32_contents:
        return np.asarray(t.contents.fp32_contents, dtype=np.float32)
    return None


def decode(req) -> InferRequest:
    if req.raw_input_contents and len(req.raw_input_contents) != len(req.inputs):
        raise InvalidInput(f"raw_input_contents holds {len(req.raw_input_contents)} tensors for "
                           f"{len(req.inputs)} inputs")
    inputs = [InputTensor(t.name, t.datatype, list(t.shape), _values(req, i)) for i, t in enumerate(req.inputs)]
    params = {k: _param_value(v) for k, v in req.parameters.items()}
    outputs = [o.name for o in req.outputs] or None
    return InferRequest(req.model_name, req.model_version, inputs, params, outputs, req.id, "grpc")


def encode(resp) -> service_pb2.ModelInferResponse:
    out = service_pb2.ModelInferResponse(model_name=resp.model, model_version=resp.version, id=resp.id)
    for name, dtype, shape, raw in resp.tensors:
        out.outputs.add(name=name, datatype=dtype, shape=shape)
        out.raw_output_contents.append(raw)
    return out


class GrpcFrontend:
    """The servicer: each method a coroutine (request, context)."""

    def __init__(self, engine: Engine, models: ModelSurface | list[ModelSurface], metadata_pb=None, config_pb=None):
        """``models``: each with its ``metadata_pb``/``config_pb``; for one model they may be given here."""
        self.engine = engine
        if isinstance(models, ModelSurface) and metadata_pb is not None:
            models.metadata_pb, models.config_pb = metadata_pb, config_pb
        self.plane = DataPlane(engine, ModelCatalog(models))

    async def _abort(self, context, e: ServeError):
        await context.abort(getattr(grpc.StatusCode, e.grpc_code), str(e))

    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self.plane.ready())

    async def _check_model(self, request, context) -> ModelSurface:
        try:
            return self.plane.check_model(request.name, request.version)
        except ServeError as e:
            await self._abort(context, e)
            raise  # abort raises; never reached

    async def ModelReady(self, request, context):
        await self._check_model(request, context)
        return service_pb2.ModelReadyResponse(ready=self.plane.ready())

    async def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(**SERVER_METADATA)

    async def ModelMetadata(self, request, context):
        return (await self._check_model(request, context)).metadata_pb

    async def ModelConfig(self, request, context):
        return (await self._check_model(request, context)).config_pb

    async def ModelInfer(self, request, context):
        try:
            try:
                req = decode(request)
            except ServeError as e:
                self.engine.record_rejection(e)
                raise
            left_s = context.time_remaining()  # None unless the client set a deadline
            if left_s is not None:
                req.deadline_ms = self.engine.clock.now_ms() + left_s * 1000
            return encode(await self.plane.infer(req))
        except ServeError as e:
            await self._abort(context, e)
        except Exception as e:  # noqa: BLE001 - counted and logged (rate-limited) by the data plane
            await self._abort(context, self.plane.unexpected(e, "gRPC ModelInfer"))


def _guard(method, engine: Engine):
    async def handler(request, context):
        if isinstance(request, Undecodable):
            e = InvalidInput(f"request is not a valid protobuf message: {type(request.error).__name__}: "
                             f"{request.error}")
            engine.record_rejection(e)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return await method(request, context)
    return handler


def add_to_server(server: grpc.aio.Server, frontend: GrpcFrontend) -> None:
    """Register the unary methods the frontend implements; the others answer UNIMPLEMENTED."""
    handlers = {}
    for m in SERVICE.methods:
        impl = getattr(type(frontend), m.name, None)
        if impl is None or m.client_streaming or m.server_streaming:
            continue
        request_cls = getattr(service_pb2, m.input_type.name)
        response_cls = getattr(service_pb2, m.output_type.name)
        handlers[m.name] = grpc.unary_unary_rpc_method_handler(
            _guard(getattr(frontend, m.name), frontend.engine),
            request_deserializer=_lenient(request_cls), response_serializer=response_cls.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
