"""The reply margin, measured online: how long an answer takes from the moment the engine has it to the
moment the front end has encoded it for the wire (event-loop lag behind other work, then encoding).

Under a burst the engine answers a whole batch at once and the front end then encodes the answers one
after another, so the last ones leave tens of milliseconds later; a fixed margin (``--margin-ms``)
does not see that. With ``--measure-margin`` the engine plans with ``max(margin_ms, a high quantile of
the recent reply times)`` instead. Like the latency tracker, it is engine state; policies stay pure.
The part after the front end (network, the client's own event loop) is not visible here.

A request also waits before the scheduler sees it: its bytes sit in the socket until the event loop, busy with
other work, reads them, and its deadline counts from when the scheduler admits it. On an oversubscribed host that
wait, invisible to the scheduler, made answers it sent in time late at the client. The engine probes the loop's
lag (how late a timer fires, ``observe_lag``) and the margin adds a high quantile of it to the reply time's.
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
    _lags: deque[float] = field(init=False, repr=False)
    _new: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        if self.floor_ms < 0 or not 0 < self.quantile < 1 or self.window < 1 or self.every < 1:
            raise ValueError(f"ReplyMargin needs floor_ms >= 0, 0 < quantile < 1, window and every >= 1; got "
                             f"{self.floor_ms}, {self.quantile}, {self.window}, {self.every}")
        self.margin_ms = self.floor_ms
        self._recent = deque(maxlen=self.window)
        self._lags = deque(maxlen=self.window)

    def observe(self, reply_ms: float) -> None:
        """An answer took ``reply_ms`` from the engine to the wire."""
        self._recent.append(reply_ms)
        self._tick()

    def observe_lag(self, lag_ms: float) -> None:
        """The event loop ran a timer ``lag_ms`` late (what a request arriving then waits before it is read)."""
        self._lags.append(max(0.0, lag_ms))
        self._tick()

    def _tick(self) -> None:
        self._new += 1
        if self._new >= self.every:
            self._new = 0
            self.margin_ms = max(self.floor_ms, self._quantile(self._recent) + self._quantile(self._lags))

    def _quantile(self, values: deque[float]) -> float:
        if not values:
            return 0.0
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))]
