"""The python_supernet backend inside the real tritonserver, reached with tritonclient."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from superserve.client.prometheus_text import labels, name_of, scrape
from superserve.supernet.subnets import SubnetConfig

RNG = np.random.default_rng(0)


def three_subnets(meta):
    p = meta["pareto"]
    return [p[0], p[len(p) // 2], p[-1]]


def expected_logits(supernet, name, x):
    model, _ = supernet
    with torch.inference_mode():
        return model(torch.from_numpy(x), SubnetConfig.parse(name)).numpy()


def exec_count(client):
    stats = client.get_inference_statistics("supernet")
    return int(stats["model_stats"][0]["execution_count"])


def check_ok(result, supernet, name, x):
    logits = result.as_numpy("LOGITS")
    np.testing.assert_allclose(logits, expected_logits(supernet, name, x), rtol=1e-4, atol=1e-4)
    infos = [json.loads(v[0]) for v in result.as_numpy("INFO")]
    assert len(infos) == len(x)
    _, meta = supernet
    for info in infos:
        assert info["subnet"] == name
        assert set(info) == {"subnet", "accuracy", "confidence", "margin", "queue_ms", "infer_ms", "batch_size",
                             "escalations", "subnets"}
        row = next(r for r in meta["subnets"] if r["name"] == name)
        assert info["accuracy"] == row.get("test_accuracy", row["val_accuracy"])
        assert 0.1 <= info["confidence"] <= 1.0 and info["infer_ms"] > 0


def http_input(x, dtype="FP32"):
    i = httpclient.InferInput("INPUT", list(x.shape), dtype)
    i.set_data_from_numpy(x)
    return i


def grpc_input(x, dtype="FP32"):
    i = grpcclient.InferInput("INPUT", list(x.shape), dtype)
    i.set_data_from_numpy(x)
    return i


def bad_cases():
    good = RNG.random((1, 1, 28, 28), dtype=np.float32)
    nan = good.copy()
    nan[0, 0, 3, 3] = np.nan
    return {
        "unknown subnet": (good, "FP32", {"subnet": "d9.9.9-w10.10.10"}, "subnet"),
        "malformed subnet": (good, "FP32", {"subnet": "largest-please"}, "subnet"),
        "wrong shape": (RNG.random((1, 1, 27, 28), dtype=np.float32), "FP32", {}, "shape"),
        "wrong dtype": (good.astype(np.float64), "FP64", {}, "FP64"),
        "NaN pixels": (nan, "FP32", {}, "NaN"),
    }


def test_http_mixed_batch_three_subnets_and_bad_requests(triton, supernet):
    _, meta = supernet
    client = httpclient.InferenceServerClient(triton.cfg.http_url, concurrency=16)
    names = three_subnets(meta)
    goods = [(n, RNG.random((2, 1, 28, 28), dtype=np.float32)) for n in names]
    before = exec_count(client)
    pending = [client.async_infer("supernet", [http_input(x)], parameters={"subnet": n}) for n, x in goods]
    bad = {k: client.async_infer("supernet", [http_input(x, dt)], parameters=p or None)
           for k, (x, dt, p, _) in bad_cases().items()}
    for (n, x), req in zip(goods, pending):
        check_ok(req.get_result(), supernet, n, x)
    for k, req in bad.items():
        with pytest.raises(InferenceServerException) as e:
            req.get_result()
        assert e.value.status() == "400", (k, e.value.status(), str(e.value))
        assert bad_cases()[k][3] in str(e.value), (k, str(e.value))
    # The three subnets and the in-backend errors shared one execute(): SubNetAct per request.
    assert exec_count(client) - before == 1
    assert client.is_server_ready() and client.is_model_ready("supernet")
    x = RNG.random((1, 1, 28, 28), dtype=np.float32)
    check_ok(client.infer("supernet", [http_input(x)]), supernet, meta["pareto"][-1], x)  # default subnet
    client.close()


def test_grpc_mixed_batch_three_subnets_and_bad_requests(triton, supernet):
    _, meta = supernet
    client = grpcclient.InferenceServerClient(triton.cfg.grpc_url)
    names = three_subnets(meta)
    results, done = {}, threading.Semaphore(0)

    def callback(key):
        def cb(result, error):
            results[key] = (result, error)
            done.release()
        return cb

    goods = {n: RNG.random((3, 1, 28, 28), dtype=np.float32) for n in names}
    cases = bad_cases()
    before = exec_count(httpclient.InferenceServerClient(triton.cfg.http_url))
    for n, x in goods.items():
        client.async_infer("supernet", [grpc_input(x)], callback(n), parameters={"subnet": n})
    for k, (x, dt, p, _) in cases.items():
        client.async_infer("supernet", [grpc_input(x, dt)], callback(k), parameters=p or None)
    for _ in range(len(goods) + len(cases)):
        assert done.acquire(timeout=30), "a request got no answer"
    for n, x in goods.items():
        result, error = results[n]
        assert error is None, error
        check_ok(result, supernet, n, x)
    for k in cases:
        result, error = results[k]
        assert result is None and error is not None, k
        assert error.status() == "StatusCode.INVALID_ARGUMENT", (k, error.status(), str(error))
        assert cases[k][3] in str(error), (k, str(error))
    assert exec_count(httpclient.InferenceServerClient(triton.cfg.http_url)) - before == 1
    assert client.is_server_live() and client.is_server_ready()
    client.close()


def test_actuation_metric_counts_per_subnet(triton, supernet):
    _, meta = supernet
    name = meta["pareto"][1]

    def count():
        samples = scrape(f"{triton.cfg.host}:{triton.cfg.metrics_port}")
        return next((v for k, v in samples.items()
                     if name_of(k) == "supernet_subnet_requests_total" and labels(k).get("subnet") == name), 0.0)

    before = count()
    client = httpclient.InferenceServerClient(triton.cfg.http_url)
    for _ in range(3):
        x = RNG.random((1, 1, 28, 28), dtype=np.float32)
        client.infer("supernet", [http_input(x)], parameters={"subnet": name})
    assert count() - before == 3
