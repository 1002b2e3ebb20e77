"""Queued requests ordered by deadline (earliest first). State only: policies read a snapshot."""
from __future__ import annotations

import bisect
from typing import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pending:
    """What a policy may know about a queued request. Times are ms on the scheduler's clock."""

    id: int
    arrival_ms: float
    deadline_ms: float
    min_accuracy: float = 0.0
    subnet: str | None = None
    """Pinned subnet, or None for the policy's choice."""
    rows: int = 1
    """Batch rows this request carries (tritonclient may send B > 1 images in one request)."""
    min_confidence: float | None = None
    """Cascade: escalate while the answer's confidence is below this (None: the policy's default)."""
    stage: int = 0
    """Cascade stage: 0 on arrival, k after k escalations."""
    above_accuracy: float = -1.0
    """After an escalation, only subnets more accurate than the last one that ran may serve it."""
    model: str = ""
    """The served model it is for (lifecycle.py; "" outside a life cycle: the only one)."""

    def admits(self, subnet: str, accuracy: float) -> bool:
        return ((self.subnet is None or self.subnet == subnet) and accuracy >= self.min_accuracy
                and accuracy > self.above_accuracy)


@dataclass
class EDFQueue:
    """Bounded deadline-ordered queue; ``push`` raises OverflowError when full."""

    capacity: int = 10_000
    _items: list[tuple[float, int, Pending]] = field(default_factory=list)
    rows: int = 0
    """Rows of all queued requests (a request may carry several)."""

    def __len__(self) -> int:
        return len(self._items)

    def push(self, p: Pending) -> None:
        if len(self._items) >= self.capacity:
            raise OverflowError(f"queue full ({self.capacity} requests)")
        bisect.insort(self._items, (p.deadline_ms, p.id, p))
        self.rows += p.rows

    def rows_ahead(self, deadline_ms: float) -> float:
        """Rows queued with a deadline at or before ``deadline_ms``, in O(log n): exact when every request
        has one row, else the count ahead times the mean rows per request."""
        if not self._items:
            return 0.0
        ahead = bisect.bisect_right(self._items, (deadline_ms, float("inf")))
        return ahead * self.rows / len(self._items)

    def head(self) -> Pending | None:
        return self._items[0][2] if self._items else None

    def snapshot(self) -> tuple[Pending, ...]:
        return tuple(item[2] for item in self._items)

    def remove(self, ids: Iterable[int]) -> list[Pending]:
        """Take these requests out (those still here); returns them in deadline order."""
        ids = set(ids)
        taken = [it[2] for it in self._items if it[1] in ids]
        if taken:
            self._items = [it for it in self._items if it[1] not in ids]
            self.rows -= sum(p.rows for p in taken)
        return taken
