"""The autoscaler's scenario (scaling_scenario.py) with Triton workers as Ray actors on a local Ray cluster of two
simulated nodes, one CPU each, so each worker (one CPU) gets a node of its own; and a Ray worker serving two
models (``serve --models supernet,vit --ray``).

Not collected on its own: test_ray_cluster.py runs this file with pytest inside a network namespace whose only
interface is loopback (Ray binds the machine's interface address otherwise)."""
from __future__ import annotations

import os
import re
import signal
import time

import pytest

from tests.integration import scaling_scenario


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def ray_cluster():
    if os.environ.get("SUPERSERVE_LOOPBACK_NETNS") != "1":
        pytest.skip("runs only inside the loopback-only network namespace that test_ray_cluster.py makes")
    try:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
    except Exception as e:  # noqa: BLE001 - reported as the reason of the skip
        pytest.skip(f"Ray cannot start here: {type(e).__name__}: {e}")
    yield cluster
    cluster.shutdown()


def test_ray_workers_scale_up_restart_and_drain(ray_cluster, tmp_path):
    killed = {}

    def kill(url: str, log: str) -> None:
        m = re.findall(r"admitted \(Ray actor pid (\d+) on node (\w+) \(" + re.escape(url) + r"\)", log)
        assert m, f"no admission of {url} in the log"
        killed["pid"], killed["node"] = int(m[-1][0]), m[-1][1]
        killed["triton"] = scaling_scenario_triton_pid(url)
        os.kill(killed["pid"], signal.SIGKILL)

    r = scaling_scenario.run(tmp_path, ["--ray", ray_cluster.address, "--worker-cpus", "1"], kill,
                             start_timeout_s=120)
    log = r["log"]
    nodes = {url: node for node, url in re.findall(r"on node (\w+) \(([\d.:]+)\)", log)}
    first = next(iter(r["first"]))
    assert nodes[first] != nodes[r["second"]], f"both workers on one node: {nodes}"
    assert r["restarted"] != r["second"], "a restarted actor serves at a new address"
    assert nodes[r["restarted"]] == killed["node"], "Ray restarts the actor on its node (which is still up)"
    assert f"worker {r['second']} lost" in log
    # the killed actor's Triton did not outlive it (orphan_guard.py)
    deadline = time.monotonic() + 10
    while _alive(killed["triton"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(killed["triton"]), "the Triton of the killed actor still runs"
    assert r["exit"] == 0


def scaling_scenario_triton_pid(url: str) -> int:
    from tests.integration.conftest import tritonserver_pids

    pids = tritonserver_pids(int(url.rsplit(":", 1)[1]))
    assert len(pids) == 1, pids
    return pids[0]


def test_ray_workers_serve_every_model(ray_cluster, tmp_path):
    """``serve --models supernet,vit --ray``: the actor's Triton loads both models, the fleet admits it with both
    ready and warmed up, and each model answers as its in-process forward over HTTP and gRPC."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    from superserve.scheduler.ports import free_ports
    from superserve.scheduler.sidecar.server import serve_subprocess
    from tests.integration.test_autoscale_models import MODELS, check_answers, in_process, profile_file

    http, grpc = free_ports(2)
    log = tmp_path / "serve.log"
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--models", ",".join(MODELS),
            "--profile", ",".join(f"{m}={profile_file(m)}" for m in MODELS),
            "--ray", ray_cluster.address, "--worker-cpus", "1", "--workers", "1"]
    with serve_subprocess(args, str(log)) as proc:
        m = scaling_scenario.scrape(f"127.0.0.1:{http}")
        assert m["sched_workers"] == 1
        (worker,) = scaling_scenario.worker_urls(m)
        check_answers(f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", in_process(), np.random.default_rng(18))
        direct = grpcclient.InferenceServerClient(worker)
        try:
            assert all(direct.is_model_ready(name) for name in MODELS)
        finally:
            direct.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    assert "Ray actor pid" in log.read_text()
