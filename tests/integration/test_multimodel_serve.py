"""One sidecar serving the CNN (``supernet``) and the transformer (``vit``) at once (issue 17 item 5):
``superserve serve --models supernet,vit`` with its own real tritonserver, one EDF queue. Through both
protocols: each model answers as its in-process forward on the subnet its INFO names; a loose SLO gets the
model's most accurate subnet, a tight one a subnet of that model that fits it; the errors are the model's
own (unknown model 404 / NOT_FOUND, a wrong shape 400 / INVALID_ARGUMENT naming the model's dims, another
model's subnet or an accuracy floor above the model's best 400); a concurrent mix of both is answered, each
request by its own model, and the metrics count it under its model."""
from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from superserve.client.prometheus_text import scrape
from superserve.scheduler.core.profile import Profile
from superserve.scheduler.sidecar.server import serve_subprocess
from tests.conftest import free_ports
from tests.integration.conftest import models_in_process, profile_file

MODELS = ("supernet", "vit")
MARGIN_MS = 2.0
RNG = np.random.default_rng(5)


@pytest.fixture(scope="module")
def two_model_sidecar(tmp_path_factory):
    """The sidecar and its own Triton (free ports); the latency model off and a small margin, so which subnet
    fits an SLO is decided by the committed profiles alone."""
    tmp = tmp_path_factory.mktemp("multimodel")
    http, grpc = free_ports(2)
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--models", ",".join(MODELS),
            "--triton-http-port", "0", "--triton-grpc-port", "0", "--triton-metrics-port", "0",
            "--triton-log-file", str(tmp / "triton.log"), "--no-adapt-latency", "--margin-ms", str(MARGIN_MS),
            "--profile", ",".join(f"{m}={profile_file(m)}" for m in MODELS)]
    with serve_subprocess(args, str(tmp / "serve.log")) as proc:
        yield f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0, (tmp / "serve.log").read_text()[-3000:]


@pytest.fixture(scope="module")
def in_process():
    return models_in_process(MODELS)


def url(sidecar, protocol):
    return sidecar[0] if protocol == "http" else sidecar[1]


def infer(protocol, address, model, x, **params):
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(address)
    try:
        inp = mod.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        r = client.infer(model, [inp], parameters=params or None)
        return r.get_response()["model_name"] if protocol == "http" else r.get_response().model_name, \
            r.as_numpy("LOGITS"), [json.loads(v) for v in r.as_numpy("INFO").ravel()]
    finally:
        client.close()


def expected(net, subnet, x):
    with torch.inference_mode():
        return net(torch.from_numpy(x), net.space.parse(subnet)).numpy()


def tight_slo(prof: Profile) -> tuple[float, float]:
    """(slo_ms, budget): a budget between the model's fastest and its most accurate subnet at batch 1."""
    fastest = min(s.at(1) for s in prof.subnets)
    best = prof.subnets[-1].at(1)
    assert best > fastest * 1.2, "the profile's most accurate subnet must be clearly slower than its fastest"
    budget = (fastest + best) / 2
    return MARGIN_MS + budget, budget


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_both_models_answer_as_in_process_under_loose_and_tight_slos(two_model_sidecar, in_process, protocol):
    address = url(two_model_sidecar, protocol)
    for m in MODELS:
        net, prof = in_process[m]
        best = prof.subnets[-1]
        x = RNG.random((3, *net.input_spec.dims), dtype=np.float32)
        name, logits, info = infer(protocol, address, m, x, slo_ms=1000)
        assert name == m and [i["subnet"] for i in info] == [best.name] * 3
        np.testing.assert_allclose(logits, expected(net, best.name, x), atol=1e-4, rtol=1e-4)
        slo, budget = tight_slo(prof)
        x1 = RNG.random((1, *net.input_spec.dims), dtype=np.float32)
        name, logits, info = infer(protocol, address, m, x1, slo_ms=slo)
        served = prof.get(info[0]["subnet"])
        assert name == m and served is not None, info  # one of this model's own subnets
        assert served.at(1) <= budget and served.accuracy < best.accuracy, (served, budget)
        np.testing.assert_allclose(logits, expected(net, served.name, x1), atol=1e-4, rtol=1e-4)


def refused(protocol, fn):
    with pytest.raises(InferenceServerException) as e:
        fn()
    return e.value.status(), e.value.message()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_per_model_errors(two_model_sidecar, in_process, protocol):
    address = url(two_model_sidecar, protocol)
    bad_request = "400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT"
    x = RNG.random((1, 1, 28, 28), dtype=np.float32)
    status, msg = refused(protocol, lambda: infer(protocol, address, "resnet", x))
    assert status == ("404" if protocol == "http" else "StatusCode.NOT_FOUND")
    assert "unknown model 'resnet'" in msg and "'supernet', 'vit'" in msg
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(address)
    try:
        with pytest.raises(InferenceServerException, match="unknown model 'resnet'"):
            client.get_model_metadata("resnet")
        for m in MODELS:  # each model's own metadata, under its own name
            md = client.get_model_metadata(m) if protocol == "http" else client.get_model_metadata(m, as_json=True)
            assert md["name"] == m and [int(d) for d in md["inputs"][0]["shape"]] == [-1, 1, 28, 28]
            assert client.is_model_ready(m)
    finally:
        client.close()
    for m in MODELS:
        status, msg = refused(protocol, lambda m=m: infer(protocol, address, m, np.zeros((1, 1, 32, 32), np.float32)))
        assert status == bad_request and f"of model '{m}'" in msg and "[B, 1, 28, 28]" in msg, msg
    vit_subnet = in_process["vit"][1].subnets[0].name
    status, msg = refused(protocol, lambda: infer(protocol, address, "supernet", x, subnet=vit_subnet))
    assert status == bad_request and f"{vit_subnet!r} is not a profiled subnet of model 'supernet'" in msg, msg
    floor = (in_process["vit"][1].subnets[-1].accuracy + in_process["supernet"][1].subnets[-1].accuracy) / 2
    status, msg = refused(protocol, lambda: infer(protocol, address, "vit", x, min_accuracy=floor))
    assert status == bad_request and "most accurate subnet of model 'vit'" in msg, msg
    infer(protocol, address, "supernet", x, min_accuracy=floor)  # the CNN's best is above it


def test_a_concurrent_mix_is_served_each_by_its_own_model(two_model_sidecar, in_process):
    http, grpc = two_model_sidecar
    before = scrape(http)
    names = {m: {s.name for s in in_process[m][1].subnets} for m in MODELS}
    jobs = [(MODELS[i % 2], "http" if i % 3 else "grpc", 40.0 if i % 4 else 400.0) for i in range(48)]

    def one(job):
        m, protocol, slo = job
        x = RNG.random((1, 1, 28, 28), dtype=np.float32)
        try:
            name, logits, info = infer(protocol, url(two_model_sidecar, protocol), m, x, slo_ms=slo)
        except InferenceServerException as e:  # a request that cannot be served in time is refused, never lost
            assert e.status() in ("504", "503", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.UNAVAILABLE"), e
            return m, "refused"
        assert name == m and info[0]["subnet"] in names[m], (m, info)
        np.testing.assert_allclose(logits, expected(in_process[m][0], info[0]["subnet"], x), atol=1e-4, rtol=1e-4)
        return m, "answered"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, jobs))
    for m in MODELS:
        assert sum(r == (m, "answered") for r in results) >= 12, results
    after = scrape(http)

    def delta(key):
        return after.get(key, 0) - before.get(key, 0)
    for m in MODELS:
        counted = sum(delta(f'sched_model_requests_total{{model="{m}",outcome="{o}"}}')
                      for o in ("ok", "late", "dropped", "overloaded"))
        assert counted == 24, (m, counted)
        assert sum(delta(k) for k in after if k.startswith(f'sched_subnet_selected_total{{model="{m}"')) == \
            sum(r == (m, "answered") for r in results)
