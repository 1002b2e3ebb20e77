"""Supernet instances per Triton worker (instance_count.py), the launcher's config rewrite, serve's flags."""
from __future__ import annotations

import json

import pytest

from superserve.scheduler import paths
from superserve.scheduler.core import instance_count
from superserve.scheduler.sidecar import cluster
from superserve.scheduler.cli import build_parser
from superserve.scheduler.core.instance_count import WorkerResources, choose, overlap_gain, split_gain
from superserve.scheduler.core.profile import Profile
from superserve.scheduler.sidecar.triton_launcher import TritonStartError, linked_repository, with_instance_count

LINEAR = {b: 2.0 * b for b in (1, 2, 4, 8, 16, 32, 64)}
FLAT = {b: 5.0 + 0.01 * b for b in (1, 2, 4, 8, 16, 32, 64)}


def committed_curve() -> dict[int, float]:
    return instance_count.curve_of(Profile.load(paths.repo_root() / "profiles" / "cpu-amd-epyc-2c.json"))


def test_split_gain_tells_linear_from_flat():
    assert split_gain(LINEAR) == pytest.approx(2.0)
    assert split_gain(FLAT) == pytest.approx(1.0, abs=0.03)
    with pytest.raises(ValueError, match="two batch sizes"):
        split_gain({1: 1.0, 3: 2.0})


def test_cpu_two_free_cores_and_a_linear_curve_give_two():
    c = choose(LINEAR, WorkerResources(cores=4))
    assert c.count == 2 and "near linear" in c.reason and "x2.00" in c.reason


def test_cpu_count_is_capped_by_the_batches_in_flight_and_the_cores():
    assert choose(LINEAR, WorkerResources(cores=16)).count == 2
    assert choose(LINEAR, WorkerResources(cores=16), max_in_flight=4).count == 4
    assert choose(LINEAR, WorkerResources(cores=3), max_in_flight=4).count == 3
    assert choose(LINEAR, WorkerResources(cores=4, threads=2), max_in_flight=4).count == 2


def test_cpu_flat_curve_gives_one_whatever_the_cores():
    c = choose(FLAT, WorkerResources(cores=16))
    assert c.count == 1 and "nearly flat" in c.reason


def test_cpu_one_free_core_gives_one():
    for res in (WorkerResources(cores=1), WorkerResources(cores=0.3), WorkerResources(cores=2, reserved_cores=1),
                WorkerResources(cores=2, threads=2)):
        c = choose(LINEAR, res)
        assert c.count == 1 and "share the first one's core" in c.reason, res


def test_this_machine_agrees_with_the_measurement():
    """`auto` for one local worker on this 2-core host (one core kept for the sidecar) is 1, and the measurement
    (python -m superserve.client.instances_bench) found 2 instances slower than 1 at batch 1 and 8."""
    measured = json.loads((paths.repo_root() / "results" / "instances-cpu.json").read_text())
    assert measured["cores"] == 2
    pays = all(measured["summary"][b]["ratio_2_over_1_median"] >= instance_count.MIN_GAIN for b in ("1", "8"))
    host = WorkerResources(cores=2, reserved_cores=1)
    assert (choose(committed_curve(), host).count == 2) == pays
    assert choose(committed_curve(), host).count == 1
    # the same curve with two free cores would take a second instance: it is the cores, not the curve
    assert split_gain(committed_curve()) > instance_count.MIN_GAIN
    assert choose(committed_curve(), WorkerResources(cores=3, reserved_cores=1)).count == 2


def test_gpu_overlap_rule():
    balanced = {b: 4.0 + 0.25 * b for b in (1, 2, 4, 8, 16)}  # host 4 ms, device 4 ms at 16
    assert overlap_gain(balanced) == pytest.approx(2.0, rel=0.01)
    assert choose(balanced, WorkerResources(cores=4, gpus=1)).count == 2
    assert choose(balanced, WorkerResources(cores=1, gpus=1)).count == 1
    assert choose(LINEAR, WorkerResources(cores=4, gpus=1)).count == 1  # device time dominates


def test_bad_resources_are_refused():
    with pytest.raises(ValueError, match="cores > 0"):
        WorkerResources(cores=0)


# -- the launcher's rewrite ------------------------------------------------------------------------------
def test_with_instance_count_rewrites_only_the_count():
    text = (paths.model_repository() / "supernet" / "config.pbtxt").read_text()
    new = with_instance_count(text, 3)
    assert "instance_group [ { kind: KIND_CPU, count: 3 } ]" in new
    assert new.replace("count: 3", "count: 1") == text
    with pytest.raises(TritonStartError, match="expected one instance_group"):
        with_instance_count("name: 'x'", 2)


def test_linked_repository_copies_the_config_and_leaves_the_committed_one(tmp_path):
    source = paths.model_repository()
    before = (source / "supernet" / "config.pbtxt").read_text()
    root = linked_repository(source, ("supernet",), instances=2)
    try:
        assert not (root / "supernet").is_symlink() and (root / "supernet" / "1").is_symlink()
        assert "count: 2" in (root / "supernet" / "config.pbtxt").read_text()
        assert (source / "supernet" / "config.pbtxt").read_text() == before
    finally:
        import shutil

        shutil.rmtree(root)
    plain = linked_repository(source, ("supernet",))
    try:
        assert (plain / "supernet").is_symlink()
    finally:
        import shutil

        shutil.rmtree(plain)


# -- serve's flags --------------------------------------------------------------------------------------
def serve_args(*argv: str):
    return build_parser().parse_args(["serve", *argv])


def test_instances_flag_forces_a_number_or_says_what_is_wrong():
    assert cluster.instances_from_args(serve_args("--instances", "3"), None) == 3
    for bad in ("0", "x", "65"):
        with pytest.raises(ValueError, match="--instances must be auto or an integer"):
            cluster.instances_from_args(serve_args("--instances", bad), None)
    with pytest.raises(ValueError, match="not to --worker URLs"):
        cluster.instances_from_args(serve_args("--worker", "127.0.0.1:1", "--instances", "2"), None)
    assert cluster.instances_from_args(serve_args("--worker", "127.0.0.1:1"), None) is None


def test_auto_logs_its_reason(caplog):
    profile = str(paths.repo_root() / "profiles" / "cpu-amd-epyc-2c.json")
    with caplog.at_level("INFO", logger="superserve.scheduler.sidecar.cluster"):
        n = cluster.instances_from_args(serve_args("--profile", profile, "--worker-cores", "8"), None)
    assert n == 2 and "supernet instances per worker: 2:" in caplog.text
    assert cluster.instances_from_args(serve_args("--profile", profile, "--worker-cores", "0.5"), None) == 1


def test_local_workers_share_the_host(monkeypatch):
    monkeypatch.setattr(cluster.os, "sched_getaffinity", lambda pid: set(range(8)))
    r = cluster.worker_resources(serve_args("--workers", "2"), None)
    assert (r.cores, r.reserved_cores) == (4.0, 0.5)
    a = serve_args("--autoscale", "--max-workers", "4")
    r = cluster.worker_resources(a, cluster.from_args(a))
    assert (r.cores, r.reserved_cores) == (2.0, 0.25)


def test_configure_sets_the_triton_instances_and_prefixes():
    from superserve.scheduler.sidecar.server import ServeConfig

    a = serve_args("--instances", "2", "--local-worker-prefix", '[["taskset", "-c", "0"]]', "--workers", "1")
    cfg = cluster.configure(ServeConfig(), a)
    assert cfg.triton.instances == 2
    assert cfg.cluster is not None and cfg.cluster.autoscale is None
    assert cfg.cluster.prefixes == (("taskset", "-c", "0"),)
    with pytest.raises(ValueError, match="--local-worker-prefix must be a JSON list"):
        cluster.from_args(serve_args("--local-worker-prefix", '["taskset"]'))
    assert cluster.configure(ServeConfig(), serve_args("--instances", "1")).cluster is None


def test_local_processes_use_the_prefix_of_their_index():
    from superserve.scheduler.sidecar.local_workers import LocalProcesses
    from superserve.scheduler.sidecar.triton_launcher import TritonConfig

    lp = LocalProcesses(TritonConfig(http_port=0, grpc_port=0, metrics_port=0), (("a",), ("b", "c")))
    assert [lp._config(i).wrapper for i in range(3)] == [("a",), ("b", "c"), ()]
