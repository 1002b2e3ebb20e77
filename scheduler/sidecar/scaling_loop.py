"""The autoscaler's clock: once a second, a sample of the engine's counters (autoscale.Sample), the policy's
decision on the window (autoscale.decide), and the target handed to the fleet. Every change of target is
logged with its reason and counted in ``sched_scaling_decisions_total{direction,reason}``."""
from __future__ import annotations

import asyncio
import logging

from ..core.autoscale import AutoscaleConfig, Sample, decide

log = logging.getLogger(__name__)

MISSED = ("late", "dropped", "overloaded", "error")


def best_cost_ms(profile) -> float:
    """Per-row time of the most accurate subnet at its most efficient batch size."""
    best = profile.subnets[-1]
    return min(best.at(b) / b for b in profile.batch_sizes)


class ScalingLoop:
    def __init__(self, cfg: AutoscaleConfig, fleet, engine, interval_s: float = 1.0):
        self.cfg, self.fleet, self.engine, self.interval_s = cfg, fleet, engine, interval_s
        self.window: list[Sample] = []
        self._last = None
        self._task: asyncio.Task | None = None

    def _counters(self) -> tuple[int, int, float, float]:
        s = self.engine.stats
        return s.requests["ok"], sum(s.requests[o] for o in MISSED), s.served_accuracy_sum, s.batch_size.total

    def sample(self) -> Sample:
        """The interval since the last sample, read from the engine's counters (its clock)."""
        now = self.engine.clock.now_ms()
        ok, missed, acc, rows = self._counters()
        last = self._last or (now - self.interval_s * 1000, ok, missed, acc, rows)
        self._last = (now, ok, missed, acc, rows)
        profile = self.engine.profile  # the profile the engine plans with (scaled by observed latency)
        return Sample(now, now - last[0], self.fleet.target, self.fleet.actual, ok=ok - last[1],
                      missed=missed - last[2], accuracy_sum=acc - last[3], rows=int(rows - last[4]),
                      best_accuracy=self.engine.base_profile.subnets[-1].accuracy, best_cost_ms=best_cost_ms(profile))

    def step(self) -> None:
        s = self.sample()
        self.window.append(s)
        while self.window and self.window[0].t_ms < s.t_ms - self.cfg.memory_s * 1000:
            self.window.pop(0)
        stats = self.engine.stats
        stats.worker_demand = s.demand
        d = decide(self.window, s.t_ms, self.cfg)
        if d.target != self.fleet.target:
            stats.scaling_decisions[(d.direction, d.kind)] += 1
            log.info("autoscale %s %d -> %d workers: %s", d.direction, self.fleet.target, d.target, d.reason)
            self.fleet.set_target(d.target)
        elif d.reason:
            log.debug("autoscale hold at %d: %s", d.target, d.reason)
        self.fleet.publish()

    async def run(self) -> None:
        self._last = None
        self.sample()  # the first interval starts now
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the autoscaler must not die of one bad sample
                log.exception("autoscale step failed")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
