"""The load generator's priority (client/priority.py): set on every thread for the block, restored after."""
from __future__ import annotations

import os
import threading

from superserve.client.priority import client_nice


def _nice_of(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def test_every_thread_takes_the_niceness_for_the_block_and_gets_its_own_back():
    before = _nice_of(0)
    target = min(before + 3, 19)  # lowering priority needs no privilege
    started, stop = threading.Event(), threading.Event()
    tids: list[int] = []

    def worker() -> None:
        tids.append(threading.get_native_id())
        started.set()
        stop.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    started.wait(5)
    try:
        with client_nice(target) as applied:
            assert applied == target
            assert _nice_of(0) == target and _nice_of(tids[0]) == target
        assert _nice_of(0) == before and _nice_of(tids[0]) == before
    finally:
        stop.set()
        t.join()


def test_none_changes_nothing():
    before = _nice_of(0)
    with client_nice(None) as applied:
        assert applied is None and _nice_of(0) == before
