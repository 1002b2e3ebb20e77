"""The live scheduler: admission, the EDF queue, the policy pump and dispatch to workers.

Whenever a request arrives or a worker frees, the policy decides on a snapshot of the queue;
its drops are answered 504 at once and its batch goes to a free worker as one ModelInfer.
Every request gets exactly one answer: a result or a typed error (errors.py)."""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from . import info
from .admission import MAX_SLO_MS, RequestParams
from .clock import Clock, MonotonicClock
from .edf_queue import EDFQueue, Pending
from .escalation import MEASURES, escalate, threshold_for
from .latency_model import LatencyModel, LatencyModelConfig, ScaledProfiles
from .latency_tracker import LatencyTracker
from .reply_margin import ReplyMargin
from .shedding import Backlog, DrainRate, peak_rows_per_ms, shed_reason
from .errors import DeadlineInfeasible, InvalidInput, Overloaded, ServeError, WorkerFailed
from .health import HealthConfig, Retry, retry_decision
from .metrics import Stats
from .policies import Batch, Policy, WorkerView
from .policies.base import drop_infeasible_head
from .profile import Profile
from .worker_pool import WorkerPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    default_slo_ms: float = 100.0
    """Latency target of requests that set no slo_ms."""
    max_slo_ms: float = MAX_SLO_MS
    """Requests asking for a longer latency target get 400."""
    queue_capacity: int = 4096
    """Queued requests beyond this get 503."""
    max_inflight_per_worker: int = 1
    """Batches sent to one Triton worker before it answers (1: the profile's latencies hold)."""
    worker_timeout_grace_ms: float = 2000.0
    """A batch still unanswered this long after its latest deadline fails with 500."""
    margin_ms: float = 10.0
    """Time reserved after each batch for what the profile does not see (the answer's way back
    through the scheduler and the client's own event loop): policies plan as if it were this much later."""
    adapt_latency: bool = True
    """Plan with the profile scaled by observed/profiled batch latency (latency_model.py)."""
    measure_margin: bool = False
    """Plan with max(margin_ms, the 95th percentile of recent reply times measured online), reply_margin.py."""
    latency_model: str = "quantile"
    """``quantile``: plan at ``latency_quantile`` of the observed/profiled ratio, per batch size
    (latency_model.py); ``ewma``: the profile scaled by a running mean of that ratio (the behaviour
    before issue 13, latency_tracker.py)."""
    latency_quantile: float = 0.99
    """The quantile of the ``quantile`` model (about the SLO attainment target)."""
    pipeline: bool = True
    """Send a second batch to a busy worker shortly before its batch is expected to end, so Triton
    does not wait for the scheduler between batches (policies that plan from ``WorkerView.free_at_ms``)."""
    pipeline_lead_ms: float = 3.0
    """How long before a worker's batch is expected to end (median estimate) the next one is sent."""
    pipeline_min_rows: int = 8
    """Pipeline only while at least this many requests wait: at low load the next batch is better
    formed when the worker frees (more requests per Triton call, less scheduler CPU per request)."""
    batch_log: str | None = None
    """Write one JSON line per finished batch here (timings, planned and observed latency)."""
    default_min_confidence: float | None = None
    """Cascade escalation for requests that set no min_confidence and whose policy sets no threshold
    (e.g. SlackFit picks the first stage, escalation runs on top); None: no escalation by default."""
    admission_shedding: bool = True
    """Refuse at arrival (503, Overloaded) a request the queue ahead of it certainly makes late (shedding.py),
    rather than queueing it until it is dropped with 504; False: the old behaviour, for comparison."""
    shed_drain: str = "peak"
    """The drain rate admission shedding assumes: ``peak`` (the peak throughput of the profile the policy plans
    with, on every worker, times ``shed_peak_fraction``) or ``measured`` (shedding.DrainRate: what the workers
    cleared under a backlog, the peak bound until enough batches are seen; an experiment, see README, Overload)."""
    shed_peak_fraction: float = 1.0
    """Admission shedding assumes the queue drains at this fraction of the profile's peak rows/ms (1: the
    optimistic bound, which never refuses what the profile could serve; below 1 it refuses earlier, at the risk
    of refusing what could have been served)."""

    def __post_init__(self):
        if not 0 < self.default_slo_ms <= self.max_slo_ms:
            raise ValueError(f"need 0 < default_slo_ms <= max_slo_ms, got {self.default_slo_ms}, {self.max_slo_ms}")
        if self.margin_ms < 0:
            raise ValueError(f"margin_ms must be >= 0, got {self.margin_ms}")
        if self.shed_drain not in ("measured", "peak"):
            raise ValueError(f"shed_drain must be measured or peak, got {self.shed_drain!r}")
        if not 0 < self.shed_peak_fraction <= 1:
            raise ValueError(f"shed_peak_fraction must be in (0, 1], got {self.shed_peak_fraction}")
        if self.default_min_confidence is not None and not 0 <= self.default_min_confidence <= 1:
            raise ValueError(f"default_min_confidence must be in [0, 1], got {self.default_min_confidence}")
        if self.latency_model not in ("quantile", "ewma"):
            raise ValueError(f"latency_model must be quantile or ewma, got {self.latency_model!r}")
        if not 0.5 <= self.latency_quantile < 1 or self.pipeline_lead_ms < 0 or self.pipeline_min_rows < 1:
            raise ValueError(f"need 0.5 <= latency_quantile < 1, pipeline_lead_ms >= 0 and pipeline_min_rows >= 1, "
                             f"got {self.latency_quantile}, {self.pipeline_lead_ms}, {self.pipeline_min_rows}")
        if self.queue_capacity < 1 or self.max_inflight_per_worker < 1:
            raise ValueError(f"queue_capacity and max_inflight_per_worker must be >= 1, got "
                             f"{self.queue_capacity}, {self.max_inflight_per_worker}")


@dataclass
class Answer:
    logits: np.ndarray
    rows: list
    """INFO per row as the worker gave it (JSON bytes from Triton, or dicts); the scheduler's fields
    below are merged in when the answer is encoded (info.py), not per row in between."""
    subnet: str
    queue_ms: float
    escalations: int = 0
    subnets: tuple = ()
    done_ms: float = 0.0
    """When the engine answered (its clock); the front end reports the reply time from here."""

    @property
    def infos(self) -> list[dict]:
        """INFO per row (docs/design.md) as dicts, with the scheduler's fields (decodes: not for the hot path)."""
        return [info.parse(r, self.queue_ms, self.escalations, self.subnets) for r in self.rows]

    def info_bytes(self) -> list[bytes]:
        """INFO of each row as the JSON bytes of the wire tensor."""
        return [info.annotate(r, self.queue_ms, self.escalations, self.subnets) for r in self.rows]


@dataclass
class _Job:
    pending: Pending
    image: np.ndarray
    future: asyncio.Future
    subnets: list[str] = field(default_factory=list)
    """Subnets that have run this request so far (cascade stages)."""
    fallback: Answer | None = None
    """An escalated request's previous answer: returned if the next stage cannot run in time."""
    attempts: int = 0
    """Dispatches of the current stage (a failed worker's batch may be retried, health.py)."""


@dataclass
class _Slot:
    """A batch in flight on a worker: its planned latency (the planning view's, at its rows) and
    median estimate, and when it is expected to end by each (ms, engine clock)."""
    planned_ms: float
    median_ms: float
    end_ms: float
    median_end_ms: float

    def started(self, now: float) -> None:
        """The batch before it answered: it runs from ``now``."""
        self.end_ms, self.median_end_ms = now + self.planned_ms, now + self.median_ms


class Engine:
    def __init__(self, cfg: EngineConfig, profile: Profile, policy: Policy, workers: list,
                 clock: Clock | None = None, stats: Stats | None = None, health: HealthConfig | None = None):
        if not workers:
            raise ValueError("the scheduler needs at least one worker")
        self.cfg, self.policy, self.workers = cfg, policy, workers
        # ``profile`` is what policies plan with: ``base_profile`` scaled by the latency model.
        self.base_profile = self.profile = profile
        self.latency = LatencyTracker()
        self.reply = ReplyMargin(cfg.margin_ms)
        """The margin policies plan with (cfg.margin_ms, or measured online with cfg.measure_margin)."""
        self.model = LatencyModel(profile.batch_sizes, LatencyModelConfig(quantile=cfg.latency_quantile))
        self._scaled = ScaledProfiles(profile)
        self._pipelining = cfg.pipeline and getattr(policy, "pipelines", False)
        self._slots: dict[int, deque] = {id(w): deque() for w in workers}
        """Per worker, its batches in flight, in the order Triton runs them."""
        self._last_done: dict[int, float] = {id(w): -1e18 for w in workers}
        self._pipe_timer: asyncio.TimerHandle | None = None
        self._running: dict[int, set] = {}
        """Batch tasks in flight per worker."""
        self._abandoned: set = set()
        """Tasks cancelled because the batch before them on their worker failed: retried, not lost."""
        self._batch_log = open(cfg.batch_log, "a", buffering=1 << 16) if cfg.batch_log else None
        self.clock = clock or MonotonicClock()
        self.stats = stats or Stats()
        self.queue = EDFQueue(cfg.queue_capacity)
        self.drain_rate = DrainRate(min_rows=max(1, profile.max_batch // 2))
        """Rows/ms the queue drains at while requests wait (admission shedding, shedding.py)."""
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count(1)
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_key: tuple | None = None
        self._tasks: set[asyncio.Task] = set()
        self.pool = WorkerPool(workers, health or HealthConfig(), self.clock, self.stats,
                               on_change=self._workers_changed)
        """Worker health, probes and hang watch; ``pool.start()`` once a loop runs (server.py)."""

    # -- admission ---------------------------------------------------------------------------
    async def infer(self, image: np.ndarray, params: RequestParams) -> Answer:
        now = self.clock.now_ms()
        p = Pending(next(self._ids), now, now + params.slo_ms, params.min_accuracy, params.subnet, len(image),
                    params.min_confidence)
        if hasattr(self.policy, "on_arrival"):  # e.g. the cascade policy's arrival-rate window
            self.policy.on_arrival(now, p.rows)
        try:
            self._admit(p, params)
        except ServeError as e:
            self._count_error(e)
            raise
        job = _Job(p, image, asyncio.get_running_loop().create_future())
        self._jobs[p.id] = job
        self.queue.push(p)
        self.stats.queue_depth = len(self.queue)
        self._pump()
        try:
            return await job.future
        except asyncio.CancelledError:  # the client went away: forget it if still queued
            if self.queue.remove([p.id]):
                self._jobs.pop(p.id, None)
                self.stats.queue_depth = len(self.queue)
            raise

    def _admit(self, p: Pending, params: RequestParams) -> None:
        if p.subnet is not None and self.profile.get(p.subnet) is None:
            raise InvalidInput(f"parameter 'subnet': {p.subnet!r} is not a profiled subnet; choose from "
                               f"{[s.name for s in self.profile.subnets]}")
        fastest = self.policy.fastest_ms(p, self.profile)
        too_late = fastest is not None and p.deadline_ms - p.arrival_ms - self.reply.margin_ms < fastest
        if too_late and self._stale_model(p.arrival_ms):
            fastest = self.policy.fastest_ms(p, self.profile)
        if fastest is None:
            best = self.profile.subnets[-1].accuracy
            raise InvalidInput(f"parameter 'min_accuracy' {p.min_accuracy} cannot be met"
                               + (f" by subnet {p.subnet!r}" if p.subnet else f" (most accurate subnet: {best})")
                               + f" under policy {self.policy.name}")
        margin = self.reply.margin_ms
        if p.deadline_ms - p.arrival_ms - margin < fastest:
            raise DeadlineInfeasible(f"slo_ms {p.deadline_ms - p.arrival_ms:g} is below the fastest admissible "
                                     f"point ({fastest:.2f} ms for {p.rows} row(s)"
                                     + (f" + {margin:g} ms margin" if margin else "")
                                     + "); dropped at once")
        if not any(w.healthy for w in self.workers):
            raise Overloaded("no Triton worker is alive")
        if len(self.queue) >= self.queue.capacity:
            raise Overloaded(f"queue full ({self.queue.capacity} requests waiting)")
        if self.cfg.admission_shedding:  # O(log n): the rows queued ahead, drained at peak throughput
            now = p.arrival_ms  # each healthy worker starts on the backlog when its batches in flight end
            free = tuple(self._free_at(w, now) or now for w in self.workers if w.healthy)
            backlog = Backlog(self.queue.rows_ahead(p.deadline_ms), free)
            measured = self.drain_rate.rows_per_ms() if self.cfg.shed_drain == "measured" else None
            reason = shed_reason(now, p.deadline_ms - margin, backlog, fastest, self._peak_rows_per_ms(), measured)
            if reason is not None:
                self.stats.shed += 1
                log.warning("request %d shed at admission: %s", p.id, reason)
                raise Overloaded(reason)

    _peak: tuple = (None, 0.0)
    """(profile, its peak rows/ms): recomputed only when the engine plans with another profile object."""

    def _peak_rows_per_ms(self) -> float:
        if self._peak[0] is not self.profile:
            self._peak = (self.profile, peak_rows_per_ms(self.profile) * self.cfg.shed_peak_fraction)
        return self._peak[1]

    def _stale_model(self, now: float) -> bool:
        """The latency model judges a request infeasible while nothing runs and nothing has for a
        second: it can only learn from batches, so it would never see the machine recover. Forget it
        (plan with the profile until new batches are seen). True if it was forgotten."""
        if self.cfg.latency_model != "quantile" or not self.model.observations or not self.cfg.adapt_latency:
            return False
        if any(self._slots[id(w)] for w in self.workers) or now - max(self._last_done.values()) < 1000.0:
            return False
        log.warning("latency model forgotten: it judged requests infeasible while no batch ran for a second")
        self.model.forget()
        self.model.observations = 0
        self.profile = self.base_profile
        self.stats.latency_factor = 1.0
        return True

    def record_rejection(self, e: ServeError) -> None:
        """Count an error raised at a front end before the request reached the engine."""
        if not getattr(e, "counted", False):
            self._count_error(e)

    def _count_error(self, e: ServeError) -> None:
        e.counted = True
        outcome = {"InvalidInput": "invalid", "ModelNotFound": "invalid", "DeadlineInfeasible": "dropped",
                   "Overloaded": "overloaded"}
        self.stats.requests[outcome.get(type(e).__name__, "error")] += 1
        if isinstance(e, DeadlineInfeasible):
            self.stats.deadline_misses += 1

    # -- the pump ----------------------------------------------------------------------------
    def _free_worker(self):
        if not self._pipelining:
            return self.pool.pick(self.cfg.max_inflight_per_worker)
        now, backlog = self.clock.now_ms(), len(self.queue) >= self.cfg.pipeline_min_rows
        return self.pool.pick(max(2, self.cfg.max_inflight_per_worker),
                              lambda w: not self._slots[id(w)] or (backlog and self._pipe_at(w) <= now))

    def _pipe_at(self, worker) -> float:
        """When the next batch may be sent to ``worker``: ``pipeline_lead_ms`` before the median end
        of its last batch in flight."""
        return self._slots[id(worker)][-1].median_end_ms - self.cfg.pipeline_lead_ms

    def _free_at(self, worker, now: float) -> float | None:
        """Expected end of ``worker``'s batches in flight (planned, at the model's quantile), or None."""
        slots = self._slots[id(worker)]
        return max(now, slots[-1].end_ms) if slots else None

    def _pump(self) -> None:
        decided = False
        while len(self.queue):
            worker = self._free_worker()
            if worker is None:
                break
            snapshot, now = self.queue.snapshot(), self._plan_now()
            t = time.perf_counter()
            free_at = self._free_at(worker, now - self.reply.margin_ms)
            view = WorkerView(id(worker), worker.inflight, getattr(worker, "loaded", None),
                              None if free_at is None else free_at + self.reply.margin_ms)
            decision = self.policy.decide(snapshot, now, self.profile, view)
            self.stats.decision_seconds.observe(time.perf_counter() - t)
            self._drop(decision.drop, now)
            if decision.batch is None:
                if free_at is None:
                    break
                decided = True  # nothing to pipeline now; retry when the worker frees
                break
            jobs = [self._jobs.pop(p.id) for p in self.queue.remove(decision.batch.requests)]
            slot = self._start_slot(worker, decision.batch, jobs, now - self.reply.margin_ms)
            # The hang rule scales the median expectation (from now: a pipelined batch waits for the one ahead),
            # not the planning quantile, which may be several times longer.
            expected = max(slot.median_ms, slot.median_end_ms - (now - self.reply.margin_ms))
            worker.inflight += 1  # now, not in the task: the next loop turn must see the worker busy
            self.stats.worker_inflight[worker.url] = worker.inflight
            task = asyncio.get_running_loop().create_task(self._run(worker, decision.batch, jobs, expected))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            on_worker = self._running.setdefault(id(worker), set())
            on_worker.add(task)
            task.add_done_callback(on_worker.discard)
        self.stats.queue_depth = len(self.queue)
        self._arm_sweep()
        if not decided:
            self._arm_pipeline()

    def _start_slot(self, worker, batch: Batch, jobs: list[_Job], now: float) -> _Slot:
        """Book ``batch`` on ``worker``: it starts when the batches before it end, and takes the
        planning view's latency at its real number of rows (the policy's point may be a larger batch)."""
        slots = self._slots[id(worker)]
        rows = sum(j.pending.rows for j in jobs)
        planned = self.profile.get(batch.subnet).at(rows)
        start = max(now, slots[-1].end_ms) if slots else now
        start_median = max(now, slots[-1].median_end_ms) if slots else now
        slot = _Slot(planned, self._median_ms(batch.subnet, rows), start + planned,
                     start_median + self._median_ms(batch.subnet, rows))
        slots.append(slot)
        return slot

    def _median_ms(self, subnet: str, rows: int) -> float:
        base = self.base_profile.get(subnet).at(rows)
        if self.cfg.latency_model == "ewma" or not self.cfg.adapt_latency:
            return base * (self.latency.factor if self.cfg.adapt_latency else 1.0)
        return base * self.model.median_factor(rows)

    def _arm_pipeline(self) -> None:
        """While every worker is busy, wake up when the first may take a pipelined batch."""
        if self._pipe_timer:
            self._pipe_timer.cancel()
            self._pipe_timer = None
        if not self._pipelining or len(self.queue) < self.cfg.pipeline_min_rows:
            return
        times = [self._pipe_at(w) for w in self.workers
                 if w.healthy and len(self._slots[id(w)]) == 1 and w.inflight < max(2, self.cfg.max_inflight_per_worker)]
        if not times:
            return
        delay_ms = max(0.0, min(times) - self.clock.now_ms()) + 0.05
        self._pipe_timer = asyncio.get_running_loop().call_later(delay_ms / 1000, self._on_pipe_timer)

    def _on_pipe_timer(self) -> None:
        self._pipe_timer = None
        self._pump()

    def _plan_now(self) -> float:
        """The time policies plan with: now plus the reply margin."""
        return self.clock.now_ms() + self.reply.margin_ms

    def _drop(self, ids, now: float) -> None:
        for p in self.queue.remove(ids):
            job = self._jobs.pop(p.id)
            real_now = now - self.reply.margin_ms
            if self._answer_fallback(job, real_now):  # an escalation that cannot run in time
                continue
            err = DeadlineInfeasible(f"deadline cannot be met: {p.deadline_ms - real_now:.2f} ms of slack left, less "
                                     f"than the fastest admissible subnet needs; dropped after "
                                     f"{real_now - p.arrival_ms:.1f} ms in the queue")
            self._count_error(err)  # marks it counted, so the front end does not count it again
            if not job.future.done():
                job.future.set_exception(err)

    def _arm_sweep(self) -> None:
        """While every worker is busy, drop queued requests at the moment they become infeasible
        rather than when a worker frees."""
        head = self.queue.head()
        key = None if head is None else (head.id, head.deadline_ms, id(self.profile))
        if self._sweep and key == self._sweep_key:
            return  # same head, same profile: the armed timer is still right (no timer churn per request)
        if self._sweep:
            self._sweep.cancel()
            self._sweep = None
        self._sweep_key = key
        if head is None or not getattr(self.policy, "early_drop", True):
            return
        fastest = self.policy.fastest_ms(head, self.profile) or 0.0
        delay_ms = max(0.0, head.deadline_ms - fastest - self._plan_now()) + 0.05
        self._sweep = asyncio.get_running_loop().call_later(delay_ms / 1000, self._on_sweep)

    def _on_sweep(self) -> None:
        self._sweep = None
        now = self._plan_now()
        dropped, _ = drop_infeasible_head(self.policy, self.queue.snapshot(), now, self.profile)
        self._drop(dropped, now)
        self._pump()

    # -- dispatch ----------------------------------------------------------------------------
    async def _run(self, worker, batch: Batch, jobs: list[_Job], expected_ms: float | None = None) -> None:
        """Run one batch on ``worker`` (whose inflight count _pump already raised)."""
        dispatched = self.clock.now_ms()
        images = np.concatenate([j.image for j in jobs]) if len(jobs) > 1 else jobs[0].image
        self.stats.batch_size.observe(len(images))
        timeout_s = (max(j.pending.deadline_ms for j in jobs) - dispatched + self.cfg.worker_timeout_grace_ms) / 1000
        for j in jobs:
            j.attempts += 1
        try:
            try:
                logits, infos = await self.pool.call(worker, worker.infer(images, batch.subnet, timeout_s),
                                                     expected_ms or batch.expected_ms)
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me not in self._abandoned:
                    raise
                self._abandoned.discard(me)
                self._retry_or_fail(jobs, WorkerFailed(f"worker {worker.url}: abandoned with the batch ahead of it"))
                return
            except Exception as e:  # every request of the batch is retried or gets an error, none is lost
                err = e if isinstance(e, ServeError) else WorkerFailed(f"worker {worker.url}: {e}")
                log.warning("batch of %d on %s failed: %s", len(jobs), batch.subnet, err)
                if isinstance(err, WorkerFailed):  # a pipelined batch behind it would wait on a dead worker
                    for t in self._running.get(id(worker), set()) - {asyncio.current_task()}:
                        self._abandoned.add(t)
                        t.cancel()
                self._retry_or_fail(jobs, err)
                return
            finally:
                worker.inflight -= 1
                self.stats.worker_inflight[worker.url] = worker.inflight
                done = self.clock.now_ms()
                started = max(dispatched, self._last_done[id(worker)])
                slot = self._end_slot(worker, done)
            try:  # a bug anywhere below must still answer every request of the batch, once
                self.drain_rate.observe(done, len(images), len(self.queue) > 0)
                # A pipelined batch starts when the one before it ends: its service time is measured from there.
                self._track_latency(worker, batch.subnet, len(images), done - started)
                self._log_batch(worker, batch, jobs, dispatched, started, done, infos,
                                slot.planned_ms if slot else batch.expected_ms)
                if hasattr(self.policy, "observe"):
                    self.policy.observe(batch, done - dispatched,
                                        min(j.pending.deadline_ms - j.pending.arrival_ms for j in jobs))
                self._answer_or_escalate(batch.subnet, jobs, logits, infos, dispatched, done)
            except Exception as e:  # a bug here must still answer every request, once
                log.exception("answering a batch of %d on %s failed", len(jobs), batch.subnet)
                self._fail_unanswered(jobs, WorkerFailed(f"scheduler error while answering: {e}"))
        finally:  # after escalations are queued, so the worker just freed can take them
            self._pump()

    def _answer_or_escalate(self, subnet: str, jobs: list[_Job], logits, infos, dispatched: float, done: float) -> None:
        """Each request of a finished batch is answered, or re-queued for the next cascade stage
        (escalation.py) with this answer kept as its fallback."""
        ran = self.base_profile.get(subnet)
        plan_now, measure = self._plan_now(), MEASURES[getattr(self.policy, "confidence_measure", "max_softmax")]
        row = 0
        for j in jobs:
            n = j.pending.rows
            j.subnets.append(subnet)
            answer = Answer(logits[row:row + n], infos[row:row + n], subnet, round(dispatched - j.pending.arrival_ms, 3),
                            len(j.subnets) - 1, tuple(j.subnets))
            row += n
            threshold = threshold_for(j.pending, subnet, self.policy, self.cfg.default_min_confidence)
            conf = min((i.get(measure, 1.0) for i in answer.infos), default=1.0) if threshold is not None else 1.0
            nxt = escalate(j.pending, ran.accuracy, conf, threshold, plan_now, self.policy, self.profile)
            if nxt is not None and len(self.queue) < self.queue.capacity and not j.future.done():
                j.pending, j.fallback, j.attempts = nxt, answer, 0
                self._jobs[nxt.id] = j
                self.queue.push(nxt)
                self.stats.escalations += 1
                continue
            self._finish(j, answer, done)

    def _answer_fallback(self, j: _Job, now: float) -> bool:
        """An escalated request that cannot go on (no time, no worker) gets its previous stage's answer."""
        if j.fallback is None:
            return False
        self.stats.escalation_fallbacks += 1
        self._finish(j, j.fallback, now)
        return True

    def _fail_unanswered(self, jobs: list[_Job], err: ServeError) -> None:
        for j in jobs:
            if not j.future.done():
                self.queue.remove([j.pending.id])
                self._jobs.pop(j.pending.id, None)
                self._count_error(err)
                j.future.set_exception(err)

    def _finish(self, j: _Job, answer: Answer, done: float) -> None:
        """Answer ``j`` with ``answer`` (its last stage's result), counted once."""
        p, subnet = j.pending, answer.subnet
        late = done > p.deadline_ms
        self.stats.requests["late" if late else "ok"] += 1
        if late:
            self.stats.deadline_misses += 1
        else:
            self.stats.served_accuracy_sum += self.base_profile.get(subnet).accuracy
        self.stats.subnet_selected[subnet] += 1
        self.stats.queue_wait_seconds.observe(answer.queue_ms / 1000)
        self.stats.request_latency_seconds.observe((done - p.arrival_ms) / 1000)
        answer.done_ms = self.clock.now_ms()
        if not j.future.done():
            j.future.set_result(answer)

    def observe_reply(self, reply_ms: float) -> None:
        """A front end encoded an answer ``reply_ms`` after the engine had it."""
        self.stats.reply_seconds.observe(reply_ms / 1000)
        if self.cfg.measure_margin:
            self.reply.observe(reply_ms)
            self.stats.reply_margin_ms = self.reply.margin_ms

    def _workers_changed(self) -> None:
        """A worker left or rejoined the rotation. With none left, queued requests get 503 now rather
        than 504 at their deadline; otherwise the queue is re-planned on the workers there are."""
        if not self.pool.any_healthy() and len(self.queue):
            err = Overloaded("no Triton worker is alive")
            for p in self.queue.remove([p.id for p in self.queue.snapshot()]):
                job = self._jobs.pop(p.id)
                if self._answer_fallback(job, self.clock.now_ms()):
                    continue
                self._count_error(err)
                if not job.future.done():
                    job.future.set_exception(err)
            self.stats.queue_depth = 0
        self._pump()

    def _retry_or_fail(self, jobs: list[_Job], err: ServeError) -> None:
        """After a failed batch: put back in the queue the requests another worker may still serve in
        time (health.retry_decision), answer the others with ``err``, or Overloaded if no worker is left.
        The failed call is over (failed, or cancelled as hung), so nothing answers these jobs twice."""
        plan_now, any_healthy, requeued = self._plan_now(), self.pool.any_healthy(), 0
        for j in jobs:
            action = Retry.FAIL
            if not isinstance(err, InvalidInput) and not j.future.done():
                action = retry_decision(self.pool.cfg, j.attempts, j.pending.deadline_ms, plan_now,
                                        self.policy.fastest_ms(j.pending, self.profile), any_healthy)
            if action is Retry.REQUEUE and len(self.queue) < self.queue.capacity:
                self._jobs[j.pending.id] = j
                self.queue.push(j.pending)
                requeued += 1
                continue
            if self._answer_fallback(j, self.clock.now_ms()):
                continue
            e = Overloaded(f"no Triton worker is alive ({err})") if action is Retry.OVERLOADED else err
            self._count_error(e)
            if not j.future.done():
                j.future.set_exception(e)
        if requeued:
            self.stats.batch_retries += 1
            self.stats.request_retries += requeued
            log.warning("retrying %d of %d requests on another worker (%s)", requeued, len(jobs), err)

    def _end_slot(self, worker, done: float):
        """A batch of ``worker`` answered (in order: one Triton instance runs them one after another);
        the next in flight, if any, started running now. Returns the answered batch's booking."""
        self._last_done[id(worker)] = done
        slots = self._slots[id(worker)]
        slot = slots.popleft() if slots else None
        if slots:
            slots[0].started(done)
        return slot

    def _track_latency(self, worker, subnet: str, rows: int, observed_ms: float) -> None:
        if getattr(worker, "last_call_loaded", False):
            self.stats.model_loads += 1
            self.stats.model_load_seconds_sum += worker.load_events[-1].seconds
            return  # a call that first loaded a model (INFaaS variants) says nothing about forward speed
        if not self.cfg.adapt_latency:
            return
        profiled = self.base_profile.get(subnet).at(rows)
        if self.cfg.latency_model == "ewma":
            self.latency.observe(observed_ms, profiled)
            f = self.latency.quantised
            self.profile = self._scaled.get({b: f for b in self.base_profile.batch_sizes})
            self.stats.latency_factor = f
            return
        self.model.observe(rows, observed_ms, profiled)
        self.profile = self._scaled.get(self.model.factors())
        self.stats.latency_factor = self.model.factor(self.base_profile.max_batch)

    def _log_batch(self, worker, batch: Batch, jobs: list[_Job], dispatched: float, started: float, done: float,
                   infos: list, planned_ms: float) -> None:
        if self._batch_log is None:
            return
        rows = sum(j.pending.rows for j in jobs)
        first = infos[0] if len(infos) else None  # Triton's INFO row: bytes on the hot path (info.py), or a dict
        first = json.loads(first) if isinstance(first, (bytes, str)) else first
        self._batch_log.write(json.dumps({
            "worker": worker.url, "subnet": batch.subnet, "rows": rows, "dispatched": round(dispatched, 3),
            "started": round(started, 3), "done": round(done, 3), "planned_ms": round(planned_ms, 3),
            "profiled_ms": round(self.base_profile.get(batch.subnet).at(rows), 3),
            "infer_ms": first.get("infer_ms") if first else None,
            "first_arrival": round(min(j.pending.arrival_ms for j in jobs), 3),
            "min_deadline": round(min(j.pending.deadline_ms for j in jobs), 3),
            "factor": self.stats.latency_factor}) + "\n")

    async def close(self) -> None:
        if self._sweep:
            self._sweep.cancel()
        if self._pipe_timer:
            self._pipe_timer.cancel()
        if self._batch_log is not None:
            self._batch_log.close()
            self._batch_log = None
        await self.pool.close()
        for t in list(self._tasks):
            t.cancel()
        for w in self.workers:
            await w.close()
