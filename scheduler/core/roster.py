"""The scheduler's own record of each worker: in rotation or not, batches in flight, when it was last
picked, and the batches booked on it (for pipelining). Plain state, no I/O: the worker pool
(sidecar/worker_pool.py) keeps it for the live engine, the simulator keeps one for its virtual workers, and the
request life cycle (lifecycle.py) reads and books on it. Transport objects (triton_worker.TritonWorker,
variants.VariantWorker) carry none of it."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator


@dataclass
class Slot:
    """A batch in flight on a worker: its planned latency (the planning view's, at its rows) and median
    estimate, and when it is expected to end by each (ms, scheduler clock)."""
    planned_ms: float
    median_ms: float
    end_ms: float
    median_end_ms: float
    model: str | None = None
    """The served model of the batch (a pipelined batch is only ever of the same model, lifecycle.py)."""

    def started(self, now: float) -> None:
        """The batch before it answered: it runs from ``now``."""
        self.end_ms, self.median_end_ms = now + self.planned_ms, now + self.median_ms


def _nothing_loaded() -> frozenset[str] | None:
    return None


@dataclass(eq=False)
class WorkerState:
    """What the scheduler knows of one worker (identity: the object; ``key`` names it in metrics and logs)."""
    key: int
    url: str
    healthy: bool = True
    inflight: int = 0
    """Batches sent and not answered yet."""
    last_pick: int = 0
    """Pick number of the last batch sent here (0: never)."""
    slots: deque[Slot] = field(default_factory=deque)
    """Batches in flight, in the order the worker runs them."""
    last_done_ms: float = -1e18
    """When its last batch answered."""
    loaded: Callable[[], frozenset[str] | None] = _nothing_loaded
    """Subnets it can run without loading a model first (None: any; the supernet)."""


class Roster:
    """Every worker's WorkerState, in the order they joined; ``pick`` chooses where the next batch goes."""

    def __init__(self) -> None:
        self._states: dict[int, WorkerState] = {}
        self._picks = 0

    def add(self, key: int, url: str, loaded: Callable[[], frozenset[str] | None] = _nothing_loaded) -> WorkerState:
        if key in self._states:
            raise ValueError(f"worker {url} is already in the roster")
        s = self._states[key] = WorkerState(key, url, loaded=loaded)
        return s

    def remove(self, key: int) -> WorkerState:
        """Forget a worker (its batches in flight still end on the returned state)."""
        return self._states.pop(key)

    def get(self, key: int) -> WorkerState:
        return self._states[key]

    def __iter__(self) -> Iterator[WorkerState]:
        return iter(list(self._states.values()))

    def __len__(self) -> int:
        return len(self._states)

    def any_healthy(self) -> bool:
        return any(s.healthy for s in self._states.values())

    def pick(self, max_inflight: int, ready: Callable[[WorkerState], bool] | None = None) -> WorkerState | None:
        """A healthy worker with room for another batch: fewest batches in flight, then the one picked
        longest ago (so every worker keeps serving, and a re-admitted one gets work). ``ready(state)``, if
        given, must also hold (pipelining: a second batch only shortly before the first should end)."""
        free = [s for s in self._states.values()
                if s.healthy and s.inflight < max_inflight and (ready is None or ready(s))]
        if not free:
            return None
        s = min(free, key=lambda s: (s.inflight, s.last_pick))
        self._picks += 1
        s.last_pick = self._picks
        return s
