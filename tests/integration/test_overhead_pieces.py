"""The pieces `superserve bench-overhead` measures with: the zero-cost stand-in worker, the trivial gRPC proxy (the
floor of a Python sidecar) and the sidecar with a policy that chooses the subnet, each answering real tritonclient
requests (the bench itself runs minutes; its numbers live in results/, not here)."""
from __future__ import annotations

import json

import numpy as np
import tritonclient.grpc as grpcclient

from superserve.client import overhead_bench as ob
from superserve.scheduler.ports import free_ports


def _infer(url: str, params: dict) -> tuple[np.ndarray, dict]:
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    client = grpcclient.InferenceServerClient(url)
    try:
        r = client.infer("supernet", [inp], parameters=params, client_timeout=20)
    finally:
        client.close()
    return r.as_numpy("LOGITS"), json.loads(r.as_numpy("INFO")[0][0])


def test_the_proxy_forwards_to_the_stand_in_and_the_sidecar_chooses_a_subnet():
    worker_port, proxy_port = free_ports(2)
    worker = f"127.0.0.1:{worker_port}"
    with ob.standin(worker_port), ob.grpc_proxy(proxy_port, worker):
        logits, info = _infer(f"127.0.0.1:{proxy_port}", {"subnet": "d1.1.1-w25.25.25"})
        assert logits.shape == (2, 10) and info["subnet"] == "d1.1.1-w25.25.25"  # the stand-in's answer, forwarded
        with ob.sidecars_up(worker, "d1.1.1-w25.25.25", {"s": (None, ())}, policy="slackfit") as up:
            _, _, grpc_url = up["s"]
            logits, info = _infer(grpc_url, {"slo_ms": 1000.0})
    assert logits.shape == (2, 10)
    # SlackFit chose the subnet (the stand-in echoes it) and the scheduler spliced its fields into the row
    assert info["subnet"] != "standin" and info["subnets"] == [info["subnet"]]
    assert info["queue_ms"] is not None and info["escalations"] == 0
