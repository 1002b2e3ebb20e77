"""Rate-limited logging (issue 12, item 6): 20,000 bad requests must not write 20,000 warnings (82 MB in
40 s before this). A handler filter lets through at most ``burst`` records per call site (logger, level,
file and line) in each ``period_s`` window and counts the rest; the first record of that call site after
the window says how many were suppressed. DEBUG records pass untouched (``-v`` is asked for). Installed
by the entry points, where logging is configured (``install``)."""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Callable

MAX_SITES = 4096
"""Call sites tracked at once (the oldest is forgotten beyond this); call sites are bounded by the code,
so this only guards against something odd."""


class RateLimitFilter(logging.Filter):
    def __init__(self, burst: int = 10, period_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        if burst < 1 or period_s <= 0:
            raise ValueError(f"need burst >= 1 and period_s > 0, got {burst}, {period_s}")
        self.burst, self.period_s, self.clock = burst, period_s, clock
        self._sites: OrderedDict[tuple, list] = OrderedDict()  # key -> [window start, passed, suppressed]
        self.suppressed_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return True
        key = (record.name, record.levelno, record.pathname, record.lineno)
        now = self.clock()
        site = self._sites.get(key)
        if site is None:
            site = self._sites[key] = [now, 0, 0]
            if len(self._sites) > MAX_SITES:
                self._sites.popitem(last=False)
        elif now - site[0] >= self.period_s:
            if site[2]:
                self._annotate(record, site[2], now - site[0])
            site[:] = [now, 0, 0]
        if site[1] < self.burst:
            site[1] += 1
            return True
        site[2] += 1
        self.suppressed_total += 1
        return False

    @staticmethod
    def _annotate(record: logging.LogRecord, suppressed: int, window_s: float) -> None:
        record.msg = f"{record.getMessage()} [{suppressed} more like this suppressed in the last {window_s:.0f} s]"
        record.args = None

    def pending(self) -> list[tuple[str, int, str, int]]:
        """(logger, level, location, suppressed) of call sites with suppressed records not yet reported."""
        return [(k[0], k[1], f"{k[2]}:{k[3]}", s[2]) for k, s in self._sites.items() if s[2]]

    def report(self, logger: logging.Logger | None = None) -> None:
        """Log what is still suppressed (at exit), once per call site."""
        logger = logger or logging.getLogger(__name__)
        for name, level, where, n in self.pending():
            logger.log(level, "%d more %s record(s) from %s (%s) were suppressed", n, logging.getLevelName(level),
                       name, where)
        for s in self._sites.values():
            s[2] = 0


def install(logger: logging.Logger | None = None, burst: int = 10, period_s: float = 10.0) -> RateLimitFilter:
    """Add one ``RateLimitFilter`` to every handler of ``logger`` (default: the root logger, after
    ``logging.basicConfig``). Handler filters see the records of every child logger."""
    logger = logger or logging.getLogger()
    f = RateLimitFilter(burst, period_s)
    for h in logger.handlers:
        h.addFilter(f)
    return f
