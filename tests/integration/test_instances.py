"""A worker started with N supernet instances really has N (issue 18 item 3): `serve --instances 2` starts its
Triton from a linked repository whose config says 2, Triton's model config endpoint reports 2 instances, the
committed config still says 1, and requests are answered."""
from __future__ import annotations

import json
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient

from superserve.scheduler import paths
from superserve.scheduler.sidecar.server import serve_subprocess
from tests.conftest import free_ports


def instance_counts(http_url: str) -> list[int]:
    with urllib.request.urlopen(f"http://{http_url}/v2/models/supernet/config", timeout=10) as r:
        return [int(g.get("count", 1)) for g in json.load(r)["instance_group"]]


def test_serve_starts_its_triton_with_the_forced_instance_count(tmp_path):
    http, grpc, th, tg, tm = free_ports(5)
    profile = paths.repo_root() / "profiles" / "cpu-amd-epyc-2c.json"
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--profile", str(profile), "--instances", "2",
            "--triton-http-port", str(th), "--triton-grpc-port", str(tg), "--triton-metrics-port", str(tm)]
    with serve_subprocess(args, str(tmp_path / "serve.log")):
        assert instance_counts(f"127.0.0.1:{th}") == [2]  # Triton's own view of the loaded model
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
        x = np.zeros((1, 1, 28, 28), np.float32)
        inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        for _ in range(4):
            assert client.infer("supernet", [inp]).as_numpy("LOGITS").shape == (1, 10)
    assert "count: 1 }" in (paths.model_repository() / "supernet" / "config.pbtxt").read_text()
    assert "supernet instances per worker: 2 (--instances)" in (tmp_path / "serve.log").read_text()
