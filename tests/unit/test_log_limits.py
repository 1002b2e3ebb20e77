"""The rate-limited log filter on a fake clock: bursts per call site, summaries, DEBUG untouched."""
from __future__ import annotations

import io
import logging

import pytest

from superserve.scheduler.sidecar.log_limits import RateLimitFilter, install


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def logged():
    clock, stream = Clock(), io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    f = RateLimitFilter(burst=3, period_s=10.0, clock=clock)
    handler.addFilter(f)
    log = logging.getLogger("test_log_limits")
    log.propagate, log.level = False, logging.DEBUG
    log.addHandler(handler)
    yield log, clock, f, stream
    log.removeHandler(handler)


def bad_request(log, i):
    log.warning("bad request %d: %s", i, "x" * 100)  # one call site, a different message every time


def test_a_flood_from_one_call_site_is_collapsed_and_summarised(logged):
    log, clock, f, stream = logged
    for i in range(20_000):
        bad_request(log, i)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("WARNING bad request 0:") and f.suppressed_total == 19_997
    clock.t = 10.0
    bad_request(log, 20_000)
    last = stream.getvalue().splitlines()[-1]
    assert last.startswith("WARNING bad request 20000:")
    assert last.endswith("[19997 more like this suppressed in the last 10 s]")
    assert f.pending() == []


def test_call_sites_are_limited_apart_and_debug_is_not_limited(logged):
    log, clock, f, stream = logged
    for i in range(10):
        bad_request(log, i)
        log.info("lifecycle %d", i)
        log.debug("per request %d", i)
    text = stream.getvalue()
    assert text.count("WARNING") == 3 and text.count("INFO lifecycle") == 3 and text.count("DEBUG") == 10


def test_what_is_still_suppressed_is_reported_once_at_exit(logged):
    log, clock, f, stream = logged
    for i in range(5):
        bad_request(log, i)
    assert [(n, lvl, s) for n, lvl, _, s in f.pending()] == [("test_log_limits", logging.WARNING, 2)]
    f.report(log)
    assert "2 more WARNING record(s) from test_log_limits" in stream.getvalue()
    assert f.pending() == []


def test_install_filters_every_handler_of_the_root_logger():
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    try:
        f = install(burst=2, period_s=1.0)
        assert f in handler.filters
    finally:
        root.removeHandler(handler)
        for h in root.handlers:
            h.removeFilter(f)
    with pytest.raises(ValueError):
        RateLimitFilter(burst=0)
