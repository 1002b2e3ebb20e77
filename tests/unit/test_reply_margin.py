"""The reply margin measured online: a high quantile of recent reply times, never below the floor,
recomputed every few observations (not per request)."""
import pytest

from superserve.scheduler.core.reply_margin import ReplyMargin


def test_quantile_floor_and_cadence():
    m = ReplyMargin(floor_ms=10.0, every=4, window=8)
    for v in (1.0, 2.0, 3.0):
        m.observe(v)
    assert m.margin_ms == 10.0  # nothing recomputed yet, and the floor holds
    m.observe(4.0)
    assert m.margin_ms == 10.0  # quantile 4 ms is below the floor
    for v in (50.0, 60.0, 70.0, 80.0):
        m.observe(v)
    assert m.margin_ms == 80.0  # p95 of the last 8: the largest
    for v in (1.0,) * 8:
        m.observe(v)
    assert m.margin_ms == 10.0  # the burst left the window


def test_bad_config_refused():
    with pytest.raises(ValueError):
        ReplyMargin(floor_ms=-1)


def test_the_event_loops_lag_adds_to_the_reply_time():
    m = ReplyMargin(floor_ms=10.0, every=4, window=8)
    for v in (12.0, 12.0, 12.0, 12.0):
        m.observe(v)
    assert m.margin_ms == 12.0
    for lag in (20.0, 20.0, 20.0, 20.0):
        m.observe_lag(lag)
    assert m.margin_ms == 32.0  # a request waits for the loop before it is read, its answer after
    for lag in (-1.0,) * 8:  # a timer a hair early is no lag
        m.observe_lag(lag)
    assert m.margin_ms == 12.0
