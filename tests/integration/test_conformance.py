"""Conformance: the same requests to the real tritonserver and to the real sidecar, answers compared.

A request Triton serves, the sidecar serves with the same outputs (names, datatypes, shapes, id,
version, LOGITS values for the pinned subnet); a request Triton refuses, the sidecar refuses, and
with 400 / INVALID_ARGUMENT where Triton's own answer is a 500 for the client's mistake (issue 14,
item 3). Both protocols: HTTP JSON and binary tensors, gRPC ``contents`` and ``raw_input_contents``,
``binary_data_output``, requested outputs, request ids, model version "" and "1", and every
parameter Triton reserves."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from superserve.scheduler import paths
from superserve.scheduler.sidecar.triton_worker import bytes_elements
from superserve.scheduler.core.profile import Profile
from tests.integration.conftest import set_param

X = np.random.default_rng(3).random((1, 1, 28, 28), dtype=np.float32)
SUBNET = Profile.load(sorted((paths.repo_root() / "profiles").glob("*.json"))[0]).subnets[0].name


def _bytes_elements(raw: bytes) -> list[str]:
    return [b.decode() for b in bytes_elements(raw)]


def _answer(outputs: list[tuple[str, str, list[int], object]], rid: str, version: str) -> dict:
    """A normalised answer: {output name: (datatype, shape, values)}, id and version."""
    norm = {}
    for name, dtype, shape, values in outputs:
        if name == "INFO":
            values = [json.loads(v)["subnet"] for v in values]
        norm[name] = (dtype, list(shape), values)
    return {"ok": True, "outputs": norm, "id": rid, "version": version}


# -- HTTP, raw bodies (full control of JSON vs binary and of parameters) ---------------------------
def http_body(binary_input: bool, params: dict, outputs: list | None, rid: str | None) -> tuple[bytes, dict]:
    inp = {"name": "INPUT", "datatype": "FP32", "shape": [1, 1, 28, 28]}
    tail = b""
    if binary_input:
        inp["parameters"] = {"binary_data_size": X.nbytes}
        tail = X.tobytes()
    else:
        inp["data"] = X.ravel().tolist()
    body = {"inputs": [inp], "parameters": dict(params, subnet=SUBNET)}
    if outputs is not None:
        body["outputs"] = outputs
    if rid is not None:
        body["id"] = rid
    head = json.dumps(body).encode()
    return head + tail, ({"Inference-Header-Content-Length": str(len(head))} if tail else {})


def http_send(url: str, version: str | None, body: bytes, headers: dict) -> dict:
    path = "/v2/models/supernet" + (f"/versions/{version}" if version else "") + "/infer"
    req = urllib.request.Request(f"http://{url}{path}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            data, hlen = r.read(), r.headers.get("Inference-Header-Content-Length")
    except urllib.error.HTTPError as e:
        return {"ok": False, "status": e.code, "message": e.read().decode(errors="replace")}
    n = int(hlen) if hlen else len(data)
    head, blob, outs, off = json.loads(data[:n]), data[n:], [], 0
    for o in head["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw, off = blob[off:off + size], off + size
            values = _bytes_elements(raw) if o["datatype"] == "BYTES" else np.frombuffer(raw, "<f4").tolist()
            kind = "binary"
        else:
            values, kind = o["data"], "json"
        outs.append((o["name"], o["datatype"], o["shape"] + [kind], values))  # the wire form is compared too
    return _answer(outs, head.get("id", ""), head["model_version"])


# -- gRPC, protobuf through the generated stub ------------------------------------------------------
def grpc_request(raw_input: bool, params: dict, outputs: list | None, rid: str, version: str):
    req = service_pb2.ModelInferRequest(model_name="supernet", model_version=version, id=rid)
    t = req.inputs.add(name="INPUT", datatype="FP32", shape=[1, 1, 28, 28])
    if raw_input:
        req.raw_input_contents.append(X.tobytes())
    else:
        t.contents.fp32_contents.extend(X.ravel().tolist())
    for k, v in dict(params, subnet=SUBNET).items():
        set_param(req.parameters[k], v)
    for name in outputs or []:
        req.outputs.add(name=name)
    return req


def grpc_send(url: str, req) -> dict:
    with grpc.insecure_channel(url) as ch:
        try:
            r = service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=30)
        except grpc.RpcError as e:
            return {"ok": False, "status": e.code().name, "message": e.details()}
    outs = []
    for o, raw in zip(r.outputs, r.raw_output_contents):
        values = _bytes_elements(raw) if o.datatype == "BYTES" else np.frombuffer(raw, "<f4").tolist()
        outs.append((o.name, o.datatype, list(o.shape), values))
    return _answer(outs, r.id, r.model_version)


def same(a: dict, b: dict) -> None:
    assert a["ok"] == b["ok"], (a, b)
    if not a["ok"]:
        return
    assert (a["id"], a["version"]) == (b["id"], b["version"])
    assert list(a["outputs"]) == list(b["outputs"])
    for name, (dt, shape, values) in a["outputs"].items():
        dt2, shape2, values2 = b["outputs"][name]
        assert (dt, shape) == (dt2, shape2), name
        if name == "LOGITS":
            np.testing.assert_allclose(values, values2, rtol=1e-4, atol=1e-5)
        else:
            assert values == values2 == [SUBNET]


LOGITS_JSON = {"name": "LOGITS", "parameters": {"binary_data": False}}
HTTP_CASES = {  # name: (binary input, parameters, outputs, id, version in the URL)
    "json-in-json-out": (False, {}, None, None, None),
    "binary-in-json-out": (True, {}, None, None, None),
    "binary_data_output": (True, {"binary_data_output": True}, None, None, None),
    "json-in-binary_data_output": (False, {"binary_data_output": True}, None, "r-7", "1"),
    "only-logits-binary": (True, {}, [{"name": "LOGITS", "parameters": {"binary_data": True}}], None, None),
    "only-info": (False, {}, [{"name": "INFO"}], "abc", None),
    "mixed-outputs": (True, {"binary_data_output": True}, [LOGITS_JSON, {"name": "INFO"}], None, "1"),
    "info-then-logits": (True, {}, [{"name": "INFO", "parameters": {"binary_data": True}}, LOGITS_JSON], None, None),
    "reserved-ok": (True, {"priority": 2, "timeout": 5_000_000, "headers": "x"}, None, None, None),
    "sequence-on-plain-model": (True, {"sequence_id": 42, "sequence_start": True, "sequence_end": True},
                                None, None, None),
    "string-sequence-id": (False, {"sequence_id": "corr-1"}, None, None, None),
    "triton_-over-http": (True, {"triton_enable_empty_final_response": True}, None, None, None),
    "priority-negative": (True, {"priority": -1}, None, None, None),
    "priority-string": (True, {"priority": "1"}, None, None, None),
    "timeout-float": (True, {"timeout": 1.5}, None, None, None),
    "sequence_start-int": (True, {"sequence_start": 1}, None, None, None),
    "binary_data_output-int": (True, {"binary_data_output": 1}, None, None, None),
    "headers-object": (True, {"headers": {"a": "b"}}, None, None, None),
    "unknown-output": (True, {}, [{"name": "PROBS"}], None, None),
    "version-2": (True, {}, None, None, "2"),
}


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_http_matrix_matches_triton(case, triton_plain, sidecar):
    binary_input, params, outputs, rid, version = HTTP_CASES[case]
    body, headers = http_body(binary_input, params, outputs, rid)
    direct = http_send(f"127.0.0.1:{triton_plain.cfg.http_port}", version, body, headers)
    via = http_send(sidecar[0], version, body, headers)
    same(direct, via)
    if not via["ok"]:
        assert via["status"] in (400, 404), via  # never 5xx for the client's mistake (Triton: 500 for some)


GRPC_CASES = {  # name: (raw_input_contents, parameters, outputs, id, version)
    "raw-all": (True, {}, None, "", ""),
    "contents-all": (False, {}, None, "id-1", "1"),
    "only-logits": (True, {}, ["LOGITS"], "x", ""),
    "only-info": (False, {}, ["INFO"], "", "1"),
    "info-then-logits": (True, {}, ["INFO", "LOGITS"], "", ""),
    "reserved-ok": (True, {"priority": 1, "timeout": -5, "binary_data_output": "yes", "headers": 3}, None, "", ""),
    "triton_enable_empty_final_response": (True, {"triton_enable_empty_final_response": True}, None, "", ""),
    "sequence-on-plain-model": (True, {"sequence_id": 7, "sequence_start": True, "sequence_end": False}, None, "", ""),
    "string-sequence-id": (True, {"sequence_id": "corr"}, None, "", ""),
    "triton_-unknown": (True, {"triton_foo": True}, None, "", ""),
    "triton_enable_empty_final_response-string": (True, {"triton_enable_empty_final_response": "x"}, None, "", ""),
    "priority-negative": (True, {"priority": -1}, None, "", ""),
    "timeout-string": (True, {"timeout": "x"}, None, "", ""),
    "sequence_id-float": (True, {"sequence_id": 1.5}, None, "", ""),
    "unknown-output": (True, {}, ["PROBS"], "", ""),
    "version-2": (True, {}, None, "", "2"),
}


@pytest.mark.parametrize("case", list(GRPC_CASES))
def test_grpc_matrix_matches_triton(case, triton_plain, sidecar):
    req = grpc_request(*GRPC_CASES[case])
    direct, via = grpc_send(triton_plain.cfg.grpc_url, req), grpc_send(sidecar[1], req)
    same(direct, via)
    if not via["ok"]:
        assert via["status"] in ("INVALID_ARGUMENT", "NOT_FOUND"), via
        assert via["status"] == direct["status"], (direct, via)


def test_tritonclient_calls_match_triton(triton_plain, sidecar):
    """The standard clients' own knobs (request_id, priority, timeout, sequence, model_version,
    requested outputs) through tritonclient, both protocols."""
    for mod, direct_url, via_url in ((httpclient, f"127.0.0.1:{triton_plain.cfg.http_port}", sidecar[0]),
                                     (grpcclient, triton_plain.cfg.grpc_url, sidecar[1])):
        answers = []
        for url in (direct_url, via_url):
            c = mod.InferenceServerClient(url)
            inp = mod.InferInput("INPUT", [1, 1, 28, 28], "FP32")
            inp.set_data_from_numpy(X)
            kw = dict(parameters={"subnet": SUBNET}, request_id="req-9", model_version="1", priority=1,
                      timeout=10_000_000, sequence_id=5, sequence_start=True)
            r = c.infer("supernet", [inp], outputs=[mod.InferRequestedOutput("LOGITS")], **kw)
            resp = r.get_response()
            rid = resp["id"] if mod is httpclient else resp.id
            assert r.as_numpy("INFO") is None
            answers.append((rid, r.as_numpy("LOGITS")))
        assert answers[0][0] == answers[1][0] == "req-9"
        np.testing.assert_allclose(answers[0][1], answers[1][1], rtol=1e-4, atol=1e-5)


def test_misspelt_project_parameters_are_named(sidecar):
    """Triton passes unknown names to the model; the sidecar refuses them by name, since they are
    usually misspelt project parameters (docs/design.md), over both protocols."""
    h = httpclient.InferenceServerClient(sidecar[0])
    g = grpcclient.InferenceServerClient(sidecar[1])
    for mod, c, want in ((httpclient, h, "400"), (grpcclient, g, "StatusCode.INVALID_ARGUMENT")):
        inp = mod.InferInput("INPUT", [1, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(X)
        for bad in ("slo", "sequence_idx", "min_acuracy"):
            with pytest.raises(InferenceServerException) as e:
                c.infer("supernet", [inp], parameters={bad: 1})
            assert e.value.status() == want and bad in str(e.value)
