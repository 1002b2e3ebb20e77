"""Which shared-memory regions the launcher removes: only its own naming, only with no live owner."""
from __future__ import annotations

from pathlib import Path

from superserve.scheduler.sidecar import shm_regions


def fake_proc(root: Path, cmdlines: dict[int, str]) -> Path:
    for pid, cmd in cmdlines.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(cmd.replace(" ", "\0").encode() + b"\0")
    (root / "self").mkdir(exist_ok=True)  # not a pid: ignored
    return root


def test_prefix_names_our_namespace_and_is_fresh_per_start():
    a, b = shm_regions.new_prefix(), shm_regions.new_prefix()
    assert a != b and a.startswith(f"superserve_shm_{shm_regions._pid_namespace()}_") and a.endswith("_")
    assert shm_regions._PATTERN.match(a + "0f1e-uuid")


def test_removes_only_regions_of_dead_owners_with_our_naming(tmp_path):
    shm = tmp_path / "shm"
    shm.mkdir()
    dead, live, stub_only = shm_regions.new_prefix(), shm_regions.new_prefix(), shm_regions.new_prefix()
    ns = shm_regions._pid_namespace()
    other_ns = f"superserve_shm_{int(ns) + 1}_{'a' * 16}_"
    files = [dead + "u1", dead + "u2", live + "u3", stub_only + "u4", other_ns + "u5",
             "triton_python_supernet_backend_shm_region_u6", "superserve_shm_notours"]
    for f in files:
        (shm / f).write_bytes(b"x")
    proc = fake_proc(tmp_path / "proc", {
        10: f"tritonserver --backend-config=python,shm-region-prefix-name={live} --grpc-port=1",
        11: f"triton_python_backend_stub /model {stub_only}u4 1048576",  # a stub outliving its server
        12: "sleep 60"})
    removed = shm_regions.remove_stale(shm, proc)
    assert sorted(removed) == [dead + "u1", dead + "u2"]
    assert sorted(p.name for p in shm.iterdir()) == sorted(files[2:])


def test_unreadable_proc_counts_as_alive(tmp_path):
    shm = tmp_path / "shm"
    shm.mkdir()
    prefix = shm_regions.new_prefix()
    (shm / (prefix + "u")).write_bytes(b"x")
    assert shm_regions.owner_alive(prefix, tmp_path / "no-proc-here")
    assert shm_regions.remove_stale(shm, tmp_path / "no-proc-here") == []
    assert (shm / (prefix + "u")).exists()
