"""Malformed and fuzzed KServe v2 requests for the sidecar (issue 12, item 2): the explicit cases, the seeded
generators, and a keep-alive HTTP client that sends raw bodies. Shared by the malformed-request tests
(tests/integration/test_malformed.py, a few thousand cases under hypothesis) and ``superserve bench-fuzz``
(client/fuzz_bench.py, 10,000 and more), so the bench fuzzes exactly what the suite does.

Generators are hypothesis strategies: the test draws from them under ``@given`` (shrinking a failure to its
smallest case), the bench through ``draw`` (a fixed number of cases from a seed)."""
from __future__ import annotations

import http.client
import json

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from superserve.client import prometheus_text

X = np.random.default_rng(5).random((1, 1, 28, 28), dtype=np.float32)
"""One valid image (pixels in [0, 1])."""
INPUT = {"name": "INPUT", "datatype": "FP32", "shape": [1, 1, 28, 28]}
INFER = "/v2/models/supernet/infer"
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


def good_body() -> dict:
    """A valid JSON inference request (HTTP)."""
    return {"inputs": [dict(INPUT, data=X.ravel().tolist())], "parameters": {"slo_ms": 1000}}


def good_grpc_request() -> bytes:
    """A valid serialized ModelInferRequest."""
    req = service_pb2.ModelInferRequest(model_name="supernet")
    req.inputs.add(name="INPUT", datatype="FP32", shape=[1, 1, 28, 28])
    req.raw_input_contents.append(X.tobytes())
    req.parameters["slo_ms"].double_param = 1000
    return req.SerializeToString()


def set_param(p, v) -> None:
    """Set a gRPC ``InferParameter`` from a Python value, choosing the field as tritonclient does."""
    if isinstance(v, bool):
        p.bool_param = v
    elif isinstance(v, int):
        p.int64_param = v
    elif isinstance(v, float):
        p.double_param = v
    else:
        p.string_param = v


def scrape(http_url: str) -> dict[str, float]:
    """Every sample of the sidecar's /metrics, ``{'name{labels}': value}``."""
    return prometheus_text.scrape(http_url, timeout_s=30)


class Http:
    """One keep-alive connection (as a real client); reconnects if the server closed it."""

    def __init__(self, url: str):
        self.host, self.port = url.split(":")
        self.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)

    def post(self, body: bytes, headers: dict | None = None, path: str = INFER) -> tuple[int, bytes]:
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def body_with(**changes) -> bytes:
    """A good body with fields replaced (``input_<field>`` for the first input's)."""
    b = good_body()
    for k, v in changes.items():
        if k.startswith("input_"):
            b["inputs"][0][k[6:]] = v
        else:
            b[k] = v
    return json.dumps(b).encode()


DEEP = 1500
HTTP_CASES = {  # name: (body, extra headers, text the error must contain)
    "parameters-list": (body_with(parameters=[1, 2]), {}, "'parameters'"),
    "parameters-string": (body_with(parameters="slo_ms=5"), {}, "'parameters'"),
    "input-parameters-list": (body_with(input_parameters=["binary_data_size"]), {}, "'parameters'"),
    "outputs-object": (body_with(outputs={"name": "LOGITS"}), {}, "'outputs'"),
    "outputs-strings": (body_with(outputs=["LOGITS"]), {}, "outputs[0]"),
    "outputs-no-name": (body_with(outputs=[{"parameters": {}}]), {}, "outputs[0]"),
    "output-parameters-list": (body_with(outputs=[{"name": "LOGITS", "parameters": [1]}]), {}, "'parameters'"),
    "shape-floats": (body_with(input_shape=[1, 1, 28.0, 28]), {}, "shape"),
    "shape-strings": (body_with(input_shape=["1", "1", "28", "28"]), {}, "shape"),
    "shape-bools": (body_with(input_shape=[True, True, 28, 28]), {}, "shape"),
    "shape-not-list": (body_with(input_shape=784), {}, "shape"),
    "int-too-big-for-float": (body_with(input_data=[10 ** 400] + [0.5] * 783), {}, "data"),
    "data-ragged": (body_with(input_data=[[0.5, 0.5], [0.5]]), {}, "data"),
    "binary-size-negative": (body_with(input_parameters={"binary_data_size": -4}), {}, "binary_data_size"),
    "id-number": (body_with(id=5), {}, "'id'"),
    "inputs-object": (body_with(inputs={"name": "INPUT"}), {}, "'inputs'"),
    "input-not-object": (body_with(inputs=[[1, 2]]), {}, "inputs[0]"),
    "body-deeply-nested": (b"[" * DEEP + b"]" * DEEP, {}, "nested"),
    "data-deeply-nested": (body_with(input_data=0).replace(b'"data": 0', b'"data": ' + b"[" * DEEP + b"]" * DEEP),
                           {}, "nested"),
    "body-not-object": (b"[1, 2, 3]", {}, "JSON object"),
    "not-json": (b"\x00\xff garbage", {}, "malformed"),
    "header-length-not-int": (json.dumps(good_body()).encode(), {"Inference-Header-Content-Length": "ten"},
                              "Inference-Header-Content-Length"),
    "header-length-too-big": (json.dumps(good_body()).encode(), {"Inference-Header-Content-Length": "99999999"},
                              "Inference-Header-Content-Length"),
    "gzip-lie": (json.dumps(good_body()).encode(), {"Content-Encoding": "gzip"}, "Content-Encoding"),
    "deflate-lie": (json.dumps(good_body()).encode(), {"Content-Encoding": "deflate"}, "Content-Encoding"),
    "br-lie": (json.dumps(good_body()).encode(), {"Content-Encoding": "br"}, "Content-Encoding"),
}

GRPC_JUNK = [b"\xff\xff\xff\xff", b"\x0a\x80", b"\x12\x05ab", bytes(range(256)), b"\x08" * 64]
"""Bytes that may not parse as a ModelInferRequest (the test keeps those that do not)."""

# -- the generators ---------------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats()
                    | st.text(max_size=6), lambda c: st.lists(c, max_size=4)
                    | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=10)
FIELDS = ["inputs", "parameters", "outputs", "id", "input_shape", "input_data", "input_datatype",
          "input_parameters", "input_name", "slo_ms", "min_accuracy", "subnet", "priority", "sequence_id",
          "timeout", "triton_x", "binary_data_output"]


@st.composite
def http_requests(draw) -> tuple[bytes, dict]:
    """(body, headers) of a fuzzed HTTP inference request: a good body with 1-3 fields replaced by arbitrary
    JSON, any JSON, raw bytes, or the binary tensor extension with a fuzzed size and header length."""
    kind = draw(st.sampled_from(["field", "field", "field", "any-json", "bytes", "binary"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64)), {}
    if kind == "any-json":
        return json.dumps(draw(JSON)).encode(), {}
    if kind == "binary":
        size = draw(st.integers(-8, 4000))
        head = json.dumps({"inputs": [dict(INPUT, parameters={"binary_data_size": size})]}).encode()
        hlen = draw(st.one_of(st.just(len(head)), st.integers(-5, len(head) + 100)))
        return head + draw(st.binary(max_size=64)) + X.tobytes()[:max(size, 0)], \
            {"Inference-Header-Content-Length": str(hlen)}
    b = good_body()
    fields = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True))
    for field in sorted(fields, key=lambda f: f in ("inputs", "parameters", "outputs", "id")):  # nested first
        value = draw(JSON)
        if field.startswith("input_"):
            b["inputs"][0][field[6:]] = value
        elif field in ("inputs", "parameters", "outputs", "id"):
            b[field] = value
        else:
            b["parameters"][field] = value
    return json.dumps(b).encode(), {}


@st.composite
def grpc_requests(draw) -> bytes:
    """A serialized gRPC ModelInfer message: raw bytes, or a ModelInferRequest with fuzzed model, inputs
    (shapes, datatypes, raw or typed contents), parameters (Triton's reserved names, ours, unknown ones) and
    outputs."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=96))
    req = service_pb2.ModelInferRequest(model_name=draw(st.sampled_from(["supernet", "", "x"])),
                                        model_version=draw(st.sampled_from(["", "1", "7"])),
                                        id=draw(st.text(max_size=4)))
    for _ in range(draw(st.integers(0, 2))):
        t = req.inputs.add(name=draw(st.sampled_from(["INPUT", "IN"])),
                           datatype=draw(st.sampled_from(["FP32", "FP64", "BYTES", ""])),
                           shape=draw(st.lists(st.integers(-2, 64), max_size=5)))
        if draw(st.booleans()):
            req.raw_input_contents.append(X.tobytes()[:draw(st.integers(0, X.nbytes))])
        else:
            t.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=8)))
    for name in draw(st.lists(st.sampled_from(["slo_ms", "subnet", "priority", "timeout", "sequence_id",
                                               "sequence_start", "triton_enable_empty_final_response", "bad"]),
                              max_size=3, unique=True)):
        v = draw(st.one_of(st.booleans(), st.integers(-2 ** 63, 2 ** 63 - 1), st.floats(), st.text(max_size=5)))
        set_param(req.parameters[name], v)
    for name in draw(st.lists(st.sampled_from(["LOGITS", "INFO", "X"]), max_size=2)):
        req.outputs.add(name=name)
    return req.SerializeToString()


def each(strategy, n: int, seed_value: int, fn) -> None:
    """Call ``fn(case)`` on ``n`` cases of ``strategy``, the same ones for the same seed (and hypothesis
    version), as they are drawn; hypothesis's generation phase only (no shrinking, no example database)."""

    @seed(seed_value)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def call(case):
        fn(case)

    call()
