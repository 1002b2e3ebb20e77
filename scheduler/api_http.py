"""KServe v2 over HTTP (aiohttp), including the binary tensor extension tritonclient.http uses by
default. Parses and validates at the edge, calls the engine, maps typed errors to status codes."""
from __future__ import annotations

import json
import logging

import numpy as np
from aiohttp import web
from tritonclient.utils import serialize_byte_tensor

from .admission import check_input, parse_params
from .engine import Engine
from .errors import InvalidInput, ModelNotFound, ServeError
from .metrics import render

log = logging.getLogger(__name__)
HEADER_LEN = "Inference-Header-Content-Length"
PROTOCOL_PARAMS = ("binary_data_output",)


class ModelSurface:
    """What the scheduler says about its one model: Triton's own metadata and config, forwarded."""

    def __init__(self, name: str, metadata: dict, config: dict, max_rows: int):
        self.name, self.metadata, self.config, self.max_rows = name, metadata, config, max_rows

    def check(self, name: str, version: str | None = None) -> None:
        if name != self.name or version not in (None, "", "1"):
            raise ModelNotFound(f"unknown model {name!r}" + (f" version {version!r}" if version else "")
                                + f"; this server serves {self.name!r}")


def bytes_raw(arr: np.ndarray) -> bytes:
    """A BYTES tensor in the wire format (4-byte little-endian length, then the bytes, per element)."""
    packed = serialize_byte_tensor(arr)
    return packed.item() if packed.size else b""


def _error(e: ServeError) -> web.Response:
    return web.json_response({"error": str(e)}, status=e.http_status)


def _parse_body(body: bytes, header_len: str | None) -> tuple[dict, bytes]:
    try:
        n = int(header_len) if header_len is not None else len(body)
        if not 0 < n <= len(body):
            raise ValueError(f"{HEADER_LEN} {n} outside the body's {len(body)} bytes")
        return json.loads(body[:n]), body[n:]
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"malformed request body: {e}") from None


def _input_array(spec: dict, binary: bytes, offset: int) -> tuple[np.ndarray | None, int]:
    size = (spec.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if offset + int(size) > len(binary):
            raise InvalidInput(f"input {spec.get('name')!r}: binary_data_size {size} exceeds the body")
        raw = binary[offset:offset + int(size)]
        if spec.get("datatype") != "FP32" or len(raw) % 4:
            return None, offset + int(size)
        return np.frombuffer(raw, dtype="<f4"), offset + int(size)
    if "data" not in spec:
        raise InvalidInput(f"input {spec.get('name')!r} has neither 'data' nor binary_data_size")
    try:
        return np.asarray(spec["data"], dtype=np.float32).ravel(), offset
    except (TypeError, ValueError):
        raise InvalidInput(f"input {spec.get('name')!r}: 'data' is not a list of numbers") from None


class HttpFrontend:
    def __init__(self, engine: Engine, model: ModelSurface):
        self.engine, self.model = engine, model
        self.app = web.Application(client_max_size=64 << 20)
        r = self.app.router
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.ready)
        r.add_get("/v2", self.server_metadata)
        r.add_get("/metrics", self.metrics)
        for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            r.add_get(base, self.model_metadata)
            r.add_get(base + "/ready", self.model_ready)
            r.add_get(base + "/config", self.model_config)
            r.add_post(base + "/infer", self.infer)

    def _ready(self) -> bool:
        return any(w.healthy for w in self.engine.workers)

    async def live(self, request):
        return web.Response(status=200)

    async def ready(self, request):
        return web.Response(status=200 if self._ready() else 503)

    async def server_metadata(self, request):
        return web.json_response({"name": "superserve", "version": "0.1.0",
                                  "extensions": ["binary_tensor_data", "parameters", "model_configuration"]})

    async def metrics(self, request):
        return web.Response(text=render(self.engine.stats), content_type="text/plain", charset="utf-8")

    def _model_error(self, request) -> web.Response | None:
        try:
            self.model.check(request.match_info["model"], request.match_info.get("version"))
        except ServeError as e:
            return _error(e)
        return None

    async def model_metadata(self, request):
        return self._model_error(request) or web.json_response(self.model.metadata)

    async def model_ready(self, request):
        return self._model_error(request) or web.Response(status=200 if self._ready() else 503)

    async def model_config(self, request):
        return self._model_error(request) or web.json_response(self.model.config)

    async def infer(self, request):
        try:
            self.model.check(request.match_info["model"], request.match_info.get("version"))
            header, binary = _parse_body(await request.read(), request.headers.get(HEADER_LEN))
            if not isinstance(header, dict):
                raise InvalidInput("request body must be a JSON object")
            params = dict(header.get("parameters") or {})
            binary_default = bool(params.pop("binary_data_output", False))
            if any(k.startswith("sequence_") for k in params):
                raise InvalidInput("sequence parameters are not supported: the supernet is stateless")
            params = parse_params(params, self.engine.cfg.default_slo_ms, self.engine.cfg.max_slo_ms)
            inputs = header.get("inputs")
            if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
                raise InvalidInput("request must have exactly one input, 'INPUT'")
            spec = inputs[0]
            array, _ = _input_array(spec, binary, 0)
            image = check_input(spec.get("name"), spec.get("datatype"), spec.get("shape") or [], array,
                                self.model.max_rows)
            answer = await self.engine.infer(image, params)
        except ServeError as e:
            self.engine.record_rejection(e)
            return _error(e)
        return self._response(header, binary_default, answer)

    def _response(self, header: dict, binary_default: bool, answer) -> web.Response:
        rows = len(answer.logits)
        tensors = {"LOGITS": ("FP32", [rows, answer.logits.shape[1]], answer.logits.astype("<f4")),
                   "INFO": ("BYTES", [rows, 1], np.array([json.dumps(i).encode() for i in answer.infos],
                                                          dtype=np.object_).reshape(rows, 1))}
        wanted = header.get("outputs") or [{"name": n} for n in tensors]
        outs, blobs = [], []
        for w in wanted:
            name = w.get("name")
            if name not in tensors:
                return _error(InvalidInput(f"unknown output {name!r}; outputs are {list(tensors)}"))
            dtype, shape, arr = tensors[name]
            as_binary = (w.get("parameters") or {}).get("binary_data", binary_default)
            out = {"name": name, "datatype": dtype, "shape": shape}
            if as_binary:
                raw = bytes_raw(arr) if dtype == "BYTES" else arr.tobytes()
                out["parameters"] = {"binary_data_size": len(raw)}
                blobs.append(raw)
            else:
                out["data"] = ([v.decode() for v in arr.ravel()] if dtype == "BYTES" else arr.ravel().tolist())
            outs.append(out)
        body = {"model_name": self.model.name, "model_version": "1", "outputs": outs}
        if "id" in header:
            body["id"] = header["id"]
        if not blobs:
            return web.json_response(body)
        head = json.dumps(body).encode()
        return web.Response(body=head + b"".join(blobs), content_type="application/octet-stream",
                            headers={HEADER_LEN: str(len(head))})


__all__ = ["HttpFrontend", "ModelSurface"]
