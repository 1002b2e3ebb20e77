"""Time is an argument: the live scheduler wraps time.monotonic, the simulator passes its own."""
from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> float: ...


class MonotonicClock:
    def now_ms(self) -> float:
        return time.monotonic() * 1000.0
