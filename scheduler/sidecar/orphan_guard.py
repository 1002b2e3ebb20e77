"""Stop a Triton when the process that started it dies without stopping it.

A Ray actor that is killed (its process, or its node) cannot stop the Triton it started, and the launcher runs
Triton in a process group of its own, so it would outlive the actor and keep serving at an address nobody
uses, beside the Triton of the restarted actor. The actor therefore starts this guard, a small process that
checks every 0.2 s whether its parent (the actor) is still the same process: if not, it kills the Triton's
process group (the server and its Python backend stubs). It exits by itself once that group is gone. The
shared memory such a Triton leaves is removed by the next launcher start on the node (shm_regions.py).

``python -m superserve.scheduler.sidecar.orphan_guard PGID``"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def guard(pgid: int, period_s: float = 0.2) -> int:
    parent = os.getppid()
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return 0  # stopped by its owner: nothing left to guard
        if os.getppid() != parent:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return 0
        time.sleep(period_s)


def start(pgid: int) -> subprocess.Popen:
    """Start a guard for process group ``pgid`` as a child of this process (in a session of its own, so a signal
    to this process's group does not reach it first)."""
    return subprocess.Popen([sys.executable, "-m", "superserve.scheduler.sidecar.orphan_guard", str(pgid)],
                            stdin=subprocess.DEVNULL, start_new_session=True)


if __name__ == "__main__":
    sys.exit(guard(int(sys.argv[1])))
