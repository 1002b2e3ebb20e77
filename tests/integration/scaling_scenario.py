"""The scale-up, worker-loss and drain scenario shared by the autoscaler tests on local processes
(test_autoscale_local.py) and on a Ray cluster (ray_scenario.py): a real ``superserve serve --autoscale`` with
real Tritons, closed-loop gRPC clients, and assertions on what the clients got and what /metrics says.

1. One worker; heavy load (8 clients, 8-row requests) until the autoscaler asks for a second worker and the fleet
   admits it; the new worker serves batches.
2. Under the same load, the caller kills one worker (its process, or its actor's); the fleet drops it, the
   backend starts it again, and the fleet re-admits it.
3. Light load (one client, one row every 0.2 s): the autoscaler removes one worker; it drains and stops.
4. Every request sent got exactly one answer, all in time, and the engine counted each once."""
from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from superserve.scheduler import paths
from superserve.scheduler.ports import free_ports
from superserve.scheduler.sidecar.server import serve_subprocess

SCALE_ARGS = ["--autoscale", "--workers", "1", "--min-workers", "1", "--max-workers", "2",
              "--scale-up-hold-s", "2", "--scale-down-hold-s", "4", "--scale-up-demand", "0.5",
              "--scale-down-demand", "0.3", "--default-slo-ms", "5000"]
"""Short holds so the test takes about a minute, and demand thresholds that the closed-loop clients cross with
room to spare on a busy 2-core machine (they reach a demand of about 1 on one worker, 0.05 when light). The
policy's defaults are tested on a fake clock (tests/unit/test_autoscale.py); this tests the machinery."""
MAX_REQUESTS = 20_000
MAX_SECONDS = 300.0


def profile_path() -> str:
    return str(sorted((paths.repo_root() / "profiles").glob("*.json"))[0])


def scrape(http: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://{http}/metrics", timeout=5).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def wait_for(http: str, what: str, pred, timeout_s: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    m = {}
    while time.monotonic() < deadline:
        m = scrape(http)
        if pred(m):
            return m
        time.sleep(0.5)
    fleet = {k: v for k, v in m.items() if k.startswith(("sched_workers", "sched_worker_", "sched_scaling"))}
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}; metrics {fleet}")


class Load:
    """Closed-loop gRPC clients; every request's outcome is kept. Bounded in count and time."""

    def __init__(self, grpc_url: str, clients: int = 8):
        self.url, self.clients = grpc_url, clients
        self.outcomes: list[str] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._light = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]
        self._deadline = time.monotonic() + MAX_SECONDS

    def start(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def light(self) -> None:
        self._light.set()

    def stop(self) -> Counter:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return Counter(self.outcomes)

    def _client(self, i: int) -> None:
        client = grpcclient.InferenceServerClient(self.url)
        images = np.random.default_rng(i).random((8, 1, 28, 28), dtype=np.float32)
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            light = self._light.is_set()
            if light and i > 0:
                time.sleep(0.05)
                continue
            x = images[:1] if light else images
            inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            with self._lock:
                if self.sent >= MAX_REQUESTS:
                    return
                self.sent += 1
            try:
                r = client.infer("supernet", [inp])
                outcome = "ok" if r.as_numpy("LOGITS").shape == (len(x), 10) else "short answer"
            except Exception as e:  # noqa: BLE001 - every outcome is counted and asserted on
                outcome = f"{type(e).__name__}: {str(e)[:120]}"
            with self._lock:
                self.outcomes.append(outcome)
            if light:
                time.sleep(0.2)
        client.close()


def worker_urls(m: dict[str, float]) -> set[str]:
    """Workers in the pool, from sched_worker_healthy{worker=...}."""
    return {re.search(r'worker="([^"]+)"', k).group(1) for k in m if k.startswith("sched_worker_healthy{")}


def run(tmp: Path, extra_args: list[str], kill, start_timeout_s: float = 90.0) -> dict:
    """The scenario above; ``kill(url, log_text)`` kills the worker serving at ``url``. Returns what the caller
    may check further (urls, the serve log)."""
    http, grpc = free_ports(2)
    log = tmp / "serve.log"
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--profile", profile_path(), *SCALE_ARGS,
            *extra_args]
    with serve_subprocess(args, str(log)) as proc:
        h = f"127.0.0.1:{http}"
        m = scrape(h)
        assert (m["sched_workers_target"], m["sched_workers"]) == (1, 1)
        first = worker_urls(m)
        load = Load(f"127.0.0.1:{grpc}").start()
        try:
            # 1. surge: a second worker is asked for, started, admitted and given batches
            m = wait_for(h, "a second worker admitted", lambda m: m["sched_workers"] == 2, start_timeout_s)
            ups = {k: v for k, v in m.items() if k.startswith('sched_scaling_decisions_total{direction="up"')}
            assert sum(ups.values()) == 1, ups
            second = (worker_urls(m) - first).pop()
            wait_for(h, f"the new worker {second} serves batches",
                     lambda m: m.get(f'sched_worker_batches_total{{worker="{second}",outcome="ok"}}', 0) > 0, 30)
            # 2. a worker dies under load: dropped at once, restarted by its backend, admitted again
            kill(second, log.read_text())
            m = wait_for(h, "the killed worker dropped", lambda m: m["sched_workers_lost_total"] >= 1, 30)
            m = wait_for(h, "the killed worker restarted and admitted again",
                         lambda m: m["sched_worker_admissions_total"] >= 2 and m["sched_workers"] == 2,
                         start_timeout_s)
            restarted = (worker_urls(m) - first).pop()
            # 3. the surge ends: one worker is drained and stopped
            load.light()
            m = wait_for(h, "one worker removed", lambda m: m["sched_workers_target"] == 1
                         and m["sched_workers"] == 1 and m["sched_workers_draining"] == 0, 60)
            assert m['sched_scaling_decisions_total{direction="down",reason="idle"}'] == 1
            time.sleep(1.0)  # a few light requests on the one worker left
        finally:
            outcomes = load.stop()
        m = scrape(h)
        log_text = log.read_text()
    # 4. every request answered once, in time
    assert sum(outcomes.values()) == load.sent, (outcomes, load.sent)
    assert outcomes == Counter({"ok": load.sent}), outcomes
    counted = sum(v for k, v in m.items() if k.startswith("sched_requests_total{"))
    assert counted == load.sent, f"the engine counted {counted} answers for {load.sent} requests"
    assert m['sched_requests_total{outcome="ok"}'] == load.sent
    assert "draining worker" in log_text and "stopped" in log_text
    return {"first": first, "second": second, "restarted": restarted, "log": log_text, "metrics": m,
            "sent": load.sent, "exit": proc.returncode}
