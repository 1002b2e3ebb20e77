"""A CPU quota on a running process group, lowered and restored while it runs: a co-tenant's pressure
on a Triton worker that does not depend on how busy the rest of the host is.

Stopping and continuing a process from another thread (SIGSTOP/SIGCONT driven by sleeps) grows harsher
when the host is busy, because the sleeps overrun. A cgroup v1 ``cpu`` group's CFS quota is enforced
by the kernel: the group gets at most ``cores`` CPU per period, however loaded the host is.

In cgroup v1 a group competes with the tasks of its parent as one task of weight ``cpu.shares``: at the
default 1024, a group holding Triton's server and its backend stub weighs as much as any one process of
the parent's, and on a busy 2-core host (load average 4-5) Triton ran much slower even under an unlimited
quota: one 15 s run at 120 req/s missed 46% of a 50 ms SLO in such a group, the next 12% outside any
group. So the groups made here weigh ``SHARES``: unlimited, the host's other work slows the process less
than outside any group; throttled, the quota, not the host's load, is what bounds it.

The groups are made by ``fault_bench.cpu_quota_groups`` (the fault experiment's workers use the same
groups). Needs root and a cgroup v1 cpu hierarchy: ``CpuQuota.create`` returns None otherwise, with
the reason in ``CpuQuota.unavailable``."""
from __future__ import annotations

import os
from pathlib import Path

from superserve.client.fault_bench import CGROUP_CPU, cpu_quota_groups, remove_groups

SHARES = 16 * 1024
"""A group's weight against its parent's tasks (1024 each): enough that a quota of a fraction of a core
binds before the fair share does, on a 2-core host running a dozen busy processes."""


def process_group_members(pgid: int) -> list[int]:
    """The pids whose process group is ``pgid`` (Triton and its Python backend stubs)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) == pgid:
                pids.append(int(entry))
        except OSError:  # gone meanwhile
            continue
    return sorted(pids)


def cpu_group_of(pid: int) -> Path:
    """The cgroup v1 cpu group ``pid`` is in now (its folder under CGROUP_CPU)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return CGROUP_CPU / path.lstrip("/")
    return CGROUP_CPU


class CpuQuota:
    """One cgroup v1 cpu group of weight SHARES and a CFS quota (``set_cores``); processes go in with ``add``
    or ``add_process_group`` and back where they came from with ``release`` (or ``close``)."""

    unavailable = ""
    """Why the last ``create`` returned None (for a skip or log message)."""

    def __init__(self, group: Path):
        self.group = group
        self.period_us = int((group / "cpu.cfs_period_us").read_text())
        self.origin: dict[int, Path] = {}
        """The cpu group each added pid came from (``release`` moves it back there)."""

    @classmethod
    def create(cls, n: int = 1) -> list[CpuQuota] | None:
        """``n`` groups, unlimited until ``set_cores``, or None if this machine does not let us make them."""
        groups = cpu_quota_groups(n, 1.0)
        if groups is None:
            cls.unavailable = f"cannot create a cgroup under {CGROUP_CPU} (needs root and a cgroup v1 cpu hierarchy)"
            return None
        made = [cls(g) for g in groups]
        try:
            for q in made:
                (q.group / "cpu.shares").write_text(str(SHARES))
                q.set_cores(None)
        except OSError as e:
            remove_groups(groups)
            cls.unavailable = f"cannot set the CFS quota or shares of {groups}: {e}"
            return None
        return made

    def set_cores(self, cores: float | None) -> None:
        """At most ``cores`` CPU per period from now on (None: unlimited)."""
        if cores is not None and not cores > 0:
            raise ValueError(f"cores must be > 0 or None, got {cores}")
        quota = -1 if cores is None else max(1000, int(cores * self.period_us))
        (self.group / "cpu.cfs_quota_us").write_text(str(quota))

    def cores(self) -> float | None:
        quota = int((self.group / "cpu.cfs_quota_us").read_text())
        return None if quota < 0 else quota / self.period_us

    def add_process_group(self, pgid: int) -> list[int]:
        """Move every process of group ``pgid`` into this group (see ``add``). Returns the pids moved;
        raises if there is none."""
        moved = [pid for pid in process_group_members(pgid) if self.add(pid)]
        if not moved:
            raise ProcessLookupError(f"no process in process group {pgid}")
        return moved

    def add(self, pid: int) -> bool:
        """Move process ``pid`` (with all its threads) into this group; children it forks from now on are
        born in it. False if it has exited."""
        try:
            origin = cpu_group_of(pid)
            (self.group / "cgroup.procs").write_text(str(pid))
        except (ProcessLookupError, FileNotFoundError):
            return False
        self.origin.setdefault(pid, origin)
        return True

    def members(self) -> list[int]:
        """The pids in the group now (with any child born in it)."""
        return [int(x) for x in (self.group / "cgroup.procs").read_text().split()]

    def release(self) -> None:
        """Every process in the group back where it came from (a child born in it: the root group)."""
        for pid in self.members():
            try:
                (self.origin.get(pid, CGROUP_CPU) / "cgroup.procs").write_text(str(pid))
            except (ProcessLookupError, FileNotFoundError):  # exited meanwhile
                pass

    def stat(self) -> dict[str, int]:
        """The kernel's throttling counters (nr_periods, nr_throttled, throttled_time in ns)."""
        return {k: int(v) for k, v in (line.split() for line in (self.group / "cpu.stat").read_text().splitlines())}

    def close(self) -> None:
        """Release every process, remove the group."""
        try:
            self.release()
        except OSError:
            pass
        remove_groups([self.group])

    def __enter__(self) -> CpuQuota:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
