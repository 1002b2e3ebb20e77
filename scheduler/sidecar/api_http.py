"""KServe v2 over HTTP (aiohttp), including the binary tensor extension tritonclient.http uses by
default. A thin codec: it turns the body into a ``dataplane.InferRequest`` (checking the JSON's
shape on the way: every client mistake is a 400 naming the field) and the ``InferResponse`` back
into JSON and binary tensors. What a request means is decided once, in dataplane.py."""
from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from aiohttp import web

from ..core.errors import InvalidInput, ServeError
from .dataplane import SERVER_METADATA, DataPlane, InferRequest, InferResponse, InputTensor, ModelCatalog, ModelSurface
from .engine import Engine
from .metrics import render
from .triton_worker import bytes_elements

log = logging.getLogger(__name__)
HEADER_LEN = "Inference-Header-Content-Length"

__all__ = ["HttpFrontend", "ModelSurface"]


def _error(e: ServeError) -> web.Response:
    return web.json_response({"error": str(e)}, status=e.http_status)


def _parse_body(body: bytes, header_len: str | None) -> tuple[Any, bytes]:
    try:
        n = int(header_len) if header_len is not None else len(body)
    except ValueError:
        raise InvalidInput(f"{HEADER_LEN} must be an integer, got {header_len!r}") from None
    if not 0 < n <= len(body):
        raise InvalidInput(f"{HEADER_LEN} {n} outside the body's {len(body)} bytes" if header_len is not None
                           else "empty request body")
    try:
        return json.loads(body[:n]), body[n:]
    except RecursionError:
        raise InvalidInput("malformed request body: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"malformed request body: {e}") from None


def _object(value: Any, what: str) -> dict:
    """``parameters`` and friends: absent (None) or a JSON object."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _input(spec: Any, k: int, binary: bytes, offset: int) -> tuple[InputTensor, int]:
    if not isinstance(spec, dict):
        raise InvalidInput(f"inputs[{k}] must be a JSON object, got {type(spec).__name__}")
    name = spec.get("name")
    shape = spec.get("shape")
    if not isinstance(shape, list):
        raise InvalidInput(f"input {name!r}: 'shape' must be a list of integers, got {shape!r}")
    shape = [_count(s, f"input {name!r}: each 'shape' entry") for s in shape]
    params = _object(spec.get("parameters"), f"input {name!r}: 'parameters'")
    size = params.get("binary_data_size")
    if size is not None:
        size = _count(size, f"input {name!r}: 'binary_data_size'")
        if offset + size > len(binary):
            raise InvalidInput(f"input {name!r}: binary_data_size {size} exceeds the {len(binary) - offset} "
                               "bytes left in the body")
        raw = binary[offset:offset + size]
        ok = spec.get("datatype") == "FP32" and len(raw) % 4 == 0
        return InputTensor(name, spec.get("datatype"), shape, np.frombuffer(raw, "<f4") if ok else None), offset + size
    if "data" not in spec:
        raise InvalidInput(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    try:
        values = np.asarray(spec["data"], dtype=np.float32).ravel()
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise InvalidInput(f"input {name!r}: 'data' must be a (nested) list of numbers ({e})") from None
    return InputTensor(name, spec.get("datatype"), shape, values), offset


def _outputs(value: Any) -> tuple[list[str] | None, dict[str, bool]]:
    """Requested output names and their explicit ``binary_data`` choices."""
    if value is None:
        return None, {}
    if not isinstance(value, list):
        raise InvalidInput(f"'outputs' must be a list of objects, got {type(value).__name__}")
    names, binary = [], {}
    for k, o in enumerate(value):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise InvalidInput(f"outputs[{k}] must be an object with a string 'name', got {o!r:.80}")
        b = _object(o.get("parameters"), f"output {o['name']!r}: 'parameters'").get("binary_data")
        if b is not None:
            if not isinstance(b, bool):
                raise InvalidInput(f"output {o['name']!r}: 'binary_data' must be a boolean, got {b!r}")
            binary[o["name"]] = b
        names.append(o["name"])
    return names, binary


def decode(header: Any, binary: bytes, model: str, version: str | None) -> tuple[InferRequest, dict, bool]:
    """JSON header + binary tail -> (request, explicit binary choice per output, binary by default)."""
    if not isinstance(header, dict):
        raise InvalidInput(f"request body must be a JSON object, got {type(header).__name__}")
    rid = header.get("id", "")
    if not isinstance(rid, str):
        raise InvalidInput(f"'id' must be a string, got {rid!r}")
    params = _object(header.get("parameters"), "'parameters'")
    inputs = header.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidInput(f"'inputs' must be a list of objects, got {type(inputs).__name__}")
    tensors, offset = [], 0
    for k, spec in enumerate(inputs):
        t, offset = _input(spec, k, binary, offset)
        tensors.append(t)
    names, binary_choice = _outputs(header.get("outputs"))
    req = InferRequest(model, version, tensors, params, names, rid, "http")
    # As Triton does: binary_data_output applies when no outputs are listed; listed outputs are
    # binary only where their own binary_data parameter says so.
    return req, binary_choice, names is None and params.get("binary_data_output") is True


def encode(resp: InferResponse, binary_choice: dict[str, bool], binary_default: bool) -> web.Response:
    outs, blobs = [], []
    for name, dtype, shape, raw in resp.tensors:
        out = {"name": name, "datatype": dtype, "shape": shape}
        if binary_choice.get(name, binary_default):
            out["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        elif dtype == "BYTES":
            out["data"] = [b.decode() for b in bytes_elements(raw)]
        else:
            out["data"] = np.frombuffer(raw, "<f4").tolist()
        outs.append(out)
    body = {"model_name": resp.model, "model_version": resp.version, "outputs": outs}
    if resp.id:
        body["id"] = resp.id
    if not blobs:
        return web.json_response(body)
    head = json.dumps(body).encode()
    return web.Response(body=head + b"".join(blobs), content_type="application/octet-stream",
                        headers={HEADER_LEN: str(len(head))})



class HttpFrontend:
    def __init__(self, engine: Engine, models: ModelSurface | list[ModelSurface]):
        self.engine = engine
        self.plane = DataPlane(engine, ModelCatalog(models))
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

    async def live(self, request):
        return web.Response(status=200)

    async def ready(self, request):
        return web.Response(status=200 if self.plane.ready() else 503)

    async def server_metadata(self, request):
        return web.json_response(SERVER_METADATA)

    async def metrics(self, request):
        return web.Response(text=render(self.engine.stats), content_type="text/plain", charset="utf-8")

    def _model(self, request) -> ModelSurface | web.Response:
        """The served model the URL names, or the 404 answer."""
        try:
            return self.plane.check_model(request.match_info["model"], request.match_info.get("version"))
        except ServeError as e:
            return _error(e)

    async def model_metadata(self, request):
        m = self._model(request)
        return m if isinstance(m, web.Response) else web.json_response(m.metadata)

    async def model_ready(self, request):
        m = self._model(request)
        return m if isinstance(m, web.Response) else web.Response(status=200 if self.plane.ready() else 503)

    async def model_config(self, request):
        m = self._model(request)
        return m if isinstance(m, web.Response) else web.json_response(m.config)

    async def _body(self, request) -> bytes:
        try:
            return await request.read()
        except web.HTTPException:
            raise  # e.g. 413: aiohttp's own answer
        except Exception as e:  # noqa: BLE001 - a body that cannot be read is the client's mistake
            enc = request.headers.get("Content-Encoding")
            raise InvalidInput("request body could not be read" + (f" as Content-Encoding {enc!r}" if enc else "")
                               + f": {type(e).__name__}: {e}") from None

    async def infer(self, request):
        try:
            try:
                self.plane.check_model(request.match_info["model"], request.match_info.get("version"))
                header, binary = _parse_body(await self._body(request), request.headers.get(HEADER_LEN))
                req, binary_choice, binary_default = decode(header, binary, request.match_info["model"],
                                                            request.match_info.get("version"))
            except ServeError as e:
                self.engine.record_rejection(e)
                raise
            return encode(await self.plane.infer(req), binary_choice, binary_default)
        except ServeError as e:
            return _error(e)
        except web.HTTPException:
            raise
        except Exception as e:  # noqa: BLE001 - counted and logged (rate-limited) by the data plane
            return _error(self.plane.unexpected(e, "HTTP infer"))
