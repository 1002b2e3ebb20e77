"""The autoscaler's clock: once a second, a sample of the engine's counters (autoscale.Sample), the policy's
decision on the window (autoscale.decide), and the target handed to the fleet. Every change of target is
logged with its reason and counted in ``sched_scaling_decisions_total{direction,reason}``.

With several served models (``serve --models``) the sample is built per model (its requests answered in time,
its share of the rows dispatched, its most accurate subnet's accuracy and cost) and combined into one
(autoscale.combined_sample: demand adds up, the accuracy gap is weighted by each model's requests). The rows are
the engine's count, as with one model; only their split over the models comes from the fleet's workers, which
count the rows of each call per model (``split_rows``)."""
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


def split_rows(total: int, shares: dict[str, int], default: str) -> dict[str, int]:
    """``total`` rows (the engine's count of rows dispatched in the interval) split over the models in proportion
    to ``shares`` (rows of each model's calls, counted by the fleet's workers; they also count warm-up calls, which
    the engine does not dispatch, so they give the split, not the total). With one model, or no share seen, all
    go to ``default``. Largest remainders, so the parts add up to ``total``."""
    seen = sum(max(v, 0) for v in shares.values())
    out = {m: 0 for m in shares}
    if len(shares) == 1 or seen <= 0:
        out[default] = total
        return out
    exact = {m: total * max(v, 0) / seen for m, v in shares.items()}
    out = {m: int(x) for m, x in exact.items()}
    for m in sorted(exact, key=lambda m: exact[m] - out[m], reverse=True)[:total - sum(out.values())]:
        out[m] += 1
    return out


class ScalingLoop:
    def __init__(self, cfg: AutoscaleConfig, fleet, engine, interval_s: float = 1.0):
        self.cfg, self.fleet, self.engine, self.interval_s = cfg, fleet, engine, interval_s
        self.window: list[Sample] = []
        self._last = None
        self._task: asyncio.Task | None = None

    def _models(self) -> list:
        """The served models' planning states (lifecycle.ServedModel), the default first."""
        return list(self.engine.lifecycle.models.values())

    def _counters(self) -> tuple[dict[str, int], int, float, float, dict[str, int]]:
        """Cumulative: requests answered in time per model, requests missed, the served accuracy's sum, the rows
        dispatched, and the rows of each model's calls the fleet's workers counted (fleet.rows)."""
        s = self.engine.stats
        names = [m.name for m in self._models()]
        return ({n: s.model_requests[(n, "ok")] for n in names}, sum(s.requests[o] for o in MISSED),
                s.served_accuracy_sum, s.batch_size.total, {n: self.fleet.rows[n] for n in names})

    def sample(self) -> Sample:
        """The interval since the last sample, read from the engine's counters (its clock)."""
        now = self.engine.clock.now_ms()
        ok, missed, acc, rows, meter = self._counters()
        last = self._last or (now - self.interval_s * 1000, ok, missed, acc, rows, meter)
        self._last = (now, ok, missed, acc, rows, meter)
        models = self._models()
        split = split_rows(int(rows - last[4]), {m.name: meter[m.name] - last[5].get(m.name, 0) for m in models},
                           models[0].name)
        loads = [ModelLoad(ok=ok[m.name] - last[1].get(m.name, 0), rows=split[m.name],
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
