"""A reproducible co-tenant: processes that burn ``F`` cores between them, duty-cycled, from a seed.

``superserve bench --noise F`` runs one for each policy's run (warm-up and measurement), started
the same way with the same seed, so every policy meets the same pressure: "a busy machine" that
anyone can reproduce. Each cycle lasts a random 20-120 ms (seeded); a process spins for its share of
it and sleeps the rest, so over any second it uses about that share of a core, in bursts like a real
neighbour's. ``F`` above 1 is split evenly over ceil(F) processes (seeds ``seed``, ``seed + 1``, ...):
``--noise 1.5`` on a 2-core host is an oversubscribed machine, the case where the sidecar's single
Python thread competes with everything else (issue 13)."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np

MIN_CYCLE_MS, MAX_CYCLE_MS = 20.0, 120.0


def cycles(fraction: float, seed: int, n: int) -> np.ndarray:
    """``n`` (busy_ms, idle_ms) pairs of the co-tenant's duty cycle."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"noise fraction must be in [0, 1], got {fraction}")
    period = np.random.default_rng(seed).uniform(MIN_CYCLE_MS, MAX_CYCLE_MS, n)
    return np.stack([period * fraction, period * (1 - fraction)], axis=1)


def burn(fraction: float, seed: int, seconds: float) -> None:
    """Spin and sleep per ``cycles`` for ``seconds`` (the co-tenant's body)."""
    stop = time.perf_counter() + seconds
    for busy_ms, idle_ms in cycles(fraction, seed, int(seconds * 1000 / MIN_CYCLE_MS) + 1):
        t = time.perf_counter()
        if t >= stop:
            return
        x = 0
        while time.perf_counter() - t < busy_ms / 1000:
            x += 1
        if idle_ms > 0:
            time.sleep(idle_ms / 1000)


def shares(cores: float) -> list[float]:
    """The fraction of a core each co-tenant process burns: ``cores`` split evenly over ceil(cores) processes."""
    limit = os.cpu_count() or 1
    if not 0 <= cores <= limit:
        raise ValueError(f"noise must be in [0, {limit}] cores (this host's), got {cores}")
    n = math.ceil(cores)
    return [cores / n] * n if n else []


@contextlib.contextmanager
def cotenant(cores: float, seed: int, max_seconds: float = 3600.0):
    """Run the co-tenant (``cores`` of CPU, ``shares``) for the duration of the ``with`` block; yields its
    processes (none if ``cores`` is 0)."""
    procs = [subprocess.Popen([sys.executable, "-m", "superserve.client.noise", "--fraction", str(f),
                               "--seed", str(seed + i), "--seconds", str(max_seconds)], start_new_session=True)
             for i, f in enumerate(shares(cores))]
    try:
        yield procs
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--fraction", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=3600.0)
    a = p.parse_args(argv)
    burn(a.fraction, a.seed, a.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
