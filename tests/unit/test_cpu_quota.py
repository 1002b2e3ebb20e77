"""client/cpu_quota.py on the real kernel: a process group moved into a cpu group is held to its CFS quota,
goes back where it came from on release, and the group is removed on close. Skipped where cgroups cannot be
made (not root, no cgroup v1 cpu hierarchy)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from superserve.client.cpu_quota import CpuQuota, cpu_group_of, process_group_members

BUSY = "import os\nos.fork()\nwhile True: pass\n"  # two busy processes in one process group


@pytest.fixture
def busy_group():
    proc = subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(process_group_members(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        yield proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def test_a_process_group_is_held_to_its_quota_and_released(busy_group):
    groups = CpuQuota.create(1)
    if groups is None:
        pytest.skip(CpuQuota.unavailable)
    with groups[0] as quota:
        origin = cpu_group_of(busy_group)
        moved = quota.add_process_group(busy_group)
        assert sorted(moved) == sorted(quota.members()) and len(moved) == 2
        assert quota.cores() is None
        quota.set_cores(0.1)
        assert quota.cores() == pytest.approx(0.1)
        before, t0 = cpu_seconds(moved), time.monotonic()
        time.sleep(0.5)
        used, wall = cpu_seconds(moved) - before, time.monotonic() - t0
        # Two busy processes would use up to 2 cores; the quota holds them to 0.1 (plus a period and a tick).
        assert used <= 0.1 * wall + 0.05, (used, wall)
        assert quota.stat()["nr_throttled"] > 0
        quota.release()
        assert quota.members() == [] and all(cpu_group_of(p) == origin for p in moved)
        with pytest.raises(ValueError, match="cores"):
            quota.set_cores(0)
    assert not quota.group.exists()


def test_an_empty_process_group_is_an_error():
    groups = CpuQuota.create(1)
    if groups is None:
        pytest.skip(CpuQuota.unavailable)
    with groups[0] as quota:
        with pytest.raises(ProcessLookupError, match="process group"):
            quota.add_process_group(2 ** 22 + 12345)  # above any pid_max default: no such group
