"""The sidecar scheduler as users reach it: real tritonserver + real `superserve serve` processes on
free loopback ports, tritonclient http/grpc (sync and aio), SlackFit choices read from INFO."""
from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from superserve.client.prometheus_text import scrape
from tests.conftest import committed_profile

RNG = np.random.default_rng(0)


def image(rows=1):
    return RNG.random((rows, 1, 28, 28), dtype=np.float32)


def http_in(x, dt="FP32", mod=httpclient):
    i = mod.InferInput("INPUT", list(x.shape), dt)
    i.set_data_from_numpy(x)
    return i


def grpc_in(x, dt="FP32"):
    i = grpcclient.InferInput("INPUT", list(x.shape), dt)
    i.set_data_from_numpy(x)
    return i


def infos(result):
    return [json.loads(v[0]) for v in result.as_numpy("INFO")]


def check_answer(result, rows):
    assert result.as_numpy("LOGITS").shape == (rows, 10)
    for info in infos(result):
        assert set(info) == {"subnet", "accuracy", "confidence", "margin", "queue_ms", "infer_ms", "batch_size",
                             "escalations", "subnets"}
        assert info["queue_ms"] is not None and info["queue_ms"] >= 0


def test_sync_clients_through_the_scheduler(sidecar):
    http_url, grpc_url = sidecar
    h = httpclient.InferenceServerClient(http_url)
    assert h.is_server_live() and h.is_server_ready() and h.is_model_ready("supernet")
    md = h.get_model_metadata("supernet")
    assert [i["name"] for i in md["inputs"]] == ["INPUT"] and {o["name"] for o in md["outputs"]} == {"LOGITS", "INFO"}
    assert h.get_model_config("supernet")["max_batch_size"] >= 64
    check_answer(h.infer("supernet", [http_in(image(2))], parameters={"slo_ms": 500}), 2)
    # JSON (non-binary) outputs work as well.
    r = h.infer("supernet", [http_in(image())], outputs=[httpclient.InferRequestedOutput("LOGITS", binary_data=False)])
    assert r.as_numpy("LOGITS").shape == (1, 10)
    g = grpcclient.InferenceServerClient(grpc_url)
    assert g.is_server_ready() and g.is_model_ready("supernet")
    assert g.get_model_metadata("supernet").inputs[0].name == "INPUT"
    check_answer(g.infer("supernet", [grpc_in(image(3))], parameters={"slo_ms": 500}), 3)


def test_aio_clients_through_the_scheduler(sidecar):
    http_url, grpc_url = sidecar

    async def go():
        h = httpaio.InferenceServerClient(http_url)
        g = grpcaio.InferenceServerClient(grpc_url)
        try:
            r1 = await h.infer("supernet", [http_in(image(), mod=httpaio)], parameters={"slo_ms": 500})
            r2 = await g.infer("supernet", [grpc_in(image())], parameters={"slo_ms": "500"})
            return r1, r2
        finally:
            await h.close()
            await g.close()

    r1, r2 = asyncio.run(go())
    check_answer(r1, 1)
    check_answer(r2, 1)


def test_pinned_subnet_and_min_accuracy(sidecar):
    _, grpc_url = sidecar
    prof = committed_profile()
    g = grpcclient.InferenceServerClient(grpc_url)
    small = prof.subnets[0].name
    answer = g.infer("supernet", [grpc_in(image())], parameters={"subnet": small, "slo_ms": 1000})
    assert infos(answer)[0]["subnet"] == small
    floor = prof.subnets[-1].accuracy
    info = infos(g.infer("supernet", [grpc_in(image())], parameters={"min_accuracy": floor, "slo_ms": 1000}))[0]
    assert info["accuracy"] >= floor


async def _burst(grpc_url, n, slo_ms, blocker_subnet=None):
    """``n`` concurrent single-image requests. With ``blocker_subnet``, first one 16-row request pinned
    to that subnet occupies the worker, so the burst really queues behind it however fast this client
    sends (a slow client otherwise trickles requests in and every decision sees a short queue)."""
    client = grpcaio.InferenceServerClient(grpc_url)

    async def one(x, params):
        try:
            return ("ok", infos(await client.infer("supernet", [grpc_in(x)], parameters=params))[0])
        except InferenceServerException as e:
            return (e.status(), str(e))

    try:
        first = []
        if blocker_subnet:
            first = [asyncio.ensure_future(one(image(16), {"subnet": blocker_subnet, "slo_ms": 10_000}))]
            await asyncio.sleep(0)  # let the blocker go out first
        out = await asyncio.gather(*first, *(one(image(), {"slo_ms": slo_ms}) for _ in range(n)))
        if blocker_subnet:
            assert out[0][0] == "ok", out[0]
        return out[len(first):]
    finally:
        await client.close()


def test_tight_slo_burst_is_served_by_smaller_subnets_than_loose(sidecar):
    http_url, grpc_url = sidecar
    prof = committed_profile()
    # Tight: the largest subnet alone could not clear the blocker plus a 200-request burst in time (it
    # needs about 4x its batch-64 latency), so SlackFit must move to smaller subnets. Loose: it can, many
    # times over. Both assume the profile holds, i.e. an otherwise idle machine (see README).
    tight = 2 * prof.subnets[-1].latency_ms[64]
    loose = 30 * prof.subnets[-1].latency_ms[64]
    res = {}
    for name, slo in (("tight", tight), ("loose", loose)):
        before = scrape(http_url)
        out = asyncio.run(_burst(grpc_url, 200, slo, blocker_subnet=prof.subnets[-1].name))
        after = scrape(http_url)
        assert len(out) == 200
        others = {s for s, _ in out if s != "ok"}
        assert others <= {"StatusCode.DEADLINE_EXCEEDED"}, others  # answered or explicitly dropped
        res[name] = [i for s, i in out if s == "ok"]
        # The scheduler counted each request exactly once, as the client saw it.
        d = {o: after[f'sched_requests_total{{outcome="{o}"}}'] - before[f'sched_requests_total{{outcome="{o}"}}']
             for o in ("ok", "late", "dropped")}
        assert d["ok"] + d["late"] == len(res[name]) + 1 and d["dropped"] == 200 - len(res[name]), (name, d)
    assert len(res["loose"]) == 200 and len(res["tight"]) >= 1, {k: len(v) for k, v in res.items()}
    acc = {k: np.mean([i["accuracy"] for i in v]) for k, v in res.items()}
    largest = prof.subnets[-1].name
    assert any(i["subnet"] != largest for i in res["tight"]), "tight burst served only by the largest subnet"
    assert acc["tight"] < acc["loose"], acc
    assert max(i["batch_size"] for i in res["tight"]) > 1 and max(i["batch_size"] for i in res["loose"]) > 1


def test_infeasible_slo_gets_deadline_exceeded_at_once(sidecar):
    http_url, grpc_url = sidecar
    g = grpcclient.InferenceServerClient(grpc_url)
    t = time.monotonic()
    with pytest.raises(InferenceServerException) as e:
        g.infer("supernet", [grpc_in(image())], parameters={"slo_ms": 0.01})
    assert e.value.status() == "StatusCode.DEADLINE_EXCEEDED" and "slo_ms" in str(e.value)
    assert time.monotonic() - t < 0.5
    h = httpclient.InferenceServerClient(http_url)
    with pytest.raises(InferenceServerException) as e:
        h.infer("supernet", [http_in(image())], parameters={"slo_ms": 0.01})
    assert e.value.status() == "504"


BAD = [  # (parameters, input array, dtype, model, field named in the error, http status)
    ({"slo_ms": -5}, image(), "FP32", "supernet", "slo_ms", "400"),
    ({"slo_ms": "soon"}, image(), "FP32", "supernet", "slo_ms", "400"),
    ({"slo_ms": 1e13}, image(), "FP32", "supernet", "slo_ms", "400"),
    ({"min_accuracy": 2}, image(), "FP32", "supernet", "min_accuracy", "400"),
    ({"min_accuracy": 0.999}, image(), "FP32", "supernet", "min_accuracy", "400"),
    ({"subnet": "d9.9.9-w1.1.1"}, image(), "FP32", "supernet", "subnet", "400"),
    ({"colour": "blue"}, image(), "FP32", "supernet", "colour", "400"),
    ({}, RNG.random((1, 1, 27, 28), dtype=np.float32), "FP32", "supernet", "shape", "400"),
    ({}, image().astype(np.float64), "FP64", "supernet", "FP32", "400"),
    ({}, image(), "FP32", "resnet", "resnet", "404"),
]


@pytest.mark.parametrize("params,x,dt,model,field,status", BAD, ids=[b[4] + "-" + b[5] for b in BAD])
def test_bad_requests_get_clear_errors_and_serving_continues(sidecar, params, x, dt, model, field, status):
    http_url, grpc_url = sidecar
    h = httpclient.InferenceServerClient(http_url)
    with pytest.raises(InferenceServerException) as e:
        h.infer(model, [http_in(x, dt)], parameters=params or None)
    assert e.value.status() == status and field in str(e.value), str(e.value)
    g = grpcclient.InferenceServerClient(grpc_url)
    with pytest.raises(InferenceServerException) as e:
        g.infer(model, [grpc_in(x, dt)], parameters=params or None)
    want = {"400": "StatusCode.INVALID_ARGUMENT", "404": "StatusCode.NOT_FOUND"}[status]
    assert e.value.status() == want and field in str(e.value), str(e.value)
    check_answer(g.infer("supernet", [grpc_in(image())]), 1)


def test_metrics_count_outcomes(sidecar):
    http_url, grpc_url = sidecar
    before = scrape(http_url)
    g = grpcclient.InferenceServerClient(grpc_url)
    for _ in range(3):
        g.infer("supernet", [grpc_in(image())], parameters={"slo_ms": 1000})
    for p in ({"slo_ms": 0.01}, {"slo_ms": -1}):
        with pytest.raises(InferenceServerException):
            g.infer("supernet", [grpc_in(image())], parameters=p)
    after = scrape(http_url)

    def delta(k):
        return after.get(k, 0) - before.get(k, 0)

    assert delta('sched_requests_total{outcome="ok"}') == 3
    assert delta('sched_requests_total{outcome="dropped"}') == 1
    assert delta('sched_requests_total{outcome="invalid"}') == 1
    assert delta("sched_batch_size_count") == 3 and delta("sched_decision_seconds_count") >= 3
    assert sum(delta(k) for k in after if k.startswith("sched_subnet_selected_total")) == 3
    assert "sched_queue_depth" in after and any(k.startswith("sched_worker_inflight") for k in after)


def test_huge_slo_requests_never_switch_serving_off(sidecar, triton_plain):
    # Issue 12: slo_ms 1e13 overflowed the gRPC timeout of the call to Triton, the call failed at once with
    # DEADLINE_EXCEEDED and the worker was marked down (503 for everyone for half a second). Now such a
    # request is a 400, and other clients interleaved with it are all served.
    http_url, grpc_url = sidecar
    g = grpcclient.InferenceServerClient(grpc_url)
    before = scrape(http_url)
    for slo in (1e13, 1e300, "1e13"):
        with pytest.raises(InferenceServerException) as e:
            g.infer("supernet", [grpc_in(image())], parameters={"slo_ms": slo})
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "slo_ms" in str(e.value)
        check_answer(g.infer("supernet", [grpc_in(image())], parameters={"slo_ms": 1000}), 1)
    check_answer(g.infer("supernet", [grpc_in(image())], parameters={"slo_ms": 60_000}), 1)
    after = scrape(http_url)
    assert all(v == 1 for k, v in after.items() if k.startswith("sched_worker_healthy"))
    assert sum(after.get(k, 0) - before.get(k, 0) for k in after if k.startswith("sched_worker_failures")) == 0

    # And a call whose own deadline passes inside Triton is not the worker's fault.
    from superserve.scheduler.sidecar.triton_worker import TritonWorker
    from superserve.scheduler.core.errors import DeadlineInfeasible

    async def expired_call():
        w = TritonWorker(triton_plain.cfg.grpc_url)
        try:
            with pytest.raises(DeadlineInfeasible, match="deadline"):
                await w.infer(image(64), "d3.3.3-w100.100.100", timeout_s=1e-4)
        finally:
            await w.close()

    asyncio.run(expired_call())
