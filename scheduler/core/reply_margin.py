"""The reply margin, measured online: how long an answer takes from the moment the engine has it to the
moment the front end has encoded it for the wire (event-loop lag behind other work, then encoding).

Under a burst the engine answers a whole batch at once and the front end then encodes the answers one
after another, so the last ones leave tens of milliseconds later; a fixed margin (``--margin-ms``)
does not see that. With ``--measure-margin`` the engine plans with ``max(margin_ms, a high quantile of
the recent reply times)`` instead. Like the latency tracker, it is engine state; policies stay pure.
The part after the front end (network, the client's own event loop) is not visible here.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class ReplyMargin:
    floor_ms: float
    """Never plan with less than this (the configured --margin-ms)."""
    quantile: float = 0.95
    window: int = 512
    """Recent reply times kept."""
    every: int = 32
    """Recompute the quantile after this many new observations (not per request)."""
    margin_ms: float = field(init=False)
    _recent: deque[float] = field(init=False, repr=False)
    _new: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        if self.floor_ms < 0 or not 0 < self.quantile < 1 or self.window < 1 or self.every < 1:
            raise ValueError(f"ReplyMargin needs floor_ms >= 0, 0 < quantile < 1, window and every >= 1; got "
                             f"{self.floor_ms}, {self.quantile}, {self.window}, {self.every}")
        self.margin_ms = self.floor_ms
        self._recent = deque(maxlen=self.window)

    def observe(self, reply_ms: float) -> None:
        self._recent.append(reply_ms)
        self._new += 1
        if self._new >= self.every:
            self._new = 0
            ordered = sorted(self._recent)
            q = ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))]
            self.margin_ms = max(self.floor_ms, q)
