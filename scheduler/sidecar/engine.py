"""The live scheduler: the request life cycle (lifecycle.py) driven by asyncio.

The life cycle decides (admission, drops, batches, escalations, retries); this module keeps only what
needs an event loop: one future per request, one task per batch sent to a worker (through the worker
pool, worker_pool.py), and the two timers the life cycle asks for (the deadline sweep and pipelining).
Every request gets exactly one answer: a result or a typed error (errors.py)."""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import numpy as np

from ..core import info
from ..core import latency_view
from ..core.admission import DEFAULT_SLO_MS, MAX_SLO_MS, RequestParams
from ..core.clock import Clock, MonotonicClock
from ..core.errors import ServeError, WorkerFailed
from ..core.escalation import MEASURES
from ..core.health import HealthConfig
from ..core.latency_model import LatencyModelConfig
from ..core.lifecycle import Dispatch, Lifecycle, LifecycleConfig, ModelSpec, Resolution, Step
from ..core.profile import Profile
from ..core.roster import Roster
from ..core.stats import Stats
from ..policies import Policy
from .triton_worker import Worker
from .worker_pool import WorkerPool

log = logging.getLogger(__name__)


_LIFECYCLE = LifecycleConfig()
"""The request life cycle's defaults (core/lifecycle.py), which are this configuration's: written once, there."""


@dataclass(frozen=True)
class EngineConfig:
    """The live engine's settings; ``superserve serve``'s options default to these (commands/serving.py). Those of
    the request life cycle take their defaults from LifecycleConfig's, so serve, bench and simulate share them."""

    default_slo_ms: float = DEFAULT_SLO_MS
    """Latency target of requests that set no slo_ms."""
    max_slo_ms: float = MAX_SLO_MS
    """Requests asking for a longer latency target get 400."""
    queue_capacity: int = _LIFECYCLE.queue_capacity
    """Queued requests beyond this get 503."""
    max_inflight_per_worker: int = _LIFECYCLE.max_inflight_per_worker
    """Batches sent to one Triton worker before it answers (1: the profile's latencies hold)."""
    worker_timeout_grace_ms: float = 2000.0
    """A batch still unanswered this long after its latest deadline fails with 500."""
    margin_ms: float = _LIFECYCLE.margin_ms
    """Time reserved after each batch for what the profile does not see (the answer's way back
    through the scheduler and the client's own event loop): policies plan as if it were this much later."""
    adapt_latency: bool = _LIFECYCLE.latency is not None
    """Plan with the profile scaled by observed/profiled batch latency (core/latency_model.py)."""
    measure_margin: bool = False
    """Plan with max(margin_ms, the 95th percentile of recent reply times plus that of the event loop's lag, both
    measured online), core/reply_margin.py."""
    latency_model: str = _LIFECYCLE.latency_kind
    """``affine``: observed = scale x profiled + offset, planned with ``latency_quantile`` of the residual
    in ms (core/latency_affine.py); ``quantile``: plan at ``latency_quantile`` of the observed/profiled ratio,
    per batch size (core/latency_model.py); ``ewma``: the profile scaled by a running mean of that ratio (the
    behaviour before issue 13, core/latency_tracker.py); ``off``: the profile as measured (core/latency_view.py)."""
    latency_quantile: float = (_LIFECYCLE.latency or LatencyModelConfig()).quantile
    """The quantile of the ``quantile`` model (about the SLO attainment target)."""
    pipeline: bool = _LIFECYCLE.pipeline
    """Send a second batch to a busy worker shortly before its batch is expected to end, so Triton
    does not wait for the scheduler between batches (policies that plan from ``WorkerView.free_at_ms``)."""
    pipeline_lead_ms: float = _LIFECYCLE.pipeline_lead_ms
    """How long before a worker's batch is expected to end (median estimate) the next one is sent."""
    pipeline_min_rows: int = _LIFECYCLE.pipeline_min_rows
    """Pipeline only while at least this many requests wait: at low load the next batch is better
    formed when the worker frees (more requests per Triton call, less scheduler CPU per request)."""
    batch_log: str | None = None
    """Write one JSON line per finished batch here (timings, planned and observed latency)."""
    request_log: str | None = None
    """Write one JSON line per answered request here: its id and, on the scheduler's clock (CLOCK_MONOTONIC, ms),
    when the front end had decoded it, when the engine answered and when the front end had encoded the answer;
    joined with a client's send and receive times (client/phases.py) it shows where a late answer lost its time."""
    default_min_confidence: float | None = _LIFECYCLE.default_min_confidence
    """Cascade escalation for requests that set no min_confidence and whose policy sets no threshold
    (e.g. SlackFit picks the first stage, escalation runs on top); None: no escalation by default."""
    admission_shedding: bool = _LIFECYCLE.admission_shedding
    """Refuse at arrival (503, Overloaded) a request the queue ahead of it certainly makes late (core/shedding.py),
    rather than queueing it until it is dropped with 504; False: the old behaviour, for comparison."""
    shed_drain: str = _LIFECYCLE.shed_drain
    """The drain rate admission shedding assumes: ``peak`` (the peak throughput of the profile the policy plans
    with, on every worker, times ``shed_peak_fraction``) or ``measured`` (shedding.DrainRate: what the workers
    cleared under a backlog, the peak bound until enough batches are seen; an experiment, see README, Overload)."""
    shed_peak_fraction: float = _LIFECYCLE.shed_peak_fraction
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
        if self.latency_model not in latency_view.KINDS:
            raise ValueError(f"latency_model must be one of {', '.join(latency_view.KINDS)}, got {self.latency_model!r}")
        if not 0.5 <= self.latency_quantile < 1 or self.pipeline_lead_ms < 0 or self.pipeline_min_rows < 1:
            raise ValueError(f"need 0.5 <= latency_quantile < 1, pipeline_lead_ms >= 0 and pipeline_min_rows >= 1, "
                             f"got {self.latency_quantile}, {self.pipeline_lead_ms}, {self.pipeline_min_rows}")
        if self.queue_capacity < 1 or self.max_inflight_per_worker < 1:
            raise ValueError(f"queue_capacity and max_inflight_per_worker must be >= 1, got "
                             f"{self.queue_capacity}, {self.max_inflight_per_worker}")

    def lifecycle(self, health: HealthConfig) -> LifecycleConfig:
        """The request life cycle's part of this configuration."""
        return LifecycleConfig(
            margin_ms=self.margin_ms, queue_capacity=self.queue_capacity,
            max_inflight_per_worker=self.max_inflight_per_worker,
            latency=LatencyModelConfig(quantile=self.latency_quantile) if self.adapt_latency else None,
            latency_kind=self.latency_model, pipeline=self.pipeline, pipeline_lead_ms=self.pipeline_lead_ms,
            pipeline_min_rows=self.pipeline_min_rows, default_min_confidence=self.default_min_confidence,
            admission_shedding=self.admission_shedding, shed_drain=self.shed_drain,
            shed_peak_fraction=self.shed_peak_fraction, health=health)


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


class Engine:
    def __init__(self, cfg: EngineConfig, profile: Profile | None, policy: Policy | None, workers: list[Worker],
                 clock: Clock | None = None, stats: Stats | None = None, health: HealthConfig | None = None,
                 models: list[ModelSpec] | tuple[ModelSpec, ...] = ()):
        """One model (``profile``, ``policy``) or several (``models``: each batch call then names its model,
        ``Worker.infer(..., model=name)``)."""
        if not workers:
            raise ValueError("the scheduler needs at least one worker")
        self.cfg = cfg
        self.clock = clock or MonotonicClock()
        health = health or HealthConfig()
        roster = Roster()
        self.lifecycle = Lifecycle(cfg.lifecycle(health), profile, policy, roster, stats, models)
        self.stats = self.lifecycle.stats
        self.pool = WorkerPool(workers, health, self.clock, self.stats, on_change=self._workers_changed,
                               roster=roster)
        """Worker membership, health, probes and hang watch; ``pool.start()`` once a loop runs (server.py)."""
        self._futures: dict[int, asyncio.Future] = {}
        """Per job (by id()), the future its caller awaits."""
        self._sweep: asyncio.TimerHandle | None = None
        self._pipe_timer: asyncio.TimerHandle | None = None
        self._lag_probe: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._running: dict[int, set] = {}
        """Batch tasks in flight per worker state."""
        self._abandoned: set = set()
        """Tasks cancelled because the batch before them on their worker failed: retried, not lost."""
        # line-buffered: a reader (a bench, between runs on a live sidecar) sees every finished line; one write
        # per line costs about 5 us, a fraction of a percent of a request's CPU, and only when asked for
        self._batch_log = open(cfg.batch_log, "a", buffering=1) if cfg.batch_log else None
        self.request_log = open(cfg.request_log, "a", buffering=1) if cfg.request_log else None
        """``cfg.request_log`` opened; the data plane writes it (dataplane.py), the engine closes it."""

    @property
    def queue(self):
        return self.lifecycle.queue

    @property
    def drain_rate(self):
        """Rows/ms the queue drains at while requests wait (admission shedding, shedding.py)."""
        return self.lifecycle.drain_rate

    @property
    def policy(self) -> Policy:
        """The default model's policy."""
        return self.lifecycle.policy

    @property
    def profile(self) -> Profile:
        """What policies plan with now (the profile scaled by the latency model)."""
        return self.lifecycle.profile

    @property
    def base_profile(self) -> Profile:
        """The measured profile, unscaled (the autoscaler's best accuracy and costs, scaling_loop.py)."""
        return self.lifecycle.base_profile

    def ready(self) -> bool:
        """Some worker is in rotation (the front ends' readiness answer)."""
        return self.pool.any_healthy()

    # -- admission ---------------------------------------------------------------------------
    async def infer(self, image: np.ndarray, params: RequestParams, model: str | None = None) -> Answer:
        """Answer ``image`` with served model ``model`` (None: the default; the front end checked the name)."""
        job = self.lifecycle.admit(self.clock.now_ms(), params.slo_ms, params.min_accuracy, params.subnet,
                                   len(image), params.min_confidence, payload=image, model=model)
        future = self._futures[id(job)] = asyncio.get_running_loop().create_future()
        self._apply(self.lifecycle.pump(self.clock.now_ms()))
        try:
            return await future
        except asyncio.CancelledError:  # the client went away: forget it if still queued
            self.lifecycle.cancel(job)
            raise
        finally:
            self._futures.pop(id(job), None)

    def record_rejection(self, e: ServeError, model: str | None = None) -> None:
        """Count an error raised at a front end before the request reached the engine (``model``: the served
        model it named, if the name was checked)."""
        if not e.counted:
            self.lifecycle.count_error(e, model if model in self.lifecycle.models else None)

    # -- what the life cycle asks for --------------------------------------------------------
    def _apply(self, step: Step) -> None:
        """Deliver answers, send batches, arm timers."""
        self._deliver(step.resolved)
        loop = asyncio.get_running_loop()
        for d in step.dispatches:
            task = loop.create_task(self._run(d))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            on_worker = self._running.setdefault(id(d.worker), set())
            on_worker.add(task)
            task.add_done_callback(on_worker.discard)
            task.add_done_callback(lambda t, d=d: self._after_abandoned(t, d))
        if step.sweep_changed:
            if self._sweep:
                self._sweep.cancel()
            self._sweep = None if step.sweep_at is None else self._timer(step.sweep_at, self._on_sweep)
        if step.pipeline_changed:
            if self._pipe_timer:
                self._pipe_timer.cancel()
            self._pipe_timer = None if step.pipeline_at is None else self._timer(step.pipeline_at, self._on_pipe_timer)

    def _timer(self, at_ms: float, callback) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, at_ms - self.clock.now_ms()) / 1000, callback)

    def _deliver(self, resolved: list[Resolution]) -> None:
        for r in resolved:
            future = self._futures.get(id(r.job))
            if future is None or future.done():
                continue
            if r.error is not None:
                future.set_exception(r.error)
            else:
                answer = r.answer.value
                answer.done_ms = self.clock.now_ms()
                future.set_result(answer)

    def _on_sweep(self) -> None:
        self._sweep = None
        self._apply(self.lifecycle.on_sweep(self.clock.now_ms()))

    def _on_pipe_timer(self) -> None:
        self._pipe_timer = None
        self._apply(self.lifecycle.on_pipeline(self.clock.now_ms()))

    def _workers_changed(self) -> None:
        self._apply(self.lifecycle.workers_changed(self.clock.now_ms()))

    # -- dispatch ----------------------------------------------------------------------------
    def _after_abandoned(self, task: asyncio.Task, d: Dispatch) -> None:
        """A batch cancelled because the batch ahead of it failed on the same worker: retry or refuse its
        requests. Done here, not in ``_run``: a task cancelled before its first step never runs its body,
        and its requests would be lost (the tests of a worker failing under pipelining caught one hanging)."""
        if task not in self._abandoned:
            return
        self._abandoned.discard(task)
        if not task.cancelled():  # it had finished (answered or failed) before the cancel reached it
            return
        now = self.clock.now_ms()
        self.lifecycle.release(d, now)
        self._deliver(self.lifecycle.fail(d, WorkerFailed(f"worker {d.worker.url}: abandoned "
                                                          "with the batch ahead of it"), now))
        self._apply(self.lifecycle.pump(now))

    async def _run(self, d: Dispatch) -> None:
        """Send one batch to its worker and hand the outcome to the life cycle."""
        worker, jobs = self.pool.worker(d.worker), d.jobs
        d.sent_ms = self.clock.now_ms()
        images = np.concatenate([j.payload for j in jobs]) if len(jobs) > 1 else jobs[0].payload
        timeout_s = (max(j.pending.deadline_ms for j in jobs) - d.sent_ms + self.cfg.worker_timeout_grace_ms) / 1000
        resolved: list[Resolution] = []
        try:
            try:
                call = (worker.infer(images, d.batch.subnet, timeout_s, model=d.model) if self.lifecycle.several
                        else worker.infer(images, d.batch.subnet, timeout_s))
                logits, infos = await self.pool.call(worker, call, d.expected_ms)
            except Exception as e:  # every request of the batch is retried or gets an error, none is lost
                err = e if isinstance(e, ServeError) else WorkerFailed(f"worker {worker.url}: {e}")
                log.warning("batch of %d on %s failed: %s", len(jobs), d.batch.subnet, err)
                if isinstance(err, WorkerFailed):  # a pipelined batch behind it would wait on a dead worker
                    for t in self._running.get(id(d.worker), set()) - {asyncio.current_task()}:
                        self._abandoned.add(t)
                        t.cancel()
                self.lifecycle.release(d, self.clock.now_ms())
                resolved = self.lifecycle.fail(d, err, self.clock.now_ms())
                return
            done = self.clock.now_ms()
            self.lifecycle.release(d, done)
            answers, row = [], 0
            for j in jobs:
                n = j.pending.rows
                answers.append(Answer(logits[row:row + n], infos[row:row + n], d.batch.subnet, d.queue_ms(j),
                                      len(j.subnets), (*j.subnets, d.batch.subnet)))
                row += n
            loads = worker.load_events
            resolved = self.lifecycle.complete(d, done, answers, _confidence,
                                               loads[-1].seconds if worker.last_call_loaded and loads else None)
            self._log_batch(worker.url, d, done, infos)
        finally:  # after escalations are queued, so the worker just freed can take them
            self._deliver(resolved)
            self._apply(self.lifecycle.pump(self.clock.now_ms()))

    LAG_PROBE_S = 0.01
    """With ``measure_margin``: how often the event loop's lag is probed (a timer's lateness; 100 a second cost
    about 0.2% of a core)."""

    def start_lag_probe(self) -> None:
        """With ``measure_margin``, probe the event loop's lag from now on (once a loop runs, server.py)."""
        if self.cfg.measure_margin and self._lag_probe is None:
            loop = asyncio.get_running_loop()
            self._lag_probe = loop.call_later(self.LAG_PROBE_S, self._probe_lag, loop.time() + self.LAG_PROBE_S)

    def _probe_lag(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.lifecycle.reply.observe_lag((now - due) * 1000)
        self.stats.reply_margin_ms = self.lifecycle.reply.margin_ms
        self._lag_probe = loop.call_later(self.LAG_PROBE_S, self._probe_lag, now + self.LAG_PROBE_S)

    def observe_reply(self, reply_ms: float) -> None:
        """A front end encoded an answer ``reply_ms`` after the engine had it."""
        self.stats.reply_seconds.observe(reply_ms / 1000)
        if self.cfg.measure_margin:
            self.lifecycle.reply.observe(reply_ms)
            self.stats.reply_margin_ms = self.lifecycle.reply.margin_ms

    def _log_batch(self, url: str, d: Dispatch, done: float, infos: list) -> None:
        if self._batch_log is None:
            return
        first = infos[0] if len(infos) else None  # Triton's INFO row: bytes on the hot path (info.py), or a dict
        first = json.loads(first) if isinstance(first, (bytes, str)) else first
        self._batch_log.write(json.dumps({
            "worker": url, "model": d.model, "subnet": d.batch.subnet, "rows": d.rows, "dispatched": round(d.sent, 3),
            "started": round(d.started_ms, 3), "done": round(done, 3), "planned_ms": round(d.slot.planned_ms, 3),
            "profiled_ms": round(self.lifecycle.served(d.model).base_profile.get(d.batch.subnet).at(d.rows), 3),
            "infer_ms": first.get("infer_ms") if first else None,
            "first_arrival": round(min(j.pending.arrival_ms for j in d.jobs), 3),
            "min_deadline": round(min(j.pending.deadline_ms for j in d.jobs), 3),
            "factor": self.lifecycle.served(d.model).factor}) + "\n")

    async def close(self) -> None:
        if self._lag_probe:
            self._lag_probe.cancel()
        if self._sweep:
            self._sweep.cancel()
        if self._pipe_timer:
            self._pipe_timer.cancel()
        if self._batch_log is not None:
            self._batch_log.close()
            self._batch_log = None
        if self.request_log is not None:
            self.request_log.close()
            self.request_log = None
        workers = self.pool.workers
        await self.pool.close()
        for t in list(self._tasks):
            t.cancel()
        for w in workers:
            await w.close()


def _confidence(answer: Answer, measure: str) -> float:
    """An answer's lowest confidence over its rows by ``measure`` (escalation.MEASURES)."""
    field = MEASURES[measure]
    return min((i.get(field, 1.0) for i in answer.infos), default=1.0)
