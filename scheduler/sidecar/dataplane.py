"""The KServe v2 data plane, protocol-neutral: what an inference request means, written once.

The HTTP codec (api_http.py) and the gRPC codec (api_grpc.py) only turn wire data into an
``InferRequest`` and an ``InferResponse`` back into wire data (KServe's ``DataPlane`` under its REST
and gRPC servicers is the model). Here, once for both: the model check, Triton's reserved
parameters (triton_params.py), the project's parameters (admission.py), the input checks, the
engine call, rejection counting, LOGITS/INFO assembly, and counting (and rate-limited logging) of
unexpected exceptions, so a bug costs a 500 and a metric, never a log line per request.
"""
from __future__ import annotations

import json
import logging
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..core.admission import DEFAULT_INPUT, InputSpec, check_input, parse_params, within_deadline
from ..core.errors import InvalidInput, ModelNotFound, ServeError
from ..core.triton_params import split_reserved
from .engine import Answer, Engine

log = logging.getLogger(__name__)
OUTPUTS = ("LOGITS", "INFO")
SERVER_METADATA = {"name": "superserve", "version": "0.1.0",
                   "extensions": ["binary_tensor_data", "parameters", "model_configuration"]}
_U32 = struct.Struct("<I")


class ModelSurface:
    """What the scheduler says about one served model: Triton's own metadata and config, forwarded, and the
    input it accepts (its family's spec). ``metadata_pb``/``config_pb``: the same as gRPC messages."""

    def __init__(self, name: str, metadata: dict, config: dict, max_rows: int, input: InputSpec = DEFAULT_INPUT,
                 metadata_pb: Any = None, config_pb: Any = None):
        self.name, self.metadata, self.config, self.max_rows = name, metadata, config, max_rows
        self.input, self.metadata_pb, self.config_pb = input, metadata_pb, config_pb


class ModelCatalog:
    """The models a scheduler serves, by name (the first one is the default of the life cycle)."""

    def __init__(self, models: "ModelSurface | Sequence[ModelSurface]"):
        models = [models] if isinstance(models, ModelSurface) else list(models)
        self.by_name = {m.name: m for m in models}

    def get(self, name: str, version: str | None = None) -> ModelSurface:
        """The model ``name`` (version 1 or none), or ModelNotFound naming the models served."""
        m = self.by_name.get(name)
        if m is None or version not in (None, "", "1"):
            raise ModelNotFound(f"unknown model {name!r}" + (f" version {version!r}" if version else "")
                                + f"; this server serves {', '.join(repr(n) for n in self.by_name)}")
        return m


@dataclass
class InputTensor:
    name: Any
    datatype: Any
    shape: list[int]
    """Already checked to be a list of non-negative ints by the codec."""
    values: np.ndarray | None
    """The elements, flat (FP32 from raw bytes, or converted from JSON / typed protobuf contents);
    None when the wire form cannot be FP32 (check_input then names what is wrong)."""


@dataclass
class InferRequest:
    model: str
    version: str | None
    inputs: list[InputTensor]
    parameters: dict = field(default_factory=dict)
    """Raw request parameters, name -> Python value (codec-decoded, not yet checked)."""
    outputs: list[str] | None = None
    """Requested outputs in order (checked against OUTPUTS by the codec or ``check_outputs``); None: all."""
    id: str = ""
    protocol: str = "http"
    """"http" or "grpc": Triton's reserved-parameter rules differ slightly between the two."""
    deadline_ms: float | None = None
    """The client's gRPC deadline on the scheduler's clock, if it set one (gRPC counts it from when its own
    threads read the call, before the front end had it)."""


@dataclass
class InferResponse:
    model: str
    id: str
    rows: int
    classes: int
    tensors: list[tuple[str, str, list[int], bytes]]
    """(name, datatype, shape, raw little-endian bytes; BYTES tensors length-prefixed per element)."""
    version: str = "1"


def bytes_tensor(items: list[bytes]) -> bytes:
    """A BYTES tensor's raw wire form: a 4-byte little-endian length, then the bytes, per element."""
    return b"".join(_U32.pack(len(b)) + b for b in items)


def check_outputs(names: list[str] | None) -> list[str]:
    """The outputs to send, in the model's order whatever the request's order (as Triton answers)."""
    if names is None:
        return list(OUTPUTS)
    for n in names:
        if n not in OUTPUTS:
            raise InvalidInput(f"unknown output {n!r}; outputs are {list(OUTPUTS)}")
    return [n for n in OUTPUTS if n in names]


class DataPlane:
    """Inference and metadata for both protocols (engine + model surface)."""

    LOG_EVERY_S = 10.0
    """Unexpected exceptions are logged with a traceback at most once per this many seconds."""

    def __init__(self, engine: Engine, models: ModelSurface | Sequence[ModelSurface] | ModelCatalog):
        self.engine = engine
        self.models = models if isinstance(models, ModelCatalog) else ModelCatalog(models)
        self._last_log = -1e9
        self._suppressed = 0

    def ready(self) -> bool:
        return self.engine.ready()

    def check_model(self, name: str, version: str | None) -> ModelSurface:
        return self.models.get(name, version)

    async def infer(self, req: InferRequest) -> InferResponse:
        """Answer ``req`` or raise a ServeError (counted once, whoever raised it)."""
        model = None
        decoded_ms = self.engine.clock.now_ms()
        try:
            model = self.models.get(req.model, req.version)
            wanted = check_outputs(req.outputs)
            cfg = self.engine.cfg
            params = within_deadline(parse_params(split_reserved(req.parameters, req.protocol), cfg.default_slo_ms,
                                                  cfg.max_slo_ms), req.deadline_ms, decoded_ms)
            if len(req.inputs) != 1:
                raise InvalidInput(f"request must have exactly one input, 'INPUT'; got {len(req.inputs)}")
            t = req.inputs[0]
            several = len(self.models.by_name) > 1
            image = check_input(t.name, t.datatype, t.shape, t.values, model.max_rows, model.input,
                                model.name if several else None)
            answer = await self.engine.infer(image, params, model.name if several else None)
            resp = self._response(req, wanted, answer, model)
            encoded_ms = self.engine.clock.now_ms()
            self.engine.observe_reply(encoded_ms - answer.done_ms)
            if self.engine.request_log is not None:
                row = {"id": req.id, "protocol": req.protocol, "decoded": round(decoded_ms, 3),
                       "answered": round(answer.done_ms, 3), "encoded": round(encoded_ms, 3)}
                if req.deadline_ms is not None:
                    row["deadline"] = round(req.deadline_ms, 3)
                self.engine.request_log.write(json.dumps(row) + "\n")
            return resp
        except ServeError as e:
            self.engine.record_rejection(e, None if model is None else model.name)
            raise

    def _response(self, req: InferRequest, wanted: list[str], answer: Answer, model: ModelSurface) -> InferResponse:
        rows, classes = answer.logits.shape
        tensors = []
        for name in wanted:
            if name == "LOGITS":
                tensors.append((name, "FP32", [rows, classes], answer.logits.astype("<f4", copy=False).tobytes()))
            else:
                tensors.append((name, "BYTES", [rows, 1], bytes_tensor(answer.info_bytes())))
        return InferResponse(model.name, req.id, rows, classes, tensors)

    def unexpected(self, e: BaseException, where: str) -> ServeError:
        """A bug (not a client mistake): count it, log it at most every LOG_EVERY_S, answer 500."""
        stats = self.engine.stats
        stats.unexpected_errors += 1
        stats.requests["error"] += 1
        now = time.monotonic()
        if now - self._last_log >= self.LOG_EVERY_S:
            log.error("unexpected %s in %s (%d more since the last report; counted in "
                      "sched_unexpected_errors_total)", type(e).__name__, where, self._suppressed, exc_info=e)
            self._last_log, self._suppressed = now, 0
        else:
            self._suppressed += 1
        err = ServeError(f"internal error ({type(e).__name__}) in {where}")
        err.counted = True
        return err
