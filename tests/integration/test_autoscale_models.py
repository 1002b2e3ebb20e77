"""Several models on an autoscaled local fleet (issue 17 item 5 with issue 18): ``superserve serve --models
supernet,vit --autoscale`` with real Tritons. The first worker loads both models; a mixed load of both models
makes the autoscaler (its demand summed over the models) ask for a second worker, which the fleet admits with
both models ready and warmed up; that worker, killed under the load, is dropped, started again and admitted again
with both models; every request of either model is answered once, by its own model; and each model answers as its
in-process forward over HTTP and gRPC before and after the pool grew."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter

import numpy as np
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from superserve.scheduler.sidecar.server import serve_subprocess
from tests.conftest import free_ports
from tests.integration.conftest import models_in_process, profile_file, tritonserver_pids
from tests.integration.scaling_scenario import scrape, wait_for, worker_urls

MODELS = ("supernet", "vit")
SCALE_ARGS = [
    "--autoscale",
    "--workers",
    "1",
    "--min-workers",
    "1",
    "--max-workers",
    "2",
    "--scale-up-hold-s",
    "2",
    "--scale-down-hold-s",
    "600",
    "--scale-up-demand",
    "0.4",
    "--scale-down-demand",
    "0.2",
    "--default-slo-ms",
    "5000",
]
"""A short up hold and a demand threshold the closed-loop clients cross with room to spare; no step down within
the test (the down path is scaling_scenario.py's)."""
MAX_REQUESTS = 5_000
MAX_SECONDS = 150.0


def in_process():
    return models_in_process(MODELS)


def infer(protocol: str, address: str, model: str, x: np.ndarray):
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(address)
    try:
        inp = mod.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        r = client.infer(model, [inp], parameters={"slo_ms": 5000})
        return r.as_numpy("LOGITS"), [json.loads(v) for v in r.as_numpy("INFO").ravel()]
    finally:
        client.close()


def check_answers(http: str, grpc: str, nets, rng) -> None:
    """Each model, over each protocol, answers as its in-process forward on the subnet its INFO names (one of
    that model's own subnets)."""
    for protocol, address in (("http", http), ("grpc", grpc)):
        for m in MODELS:
            net, prof = nets[m]
            x = rng.random((2, *net.input_spec.dims), dtype=np.float32)
            logits, info = infer(protocol, address, m, x)
            subnet = info[0]["subnet"]
            assert prof.get(subnet) is not None, f"{m} answered on {subnet}, not one of its subnets"
            with torch.inference_mode():
                want = net(torch.from_numpy(x), net.space.parse(subnet)).numpy()
            np.testing.assert_allclose(logits, want, atol=1e-4, rtol=1e-4, err_msg=f"{m} over {protocol}")


class MixedLoad:
    """Closed-loop gRPC clients, client i sending model i % 2 (8-row requests); every outcome kept per model.
    Bounded in count and time."""

    def __init__(self, grpc_url: str, clients: int = 4):
        self.url = grpc_url
        self.outcomes: Counter = Counter()
        self.sent: Counter = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + MAX_SECONDS
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]
        for t in self._threads:
            t.start()

    def stop(self) -> Counter:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.outcomes

    def _client(self, i: int) -> None:
        model = MODELS[i % 2]
        client = grpcclient.InferenceServerClient(self.url)
        x = np.random.default_rng(i).random((8, 1, 28, 28), dtype=np.float32)
        inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            with self._lock:
                if sum(self.sent.values()) >= MAX_REQUESTS:
                    break
                self.sent[model] += 1
            try:
                r = client.infer(model, [inp])
                ok = r.as_numpy("LOGITS").shape == (8, 10) and r.get_response().model_name == model
                outcome = "ok" if ok else "wrong answer"
            except Exception as e:  # noqa: BLE001 - every outcome is counted and asserted on
                outcome = f"{type(e).__name__}: {str(e)[:120]}"
            with self._lock:
                self.outcomes[(model, outcome)] += 1
        client.close()


def test_an_autoscaled_local_fleet_serves_both_models(tmp_path):
    nets, rng = in_process(), np.random.default_rng(17)
    http, grpc = free_ports(2)
    log = tmp_path / "serve.log"
    args = [
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--models",
        ",".join(MODELS),
        "--profile",
        ",".join(f"{m}={profile_file(m)}" for m in MODELS),
        "--triton-http-port",
        "0",
        "--triton-grpc-port",
        "0",
        "--triton-metrics-port",
        "0",
        *SCALE_ARGS,
    ]
    with serve_subprocess(args, str(log)) as proc:
        h, g = f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
        m = scrape(h)
        assert (m["sched_workers_target"], m["sched_workers"]) == (1, 1)
        first = worker_urls(m)
        check_answers(h, g, nets, rng)
        load = MixedLoad(g)
        try:
            m = wait_for(h, "a second worker admitted", lambda m: m["sched_workers"] == 2, 120)
            second = (worker_urls(m) - first).pop()
            ups = {k: v for k, v in m.items() if k.startswith('sched_scaling_decisions_total{direction="up"')}
            assert sum(ups.values()) == 1, ups
            assert m["sched_worker_admissions_total"] == 1
            batches_of_second = f'sched_worker_batches_total{{worker="{second}",outcome="ok"}}'
            m = wait_for(h, f"the new worker {second} serves batches", lambda m: m.get(batches_of_second, 0) > 0, 30)
            # the new worker dies under the load: dropped at once, started again on its ports, admitted again
            (pid,) = tritonserver_pids(int(second.rsplit(":", 1)[1]))
            os.kill(pid, signal.SIGKILL)
            served_before = scrape(h).get(batches_of_second, 0)
            wait_for(h, "the killed worker dropped", lambda m: m["sched_workers_lost_total"] >= 1, 30)
            m = wait_for(
                h,
                "the killed worker started and admitted again",
                lambda m: m["sched_worker_admissions_total"] >= 2 and m["sched_workers"] == 2,
                120,
            )
            assert worker_urls(m) == first | {second}, "a local worker comes back on its own ports"
            wait_for(
                h,
                f"the restarted worker {second} serves batches",
                lambda m: m.get(batches_of_second, 0) > served_before,
                30,
            )
        finally:
            outcomes = load.stop()
        # the restarted worker's Triton has every served model loaded (it was admitted with both ready)
        direct = grpcclient.InferenceServerClient(second)
        try:
            assert all(direct.is_model_ready(name) for name in MODELS)
        finally:
            direct.close()
        check_answers(h, g, nets, rng)
        m = scrape(h)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    for name in MODELS:
        assert load.sent[name] > 0 and outcomes[(name, "ok")] == load.sent[name], (name, outcomes, load.sent)
        # the clients' requests plus the 2 x 2 answers check_answers asked for
        assert m[f'sched_model_requests_total{{model="{name}",outcome="ok"}}'] == load.sent[name] + 4
    assert sum(outcomes.values()) == sum(load.sent.values()), outcomes
    assert "autoscale up 1 -> 2 workers" in log.read_text()
    assert "exited (code -9); starting it again" in log.read_text()
    assert "autoscale step failed" not in log.read_text()
