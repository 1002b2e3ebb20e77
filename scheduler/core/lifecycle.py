"""One request life cycle, driven by both the live engine (sidecar/engine.py) and the simulator (offline/sim.py).

Every rule a request meets between arrival and answer lives here, once: admission (the profile check,
the feasibility drop, no worker, queue capacity, admission shedding), the EDF queue, the policy's
decisions and their drops, the deadline sweep, pipelining (booking a second batch on a busy worker),
the latency model the policy plans with, escalation to the next cascade stage with the previous answer
kept as fallback, retries after a worker failure, and the statistics.

It is plain and synchronous: no asyncio, no sockets, no clock. ``now`` (ms) is an argument of every
call. A driver calls ``admit`` when a request arrives, ``pump`` when a worker may be free (and the
timers it returns: ``on_sweep``, ``on_pipeline``), ``release`` then ``complete`` or ``fail`` when a
batch ends. Each call returns what the driver must do: ``Dispatch``es to send, ``Resolution``s (an
answer or an error) to deliver, and when to wake up next. The engine turns these into futures, tasks
and timers; the simulator into events on its heap.

Several models may be served at once (``ModelSpec``, one ``ServedModel`` each: its profile, policy
instance, latency model and planning view). They share one EDF queue and the workers; a batch holds one
model's requests: the model of the earliest deadline is asked first, its policy seeing only that model's
queued requests and that model's planning view, so policies stay pure functions of (queue, profile, now).
A batch is pipelined (sent to a busy worker) only behind a batch of the same model: Triton runs two models'
batches side by side, which the planned one-after-another timeline would not describe."""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..policies.base import Batch, Policy, WorkerView, drop_infeasible_head
from . import latency_view
from .edf_queue import EDFQueue, Pending
from .errors import DeadlineInfeasible, InvalidInput, Overloaded, ServeError, WorkerFailed
from .escalation import escalate, threshold_for
from .health import HealthConfig, Retry, retry_decision
from .latency_model import LatencyModelConfig
from .profile import Profile
from .reply_margin import ReplyMargin
from .roster import Roster, Slot, WorkerState
from .shedding import Backlog, DrainRate, peak_rows_per_ms, shed_reason
from .stats import Stats

log = logging.getLogger(__name__)

WAKE_AFTER_MS = 0.05
"""Timers fire this long after the moment they wait for (so the condition holds when they do)."""


@dataclass(frozen=True)
class LifecycleConfig:
    """The request life cycle's settings. Its defaults are THE defaults, written only here: the engine's
    (``sidecar/engine.py``: EngineConfig, so ``superserve serve`` and every ``bench`` that starts it), the
    simulator's (``offline/sim.py``: SimConfig) and ``superserve simulate``'s take theirs from these fields
    (tests/unit/test_lifecycle_defaults.py compares them), so changing one here changes all of them. Where the
    simulator deliberately differs (margin, queue capacity, latency model), SimConfig says so and why."""

    margin_ms: float = 10.0
    """Policies plan as if it were this much later (the answer's way back, see EngineConfig.margin_ms)."""
    queue_capacity: int = 4096
    """Queued requests beyond this are refused (Overloaded)."""
    max_inflight_per_worker: int = 1
    """Batches sent to one worker before it answers (1: the profile's latencies hold)."""
    latency: LatencyModelConfig | None = field(default_factory=LatencyModelConfig)
    """Plan with the profile scaled by observed/profiled batch latency; None: with the profile as it is."""
    latency_kind: str = "quantile"
    """``affine``, ``quantile``, ``ewma`` or ``off`` (core/latency_view.py)."""
    pipeline: bool = True
    """Book a second batch on a busy worker shortly before its batch is expected to end."""
    pipeline_lead_ms: float = 3.0
    """How long before that expected end (median estimate) the next batch is sent."""
    pipeline_min_rows: int = 8
    """Pipeline only while at least this many requests wait."""
    default_min_confidence: float | None = None
    """Escalation threshold of requests that set none and whose policy sets none; None: no escalation."""
    admission_shedding: bool = True
    """Refuse at arrival a request the queue ahead of it certainly makes late (core/shedding.py)."""
    shed_drain: str = "peak"
    """``peak`` or ``measured`` (EngineConfig.shed_drain)."""
    shed_peak_fraction: float = 1.0
    """Admission shedding assumes the queue drains at this fraction of the profile's peak rows/ms."""
    health: HealthConfig = field(default_factory=HealthConfig)
    """Its retry rule (max_attempts) decides what a failed batch's requests do."""


@dataclass
class StageAnswer:
    """A stage's answer to one request: the subnet that ran it, its time in the queue, and the driver's
    own value (the engine's Answer, the simulator's replayed record)."""
    subnet: str
    queue_ms: float
    value: Any


@dataclass(eq=False)
class Job:
    """A request between admission and its answer."""
    pending: Pending
    payload: Any = None
    """The driver's: the image (engine), the validation sample (simulator)."""
    subnets: list[str] = field(default_factory=list)
    """Subnets that have run it so far (cascade stages)."""
    fallback: StageAnswer | None = None
    """An escalated request's previous answer: returned if the next stage cannot run in time."""
    attempts: int = 0
    """Dispatches of the current stage (a failed worker's batch may be retried, health.py)."""
    cancelled: bool = False
    """The client went away: never escalated or retried, answered into the void."""
    resolved: bool = False


@dataclass(eq=False)
class Resolution:
    """The one answer of a job: ``answer`` or ``error``, decided at ``done_ms``."""
    job: Job
    done_ms: float
    answer: StageAnswer | None = None
    error: ServeError | None = None


@dataclass(eq=False)
class Dispatch:
    """A batch decided at ``at_ms`` for a worker."""
    worker: WorkerState
    batch: Batch
    jobs: list[Job]
    at_ms: float
    slot: Slot
    expected_ms: float
    """The median expectation from now (for the hang rule), the batch ahead included."""
    sent_ms: float | None = None
    """When the driver actually sent it (the engine's task may start a little after the decision); None: at once."""
    started_ms: float | None = None
    """When it started running (set by ``release``: the end of the batch before it, or when it was sent)."""
    model: str | None = None
    """The served model the batch is for (every request of a batch is for one model); None: the default."""

    @property
    def sent(self) -> float:
        return self.at_ms if self.sent_ms is None else self.sent_ms

    def queue_ms(self, j: Job) -> float:
        """How long ``j`` waited for this batch (from arrival to being sent; reported in INFO's queue_ms)."""
        return round(self.sent - j.pending.arrival_ms, 3)

    @property
    def rows(self) -> int:
        return sum(j.pending.rows for j in self.jobs)


@dataclass
class Step:
    """What a call asks of the driver."""
    dispatches: list[Dispatch] = field(default_factory=list)
    resolved: list[Resolution] = field(default_factory=list)
    sweep_changed: bool = False
    sweep_at: float | None = None
    """If changed: when the one deadline-sweep timer fires now (None: no timer)."""
    pipeline_changed: bool = False
    pipeline_at: float | None = None
    """If changed: when the one pipelining timer fires now (None: no timer)."""


DEFAULT_MODEL = "supernet"
"""The name a model gets when the life cycle is given one profile and one policy (as before issue 17)."""


@dataclass(frozen=True)
class ModelSpec:
    """A model the life cycle serves: its name (as clients call it), its profile and its own policy instance
    (a policy's state, e.g. Clipper's batch cap or the cascade's gear, follows that model's traffic)."""
    name: str
    profile: Profile
    policy: Policy


class ServedModel:
    """One served model's planning state: the measured profile, the latency model fed with its batches, and
    the planning view its policy plans with. The life cycle touches the latency model only through this
    object: ``observe`` after each batch, ``forget`` when it went stale, ``median_ms`` for the hang rule."""

    def __init__(self, spec: ModelSpec, latency: LatencyModelConfig | None, kind: str = "quantile"):
        self.name, self.policy = spec.name, spec.policy
        self.base_profile = self.profile = spec.profile
        """``profile`` is the planning view (latency_view.py); ``profile.likely`` the median one."""
        self.latency = latency_view.build(kind if latency is not None else "off", spec.profile, latency)
        self.factor = 1.0
        """Planned/profiled latency of the largest subnet at the largest batch (for metrics)."""
        self._peak: tuple[Profile | None, float] = (None, 0.0)

    def observe(self, subnet: str, rows: int, observed_ms: float) -> None:
        """A batch of ``rows`` on ``subnet`` took ``observed_ms`` of service: update the latency model and
        refresh the planning view."""
        self.latency.observe(rows, observed_ms, self.base_profile.subnet(subnet).at(rows))
        self.profile, self.factor = self.latency.view(), self.latency.factor()

    @property
    def observed(self) -> bool:
        """The latency model has seen batches it would drop on ``forget``."""
        return self.latency.forgets and self.latency.observations > 0

    def forget(self) -> None:
        """Plan with the profile as measured until new batches are seen."""
        self.latency.forget()
        self.profile, self.factor = self.latency.view(), 1.0

    def median_ms(self, subnet: str, rows: int) -> float:
        """The median expectation of a batch (the hang rule's yardstick, not the planning quantile)."""
        return self.latency.median_ms(rows, self.base_profile.subnet(subnet).at(rows))

    def peak_rows_per_ms(self, fraction: float) -> float:
        """Peak rows/ms at the latency a batch most likely takes (admission shedding refuses only what most
        likely cannot be served), recomputed only when the view changes."""
        likely = self.profile.likely
        if self._peak[0] is not likely:
            self._peak = (likely, peak_rows_per_ms(likely) * fraction)
        return self._peak[1]


def error_outcome(e: ServeError) -> str:
    """The outcome (stats.OUTCOMES) a request refused with ``e`` counts as."""
    return {"InvalidInput": "invalid", "ModelNotFound": "invalid", "DeadlineInfeasible": "dropped",
            "Overloaded": "overloaded"}.get(type(e).__name__, "error")


class Lifecycle:
    def __init__(self, cfg: LifecycleConfig, profile: Profile | None, policy: Policy | None,
                 roster: Roster | None = None, stats: Stats | None = None, models: Sequence[ModelSpec] = ()):
        """One model (``profile`` and ``policy``, named DEFAULT_MODEL), or several (``models``, the first the
        default: requests that name no model go to it)."""
        if models:
            specs = list(models)
        elif profile is None or policy is None:
            raise ValueError("Lifecycle needs a profile and a policy, or models")
        else:
            specs = [ModelSpec(DEFAULT_MODEL, profile, policy)]
        if len({m.name for m in specs}) != len(specs):
            raise ValueError(f"model names must differ, got {[m.name for m in specs]}")
        self.cfg = cfg
        self.models = {m.name: ServedModel(m, cfg.latency, cfg.latency_kind) for m in specs}
        self.default = self.models[specs[0].name]
        self.roster = roster if roster is not None else Roster()
        self.stats = stats if stats is not None else Stats()
        for name in self.models:  # each served model's series are published from the start
            self.stats.model_latency_factor[name] = 1.0
        self.reply = ReplyMargin(cfg.margin_ms)
        """The margin policies plan with (cfg.margin_ms, or measured online: the engine feeds it)."""
        self.pipelining = cfg.pipeline and all(m.policy.pipelines for m in self.models.values())
        self.queue = EDFQueue(cfg.queue_capacity)
        self.drain_rate = DrainRate(min_rows=max(1, min(m.base_profile.max_batch for m in self.models.values()) // 2))
        """Rows/ms the queue drains at while requests wait (admission shedding, shedding.py)."""
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._sweep_armed = False
        self._sweep_key: tuple[int, float, int] | None = None

    @property
    def margin_ms(self) -> float:
        return self.reply.margin_ms

    @property
    def policy(self) -> Policy:
        """The default model's policy."""
        return self.default.policy

    @property
    def profile(self) -> Profile:
        """The default model's planning view (its profile scaled by its latency model)."""
        return self.default.profile

    @property
    def base_profile(self) -> Profile:
        """The default model's measured profile."""
        return self.default.base_profile

    @property
    def several(self) -> bool:
        """More than one model is served (batch calls name their model)."""
        return len(self.models) > 1

    def model_of(self, p: Pending) -> ServedModel:
        """The served model a queued request belongs to."""
        return self.models[p.model] if p.model else self.default

    def served(self, name: str | None) -> ServedModel:
        """The model ``name`` (None: the default); KeyError if it is not served."""
        return self.default if name is None else self.models[name]

    # -- admission -------------------------------------------------------------------------------
    def admit(self, now: float, slo_ms: float, min_accuracy: float = 0.0, subnet: str | None = None, rows: int = 1,
              min_confidence: float | None = None, payload: Any = None, request_id: int | None = None,
              model: str | None = None) -> Job:
        """Queue a new request for ``model`` (None: the default model; the caller has checked the name), or
        raise (and count) the ServeError that refuses it."""
        m = self.served(model)
        p = Pending(next(self._ids) if request_id is None else request_id, now, now + slo_ms, min_accuracy, subnet,
                    rows, min_confidence, model=m.name)
        m.policy.on_arrival(now, p.rows)
        try:
            self._check(p, m)
        except ServeError as e:
            self.count_error(e, m.name)
            raise
        job = Job(p, payload)
        self.jobs[p.id] = job
        self.queue.push(p)
        self.stats.queue_depth = len(self.queue)
        return job

    def _check(self, p: Pending, m: ServedModel) -> None:
        of = f" of model {m.name!r}" if self.several else ""
        if p.subnet is not None and m.profile.get(p.subnet) is None:
            raise InvalidInput(f"parameter 'subnet': {p.subnet!r} is not a profiled subnet{of}; choose from "
                               f"{[s.name for s in m.profile.subnets]}")
        fastest = m.policy.fastest_ms(p, m.profile.likely)  # drop only what most likely cannot be served
        too_late = fastest is not None and p.deadline_ms - p.arrival_ms - self.margin_ms < fastest
        if too_late and self._stale_model(p.arrival_ms, m):
            fastest = m.policy.fastest_ms(p, m.profile.likely)
        if fastest is None:
            best = m.profile.subnets[-1].accuracy
            raise InvalidInput(f"parameter 'min_accuracy' {p.min_accuracy} cannot be met"
                               + (f" by subnet {p.subnet!r}" if p.subnet else f" (most accurate subnet{of}: {best})")
                               + f" under policy {m.policy.name}")
        margin = self.margin_ms
        if p.deadline_ms - p.arrival_ms - margin < fastest:
            raise DeadlineInfeasible(f"slo_ms {p.deadline_ms - p.arrival_ms:g} is below the fastest admissible "
                                     f"point ({fastest:.2f} ms for {p.rows} row(s)"
                                     + (f" + {margin:g} ms margin" if margin else "")
                                     + "); dropped at once")
        if not self.roster.any_healthy():
            raise Overloaded("no Triton worker is alive")
        if len(self.queue) >= self.queue.capacity:
            raise Overloaded(f"queue full ({self.queue.capacity} requests waiting)")
        if self.cfg.admission_shedding:  # O(log n): the rows queued ahead, drained at peak throughput
            # at the latency the host most likely delivers, not the planning quantile: refuse only what
            # most likely cannot be served (the plan's tail, taken per batch, would refuse what can)
            now = p.arrival_ms
            free = tuple(max(now, s.slots[-1].median_end_ms) if s.slots else now for s in self.roster if s.healthy)
            backlog = Backlog(self.queue.rows_ahead(p.deadline_ms), free)
            measured = self.drain_rate.rows_per_ms() if self.cfg.shed_drain == "measured" else None
            peak = m.peak_rows_per_ms(self.cfg.shed_peak_fraction)
            reason = shed_reason(now, p.deadline_ms - margin, backlog, fastest, peak, measured)
            if reason is not None:
                self.stats.shed += 1
                log.warning("request %d shed at admission: %s", p.id, reason)
                raise Overloaded(reason)

    def _stale_model(self, now: float, m: ServedModel) -> bool:
        """The latency model judges a request infeasible while nothing runs and nothing has for a
        second: it can only learn from batches, so it would never see the machine recover. Forget it
        (plan with the profile until new batches are seen). True if it was forgotten."""
        if not m.observed:
            return False
        last_done = max((s.last_done_ms for s in self.roster), default=-1e18)
        if any(s.slots for s in self.roster) or now - last_done < 1000.0:
            return False
        log.warning("latency model of %s forgotten: it judged requests infeasible while no batch ran for a second",
                    m.name)
        m.forget()
        self._show_factor(m)
        return True

    def _show_factor(self, m: ServedModel) -> None:
        self.stats.model_latency_factor[m.name] = m.factor
        if m is self.default:
            self.stats.latency_factor = m.factor

    def count_error(self, e: ServeError, model: str | None = None) -> None:
        """Count a refusal once, whoever raised it (front ends call this through Engine.record_rejection);
        ``model``: the served model it was for, if known (never a name a client made up)."""
        e.counted = True
        outcome = error_outcome(e)
        self.stats.requests[outcome] += 1
        if model is not None:
            self.stats.model_requests[(model, outcome)] += 1
        if isinstance(e, DeadlineInfeasible):
            self.stats.deadline_misses += 1

    def cancel(self, job: Job) -> None:
        """The client went away: forget the job if it is still queued; never escalate or retry it."""
        job.cancelled = True
        if self.queue.remove([job.pending.id]):
            self.jobs.pop(job.pending.id, None)
            self.stats.queue_depth = len(self.queue)

    # -- decisions -------------------------------------------------------------------------------
    def pump(self, now: float) -> Step:
        """Decide batches for the workers that may take one now; the policy's drops are resolved."""
        step, decided, margin = Step(), False, self.margin_ms
        while len(self.queue):
            w = self._free_worker(now)
            if w is None:
                break
            plan_now = now + margin
            free_at = self._free_at(w, now)
            view = WorkerView(w.key, w.inflight, w.loaded(), None if free_at is None else free_at + margin)
            batch, m = None, self.default
            for m, queued in self._by_deadline(self.queue.snapshot()):
                if w.slots and self.several and w.slots[-1].model != m.name:
                    # Triton runs two models' batches side by side, not one after another as planned: a batch
                    # of another model waits until the worker is free (nothing else is pipelined before it).
                    break
                t = time.perf_counter()  # for the decision-time metric only
                m.policy.advance(plan_now, m.profile)
                decision = m.policy.decide(queued, plan_now, m.profile, view)
                self.stats.decision_seconds.observe(time.perf_counter() - t)
                step.resolved += self._drop(decision.drop, plan_now)
                if decision.batch is not None:
                    batch = decision.batch
                    break
            if batch is None:
                decided = free_at is not None  # nothing to pipeline now; decide again when the worker frees
                break
            jobs = [self.jobs.pop(p.id) for p in self.queue.remove(batch.requests)]
            if not jobs:  # a policy bug; sending nothing would hold the worker for nothing
                log.error("policy %s decided a batch of no queued request: %s", m.policy.name, batch)
                break
            slot = self._start_slot(w, m, batch, jobs, now)
            # The hang rule scales the median expectation (from now: a pipelined batch waits for the one ahead),
            # not the planning quantile, which may be several times longer.
            expected = max(slot.median_ms, slot.median_end_ms - now)
            w.inflight += 1
            self.stats.worker_inflight[w.url] = w.inflight
            d = Dispatch(w, batch, jobs, now, slot, expected, model=m.name)
            self.stats.batch_size.observe(d.rows)
            for j in jobs:
                j.attempts += 1
            step.dispatches.append(d)
        self.stats.queue_depth = len(self.queue)
        self._arm_sweep(now, step)
        if not decided:
            step.pipeline_changed, step.pipeline_at = True, self._pipeline_at(now)
        return step

    def _by_deadline(self, queue: tuple[Pending, ...]) -> Iterator[tuple[ServedModel, tuple[Pending, ...]]]:
        """(model, that model's queued requests in deadline order), the model of the earliest deadline first
        (one model: the queue as it is)."""
        if not self.several:
            yield self.default, queue
            return
        parts: dict[str, list[Pending]] = {}
        for p in queue:  # dicts keep insertion order: models come in the order of their earliest deadline
            parts.setdefault(p.model, []).append(p)
        for name, queued in parts.items():
            yield self.models[name], tuple(queued)

    def _infeasible_head(self, queue: tuple[Pending, ...], plan_now: float) -> tuple[int, ...]:
        """The leading requests whose slack is below their model's fastest admissible point (policies'
        ``drop_infeasible_head`` with each request's own model)."""
        if not self.several:
            return drop_infeasible_head(self.policy, queue, plan_now, self.profile)[0]
        dropped = []
        for p in queue:
            m = self.model_of(p)
            fastest = m.policy.fastest_ms(p, m.profile.likely)
            if fastest is not None and p.deadline_ms - plan_now >= fastest:
                break
            dropped.append(p.id)
        return tuple(dropped)

    def on_sweep(self, now: float) -> Step:
        """The sweep timer fired: drop the queue's head requests that just became infeasible."""
        self._sweep_armed = False
        plan_now = now + self.margin_ms
        resolved = self._drop(self._infeasible_head(self.queue.snapshot(), plan_now), plan_now)
        step = self.pump(now)
        step.resolved = resolved + step.resolved
        return step

    def on_pipeline(self, now: float) -> Step:
        """The pipelining timer fired: a busy worker may take its next batch."""
        return self.pump(now)

    def _free_worker(self, now: float) -> WorkerState | None:
        if not self.pipelining:
            return self.roster.pick(self.cfg.max_inflight_per_worker)
        backlog = len(self.queue) >= self.cfg.pipeline_min_rows
        return self.roster.pick(max(2, self.cfg.max_inflight_per_worker),
                                lambda s: not s.slots or (backlog and self._pipe_at(s) <= now))

    def _pipe_at(self, s: WorkerState) -> float:
        """When the next batch may be sent to ``s``: ``pipeline_lead_ms`` before the median end of its
        last batch in flight."""
        return s.slots[-1].median_end_ms - self.cfg.pipeline_lead_ms

    def _free_at(self, s: WorkerState, now: float) -> float | None:
        """Expected end of ``s``'s batches in flight (planned, at the model's quantile), or None."""
        return max(now, s.slots[-1].end_ms) if s.slots else None

    def _pipeline_at(self, now: float) -> float | None:
        """While every worker is busy, when the first may take a pipelined batch (None: no timer)."""
        if not self.pipelining or len(self.queue) < self.cfg.pipeline_min_rows:
            return None
        times = [self._pipe_at(s) for s in self.roster
                 if s.healthy and len(s.slots) == 1 and s.inflight < max(2, self.cfg.max_inflight_per_worker)]
        return now + max(0.0, min(times) - now) + WAKE_AFTER_MS if times else None

    def _arm_sweep(self, now: float, step: Step) -> None:
        """While every worker is busy, drop queued requests the moment they become infeasible rather than
        when a worker frees: one timer, for the head, re-armed only when the head or the profile changes."""
        head = self.queue.head()
        m = self.default if head is None else self.model_of(head)
        key = None if head is None else (head.id, head.deadline_ms, id(m.profile))
        if self._sweep_armed and key == self._sweep_key:
            return  # same head, same profile: the armed timer is still right (no timer churn per request)
        self._sweep_key, self._sweep_armed = key, False
        step.sweep_changed, step.sweep_at = True, None
        if head is None or not m.policy.early_drop:
            return
        fastest = m.policy.fastest_ms(head, m.profile.likely) or 0.0
        step.sweep_at = now + max(0.0, head.deadline_ms - fastest - (now + self.margin_ms)) + WAKE_AFTER_MS
        self._sweep_armed = True

    def _start_slot(self, w: WorkerState, m: ServedModel, batch: Batch, jobs: list[Job], now: float) -> Slot:
        """Book ``batch`` of model ``m`` on ``w``: it starts when the batches before it end, and takes the
        planning view's latency at its real number of rows (the policy's point may be a larger batch)."""
        rows = sum(j.pending.rows for j in jobs)
        planned = m.profile.subnet(batch.subnet).at(rows)
        start = max(now, w.slots[-1].end_ms) if w.slots else now
        start_median = max(now, w.slots[-1].median_end_ms) if w.slots else now
        median = m.median_ms(batch.subnet, rows)
        slot = Slot(planned, median, start + planned, start_median + median, m.name)
        w.slots.append(slot)
        return slot

    def _drop(self, ids: Iterable[int], plan_now: float) -> list[Resolution]:
        out, real_now = [], plan_now - self.margin_ms
        for p in self.queue.remove(ids):
            job = self.jobs.pop(p.id)
            if job.fallback is not None:  # an escalation that cannot run in time
                out.append(self._fallback(job, real_now))
                continue
            err = DeadlineInfeasible(f"deadline cannot be met: {p.deadline_ms - real_now:.2f} ms of slack left, less "
                                     f"than the fastest admissible subnet needs; dropped after "
                                     f"{real_now - p.arrival_ms:.1f} ms in the queue")
            out.append(self._refuse(job, err, real_now))
        return out

    # -- a batch ends --------------------------------------------------------------------------
    def release(self, d: Dispatch, now: float) -> None:
        """``d`` answered or failed at ``now``: the worker has room again, and the next batch booked on it
        (one instance runs them in order) started now."""
        w = d.worker
        w.inflight -= 1
        self.stats.worker_inflight[w.url] = w.inflight
        d.started_ms = max(d.sent, w.last_done_ms)
        w.last_done_ms = now
        if w.slots:
            w.slots.popleft()
        if w.slots:
            w.slots[0].started(now)

    def complete(self, d: Dispatch, now: float, values: list[Any], confidence: Callable[[Any, str], float],
                 load_seconds: float | None = None) -> list[Resolution]:
        """``d`` answered at ``now`` with ``values[i]`` for ``d.jobs[i]``; ``confidence(value, measure)`` is
        that answer's lowest confidence over its rows. Each request is answered, or re-queued for the next
        cascade stage (escalation.py) with this answer kept as its fallback. ``load_seconds``: the call first
        loaded a model (INFaaS variants), which says nothing about forward speed."""
        out: list[Resolution] = []
        m = self.served(d.model)
        try:
            self.drain_rate.observe(now, d.rows, len(self.queue) > 0)
            if load_seconds is not None:
                self.stats.model_loads += 1
                self.stats.model_load_seconds_sum += load_seconds
            else:  # a pipelined batch starts when the one before it ends: its service time is measured from there
                started = d.started_ms if d.started_ms is not None else d.sent
                m.observe(d.batch.subnet, d.rows, now - started)
                self._show_factor(m)
            tightest_slo = min(j.pending.deadline_ms - j.pending.arrival_ms for j in d.jobs)
            m.policy.observe(d.batch, now - d.sent, tightest_slo)
            self._answer_or_escalate(d, m, now, values, confidence, out)
        except Exception as e:  # a bug here must still answer every request, once
            log.exception("answering a batch of %d on %s failed", len(d.jobs), d.batch.subnet)
            err = WorkerFailed(f"scheduler error while answering: {e}")
            for j in d.jobs:
                if not j.resolved:
                    if self.queue.remove([j.pending.id]):
                        self.jobs.pop(j.pending.id, None)
                    out.append(self._refuse(j, err, now))
        return out

    def _answer_or_escalate(self, d: Dispatch, m: ServedModel, now: float, values: list[Any],
                            confidence: Callable[[Any, str], float], out: list[Resolution]) -> None:
        subnet = d.batch.subnet
        ran = m.base_profile.subnet(subnet)
        plan_now, measure = now + self.margin_ms, m.policy.confidence_measure
        for j, value in zip(d.jobs, values):
            j.subnets.append(subnet)
            answer = StageAnswer(subnet, d.queue_ms(j), value)
            threshold = threshold_for(j.pending, subnet, m.policy, self.cfg.default_min_confidence)
            conf = confidence(value, measure) if threshold is not None else 1.0
            nxt = escalate(j.pending, ran.accuracy, conf, threshold, plan_now, m.policy, m.profile)
            if nxt is not None and len(self.queue) < self.queue.capacity and not j.cancelled:
                j.pending, j.fallback, j.attempts = nxt, answer, 0
                self.jobs[nxt.id] = j
                self.queue.push(nxt)
                self.stats.escalations += 1
                continue
            out.append(self._finish(j, answer, now))

    def fail(self, d: Dispatch, err: ServeError, now: float) -> list[Resolution]:
        """``d`` failed with ``err``: put back in the queue the requests another worker may still serve in
        time (health.retry_decision), answer the others with ``err``, or Overloaded if no worker is left."""
        out, plan_now, any_healthy, requeued = [], now + self.margin_ms, self.roster.any_healthy(), 0
        for j in d.jobs:
            action = Retry.FAIL
            if not isinstance(err, InvalidInput) and not j.cancelled:
                m = self.model_of(j.pending)
                action = retry_decision(self.cfg.health, j.attempts, j.pending.deadline_ms, plan_now,
                                        m.policy.fastest_ms(j.pending, m.profile.likely), any_healthy)
            if action is Retry.REQUEUE and len(self.queue) < self.queue.capacity:
                self.jobs[j.pending.id] = j
                self.queue.push(j.pending)
                requeued += 1
                continue
            if j.fallback is not None:
                out.append(self._fallback(j, now))
                continue
            e = Overloaded(f"no Triton worker is alive ({err})") if action is Retry.OVERLOADED else err
            out.append(self._refuse(j, e, now))
        if requeued:
            self.stats.batch_retries += 1
            self.stats.request_retries += requeued
            log.warning("retrying %d of %d requests on another worker (%s)", requeued, len(d.jobs), err)
        return out

    def workers_changed(self, now: float) -> Step:
        """A worker left or rejoined the rotation (or the pool). With none left, queued requests get 503 now
        rather than 504 at their deadline; otherwise the queue is re-planned on the workers there are."""
        resolved = []
        if not self.roster.any_healthy() and len(self.queue):
            err = Overloaded("no Triton worker is alive")
            for p in self.queue.remove([p.id for p in self.queue.snapshot()]):
                job = self.jobs.pop(p.id)
                resolved.append(self._fallback(job, now) if job.fallback is not None else self._refuse(job, err, now))
            self.stats.queue_depth = 0
        step = self.pump(now)
        step.resolved = resolved + step.resolved
        return step

    # -- answers -----------------------------------------------------------------------------
    def _fallback(self, j: Job, now: float) -> Resolution:
        """An escalated request that cannot go on (no time, no worker) gets its previous stage's answer."""
        self.stats.escalation_fallbacks += 1
        assert j.fallback is not None  # only escalated jobs fall back
        return self._finish(j, j.fallback, now)

    def _finish(self, j: Job, answer: StageAnswer, done: float) -> Resolution:
        """Answer ``j`` with ``answer`` (its last stage's result), counted once."""
        p, subnet = j.pending, answer.subnet
        m = self.model_of(p)
        late = done > p.deadline_ms
        outcome = "late" if late else "ok"
        self.stats.requests[outcome] += 1
        self.stats.model_requests[(m.name, outcome)] += 1
        if late:
            self.stats.deadline_misses += 1
        else:
            self.stats.served_accuracy_sum += m.base_profile.subnet(subnet).accuracy
        self.stats.subnet_selected[(m.name, subnet)] += 1
        self.stats.queue_wait_seconds.observe(answer.queue_ms / 1000)
        self.stats.request_latency_seconds.observe((done - p.arrival_ms) / 1000)
        j.resolved = True
        return Resolution(j, done, answer=answer)

    def _refuse(self, j: Job, err: ServeError, now: float) -> Resolution:
        self.count_error(err, self.model_of(j.pending).name)
        j.resolved = True
        return Resolution(j, now, error=err)
