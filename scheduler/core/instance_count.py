"""How many supernet instances one Triton worker runs (issue 18 item 3: model-level scaling inside a worker).

A pure function of the profile's batch-latency curve of the most accurate subnet and the worker's resources; it
returns the count and the reason, which ``serve`` logs; the launcher writes the count into the linked
repository's copy of the model config (``TritonConfig.instances``).

Why these rules. The sidecar keeps at most two batches in flight per worker (pipelining), so instances beyond
two never run at once. A second instance is a second backend process that runs a batch *beside* the first:

- **CPU.** It needs a core of its own (each instance runs ``threads`` torch threads). Given one, what it adds
  depends on the curve: with the queue split into two half batches run in parallel instead of one whole batch
  after the other, throughput rises by ``lat(b) / lat(b/2)`` (the *split gain*, averaged over the profiled
  batch sizes). A curve linear in the batch size gives ~2; a flat one (per-call overhead dominating) gives ~1: one
  instance already serves a bigger batch in about the same time, and the sidecar batches. Where the sidecar and
  its clients run on the worker's host, one core is theirs: on this 2-core machine that leaves one core for
  instances, and ``python -m superserve.client.instances_bench`` measured 2 instances at 0.85x (batch 1) and
  0.93x (batch 8) the throughput of one (results/instances-cpu.json): ``auto`` picks 1 here.
- **GPU.** One instance per GPU alternates host-side work (the per-call overhead: the intercept ``a`` of a
  linear fit ``lat = a + s*b``) with device work (``s*b``); a second instance overlaps them, which gives up to
  ``(a + s*b) / max(a, s*b)``, at most 2 when both halves are equal, ~1 when either dominates. It needs two free
  host cores for the two backend processes. Not measured here (no GPU): a rule from the same arithmetic.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .profile import Profile

MIN_GAIN = 1.2
"""Smallest predicted throughput gain worth a second instance (another backend process: memory, a warm-up,
and on a busy host some contention the arithmetic does not see)."""
MAX_IN_FLIGHT = 2
"""Batches the sidecar keeps in flight per worker (the life cycle's pipelining)."""


@dataclass(frozen=True)
class WorkerResources:
    cores: float
    """CPU cores the worker's processes may use (its quota, its share of the host, or Ray's num_cpus)."""
    gpus: int = 0
    """GPUs of the worker (a GPU instance group counts instances per GPU)."""
    reserved_cores: float = 0.0
    """Of ``cores``, what the sidecar and clients on the same host take (1 for local workers, 0 for a worker with
    a quota or node of its own)."""
    threads: int = 1
    """Torch intra-op threads per instance (the model config's torch_threads)."""

    def __post_init__(self) -> None:
        if self.cores <= 0 or self.gpus < 0 or not 0 <= self.reserved_cores or self.threads < 1:
            raise ValueError(f"worker resources need cores > 0, gpus >= 0, reserved_cores >= 0 and threads >= 1, "
                             f"got {self}")


@dataclass(frozen=True)
class InstanceChoice:
    count: int
    reason: str
    gain: float | None = None
    """The predicted throughput of 2 instances over 1 (None: not computed, e.g. no free core)."""


def split_gain(curve: Mapping[int, float]) -> float:
    """Mean over the profiled batch sizes b (with b/2 profiled too) of lat(b) / lat(b/2): the throughput of two
    half batches run in parallel over one whole batch. ~2 for a curve linear in b, ~1 for a flat one."""
    ratios = [curve[b] / curve[b // 2] for b in curve if b % 2 == 0 and b // 2 in curve and curve[b // 2] > 0]
    if not ratios:
        raise ValueError(f"the latency curve needs two batch sizes b and b/2, got {sorted(curve)}")
    return sum(ratios) / len(ratios)


def overlap_gain(curve: Mapping[int, float]) -> float:
    """GPU: (a + s*B) / max(a, s*B) at the largest profiled batch B, from a least-squares line lat = a + s*b."""
    bs = sorted(curve)
    if len(bs) < 2:
        raise ValueError(f"the latency curve needs two batch sizes, got {bs}")
    mb, ml = sum(bs) / len(bs), sum(curve[b] for b in bs) / len(bs)
    s = sum((b - mb) * (curve[b] - ml) for b in bs) / sum((b - mb) ** 2 for b in bs)
    s = max(s, 0.0)
    a = max(ml - s * mb, 0.0)
    big = bs[-1]
    host, device = a, s * big
    return (host + device) / max(host, device) if max(host, device) > 0 else 1.0


def choose(curve: Mapping[int, float], res: WorkerResources, min_gain: float = MIN_GAIN,
           max_in_flight: int = MAX_IN_FLIGHT) -> InstanceChoice:
    """Instances of the supernet per Triton for ``curve`` (batch size -> ms, one instance, the most accurate
    subnet) on a worker with ``res``."""
    free = res.cores - res.reserved_cores
    share = f"{res.cores:g} core(s)" + (f" less {res.reserved_cores:g} for the sidecar and clients"
                                         if res.reserved_cores else "")
    if res.gpus:
        g = overlap_gain(curve)
        if free < 2 * res.threads:
            return InstanceChoice(1, f"1 per GPU: {share} leave too few cores for two backend processes", g)
        if g < min_gain:
            return InstanceChoice(1, f"1 per GPU: host-side and device time per batch are unbalanced, a second "
                                  f"instance would overlap them for x{g:.2f} (< {min_gain:g})", g)
        return InstanceChoice(2, f"2 per GPU: a second instance overlaps one batch's host-side work with the "
                              f"other's device time, x{g:.2f} predicted from the profile's curve", g)
    slots = math.floor(free / res.threads + 1e-9)
    if slots < 2:
        return InstanceChoice(1, f"1: {share} leave {max(free, 0):g} for instances at {res.threads} torch "
                              "thread(s) each; a second instance would only share the first one's core")
    g = split_gain(curve)
    if g < min_gain:
        return InstanceChoice(1, f"1: the batch latency curve is nearly flat (two half batches in parallel would "
                              f"serve x{g:.2f} of one whole batch, < {min_gain:g}); the sidecar's bigger batches "
                              "use the instance instead", g)
    n = min(slots, max_in_flight)
    return InstanceChoice(n, f"{n}: {share} give {slots} instance slot(s), and the batch latency curve is near "
                          f"linear (two half batches in parallel serve x{g:.2f} of one whole batch); capped at the "
                          f"{max_in_flight} batches the sidecar keeps in flight per worker", g)


def curve_of(profile: Profile) -> dict[int, float]:
    """The most accurate subnet's latency per batch size from a scheduler Profile."""
    best = profile.subnets[-1]
    return {b: best.at(b) for b in profile.batch_sizes}
