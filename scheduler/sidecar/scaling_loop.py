"""The autoscaler's clock: once a second, a sample of the engine's counters (autoscale.Sample), the policy's
decision on the window (autoscale.decide), and the target handed to the fleet. Every change of target is
logged with its reason and counted in ``sched_scaling_decisions_total{direction,reason}``.

With several served models (``serve --models``) the sample is built per model (its requests answered in time,
the rows the fleet's workers ran of it, its most accurate subnet's accuracy and cost) and combined into one
(autoscale.combined_sample: demand adds up, the accuracy gap is weighted by each model's requests)."""
from __future__ import annotations

import asyncio
import logging

from ..core.autoscale import AutoscaleConfig, ModelLoad, Sample, combined_sample, decide

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

    def _models(self) -> list:
        """The served models' planning states (lifecycle.ServedModel), the default first."""
        return list(self.engine.lifecycle.models.values())

    def _counters(self) -> tuple[dict[str, int], int, float, dict[str, int]]:
        """Cumulative: requests answered in time per model, requests missed, the served accuracy's sum, and the
        rows the fleet's workers ran per model (fleet.rows: the rows of every batch call, whichever worker)."""
        s = self.engine.stats
        names = [m.name for m in self._models()]
        return ({n: s.model_requests[(n, "ok")] for n in names}, sum(s.requests[o] for o in MISSED),
                s.served_accuracy_sum, {n: self.fleet.rows[n] for n in names})

    def sample(self) -> Sample:
        """The interval since the last sample, read from the engine's counters (its clock)."""
        now = self.engine.clock.now_ms()
        ok, missed, acc, rows = self._counters()
        last = self._last or (now - self.interval_s * 1000, ok, missed, acc, rows)
        self._last = (now, ok, missed, acc, rows)
        loads = [ModelLoad(ok=ok[m.name] - last[1].get(m.name, 0), rows=rows[m.name] - last[4].get(m.name, 0),
                           best_accuracy=m.base_profile.subnets[-1].accuracy,
                           # the profile the model plans with (scaled by its observed latency)
                           best_cost_ms=best_cost_ms(m.profile)) for m in self._models()]
        return combined_sample(now, now - last[0], self.fleet.target, self.fleet.actual, missed=missed - last[2],
                               accuracy_sum=acc - last[3], loads=loads)

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
