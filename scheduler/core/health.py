"""Worker health as plain state: when a Triton worker is in rotation, when to probe it next, when a
call counts as hung, and whether a failed batch's request may be retried. Pure: every decision takes
``now_ms`` as an argument, nothing here sleeps, does I/O or reads a clock (sidecar/worker_pool.py does).

Rules (the numbers are ``HealthConfig`` fields):

- **Out of rotation at once** when a call to the worker fails (connection refused, Triton error that
  is not the request's fault) or hangs, or when a readiness probe fails or times out.
- **Probes**: every ``probe_interval_s`` while healthy; while unhealthy the gap doubles with each
  consecutive failure (failed calls and failed probes alike) up to ``max_backoff_s``:
  0.5, 1, 2, 2, ... s with the defaults. The failure count is cleared only by a batch that succeeds,
  so a worker that answers probes but fails every real call backs off instead of flapping at 2 Hz.
- **Back in rotation** on the first probe that succeeds (sidecar/worker_pool.py first sends it one small
  warm-up inference, so the first real batch on a restarted Triton does not pay its lazy start-up).
- **Hang**: a batch call unanswered after ``max(hang_factor * expected_ms, hang_floor_ms)`` is
  abandoned (the call is cancelled) and the worker is taken out as suspect. ``expected_ms`` is the
  latency the policy planned the batch with (the profile scaled by observed latency), so a machine
  that is uniformly slow does not trip it; the floor keeps tiny batches (2 ms expected) from being
  declared hung by a scheduling hiccup. The floor is high (2 s) on purpose: a cancelled call still
  runs to its end inside Triton (the Python backend does not stop a forward half-way), so a false
  alarm under overload would re-admit a worker that is still busy and feed the overload; a real hang
  costs only the batch (whose 100 ms deadlines are long gone) and 2 s of one worker. A suspect that
  still answers probes is back after one probe interval.
- **Retry**: a request of a failed batch goes back to the EDF queue (the policy re-plans it, maybe
  on a smaller subnet, on whichever worker is free) if it has been dispatched fewer than
  ``max_attempts`` times, some worker is still healthy, and its deadline still leaves room for the
  fastest admissible point plus the reply margin. Otherwise it is answered with an explicit error:
  ``Overloaded`` (503) when no worker is healthy, else ``WorkerFailed`` (500).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class HealthConfig:
    probe_interval_s: float = 0.5
    """Readiness probe period of a healthy worker, and the first back-off step of an unhealthy one."""
    max_backoff_s: float = 2.0
    """Longest gap between probes of an unhealthy worker."""
    probe_timeout_s: float = 1.0
    """A readiness probe unanswered this long has failed."""
    warmup_timeout_s: float = 5.0
    """The warm-up inference sent before re-admission (a fresh Triton's first forward is slow)."""
    hang_factor: float = 10.0
    """A call is hung after this many times its expected latency ..."""
    hang_floor_ms: float = 2000.0
    """... but never before this long."""
    max_attempts: int = 3
    """Dispatches per request, first one included, before a worker failure is answered as an error."""

    def __post_init__(self) -> None:
        if not 0 < self.probe_interval_s <= self.max_backoff_s:
            raise ValueError(f"need 0 < probe_interval_s <= max_backoff_s, got {self.probe_interval_s}, "
                             f"{self.max_backoff_s}")
        if self.probe_timeout_s <= 0 or self.warmup_timeout_s <= 0 or self.hang_factor < 1 or self.hang_floor_ms <= 0:
            raise ValueError(f"need probe_timeout_s, warmup_timeout_s > 0, hang_factor >= 1, hang_floor_ms > 0; got "
                             f"{self.probe_timeout_s}, {self.warmup_timeout_s}, {self.hang_factor}, "
                             f"{self.hang_floor_ms}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")

    def hang_after_ms(self, expected_ms: float) -> float:
        """How long a call planned to take ``expected_ms`` may run before it counts as hung."""
        return max(self.hang_factor * max(expected_ms, 0.0), self.hang_floor_ms)


class Event(enum.Enum):
    """What a health update changed (None: nothing worth logging)."""
    DOWN = "down"
    UP = "up"


@dataclass
class WorkerHealth:
    """Health of one worker. ``healthy`` is what the engine's worker choice reads."""

    cfg: HealthConfig
    healthy: bool = True
    failures: int = 0
    """Consecutive failures (calls and probes) since the last successful batch."""
    next_probe_ms: float = 0.0
    reason: str = ""
    """Why the worker last went out of rotation."""

    def _backoff_ms(self) -> float:
        steps = max(0, self.failures - 1)
        return min(self.cfg.probe_interval_s * float(2 ** min(steps, 30)), self.cfg.max_backoff_s) * 1000

    def _fail(self, now_ms: float, reason: str) -> Event | None:
        self.failures += 1
        was = self.healthy
        self.healthy, self.reason = False, reason
        self.next_probe_ms = now_ms + self._backoff_ms()
        return Event.DOWN if was else None

    def call_failed(self, now_ms: float, reason: str) -> Event | None:
        """A batch call failed or hung: out of rotation now, first probe one back-off step later."""
        return self._fail(now_ms, reason)

    def call_ok(self) -> None:
        """A batch came back: the worker's failure history is forgiven."""
        self.failures = 0

    def due(self, now_ms: float) -> bool:
        return now_ms >= self.next_probe_ms

    def probe_result(self, ok: bool, now_ms: float, reason: str = "probe") -> Event | None:
        """Record a readiness probe's outcome and schedule the next probe."""
        if not ok:
            return self._fail(now_ms, reason)
        self.next_probe_ms = now_ms + self.cfg.probe_interval_s * 1000
        if self.healthy:
            return None
        self.healthy = True
        return Event.UP


class Retry(enum.Enum):
    REQUEUE = "requeue"
    FAIL = "fail"
    """Answer WorkerFailed (500)."""
    OVERLOADED = "overloaded"
    """Answer Overloaded (503): no worker left to retry on."""


def retry_decision(cfg: HealthConfig, attempts: int, deadline_ms: float, plan_now_ms: float,
                   fastest_ms: float | None, any_healthy: bool) -> Retry:
    """What to do with one request of a batch whose worker failed. ``attempts``: dispatches so far
    (the failed one included); ``plan_now_ms``: now plus the reply margin, as policies plan."""
    if not any_healthy:
        return Retry.OVERLOADED
    if attempts >= cfg.max_attempts or fastest_ms is None or deadline_ms - plan_now_ms < fastest_ms:
        return Retry.FAIL
    return Retry.REQUEUE
