"""The load generator's CPU priority: a client on a host of its own, emulated on a shared one.

On an oversubscribed host (``bench --noise 1.5`` on 2 cores) the load generator, a Python process like the
sidecar, is starved too: it sends late and reads answers late (send lag p99 120-350 ms was measured), and both
count against every policy as misses that no server could avoid. Real clients run elsewhere. ``bench
--client-nice N`` runs the open-loop stream at niceness N (negative: ahead of the servers and the co-tenant, which
stay at their own) for the measured part of each run only, and restores the old value after, so nothing started
later inherits it. Raising priority needs CAP_SYS_NICE (root); without it the run goes on at the normal priority
and the results file says so.

Linux keeps a niceness per thread: every thread of the process is set (gRPC's own threads included), and threads
started inside the block inherit the value of the thread that starts them.
"""
from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger(__name__)


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


@contextlib.contextmanager
def client_nice(nice: int | None):
    """Run the block with every thread of this process at niceness ``nice`` (None: unchanged). Yields what
    was applied: ``nice``, or None when not asked or not permitted."""
    if nice is None:
        yield None
        return
    old = {}
    for t in _threads():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended since the listing
            old[t] = os.getpriority(os.PRIO_PROCESS, t)
    applied: int | None = nice
    try:
        for t in old:
            with contextlib.suppress(ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, t, nice)
    except PermissionError:
        applied = None
        log.warning("--client-nice %d not permitted (needs CAP_SYS_NICE): the load generator runs at its normal "
                    "priority", nice)
    try:
        yield applied
    finally:
        for t in _threads():
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, t, old.get(t, old.get(os.getpid(), 0)))
