"""The worker health state machine, the hang rule and the retry rule (health.py): pure, fake clock."""
from __future__ import annotations

import pytest

from superserve.scheduler.core.health import Event, HealthConfig, Retry, WorkerHealth, retry_decision

CFG = HealthConfig(probe_interval_s=0.5, max_backoff_s=2.0, hang_factor=10, hang_floor_ms=500, max_attempts=3)


def test_failed_call_takes_worker_out_and_probes_back_off_to_the_cap():
    h = WorkerHealth(CFG)
    assert h.healthy
    assert h.call_failed(1000.0, "error") is Event.DOWN
    assert not h.healthy and h.reason == "error" and h.next_probe_ms == 1500.0
    assert not h.due(1499.9) and h.due(1500.0)
    gaps, now = [], 1500.0
    for _ in range(4):  # the worker stays dead: 1 s, 2 s, then capped at 2 s
        assert h.probe_result(False, now) is None
        gaps.append(h.next_probe_ms - now)
        now = h.next_probe_ms
    assert gaps == [1000.0, 2000.0, 2000.0, 2000.0]
    assert h.probe_result(True, now) is Event.UP
    assert h.healthy and h.next_probe_ms == now + 500.0


def test_a_healthy_worker_is_probed_every_interval_and_a_failed_probe_takes_it_out():
    h = WorkerHealth(CFG)
    assert h.probe_result(True, 0.0) is None and h.next_probe_ms == 500.0
    assert h.probe_result(False, 500.0, "probe: no answer in 1 s") is Event.DOWN
    assert not h.healthy and h.reason.startswith("probe") and h.next_probe_ms == 1000.0
    assert h.call_failed(600.0, "error") is None  # already out: no second DOWN


def test_a_worker_that_answers_probes_but_fails_calls_backs_off_instead_of_flapping():
    h = WorkerHealth(CFG)
    now, gaps = 0.0, []
    for _ in range(4):
        h.call_failed(now, "error")
        gaps.append(h.next_probe_ms - now)
        now = h.next_probe_ms
        assert h.probe_result(True, now) is Event.UP
    assert gaps == [500.0, 1000.0, 2000.0, 2000.0]
    h.call_ok()  # one batch served: history forgiven
    h.call_failed(now, "error")
    assert h.next_probe_ms - now == 500.0


def test_hang_rule_is_a_multiple_of_the_expected_latency_with_a_floor():
    assert CFG.hang_after_ms(2.0) == 500.0
    assert CFG.hang_after_ms(50.0) == 500.0
    assert CFG.hang_after_ms(138.0) == 1380.0
    assert HealthConfig(hang_factor=4, hang_floor_ms=100).hang_after_ms(30.0) == 120.0
    assert HealthConfig().hang_after_ms(5.0) == 2000.0  # the default floor


@pytest.mark.parametrize("attempts,deadline,fastest,healthy,want", [
    (1, 200.0, 5.0, True, Retry.REQUEUE),       # room left, another worker up
    (1, 104.0, 5.0, True, Retry.FAIL),          # slack 4 ms < fastest 5 ms
    (3, 500.0, 5.0, True, Retry.FAIL),          # attempts used up
    (1, 500.0, None, True, Retry.FAIL),         # no admissible subnet any more
    (1, 500.0, 5.0, False, Retry.OVERLOADED),   # nobody left to retry on
])
def test_retry_decision(attempts, deadline, fastest, healthy, want):
    assert retry_decision(CFG, attempts, deadline, 100.0, fastest, healthy) is want


@pytest.mark.parametrize("kw", [dict(probe_interval_s=0), dict(probe_interval_s=3.0, max_backoff_s=2.0),
                                dict(hang_factor=0.5), dict(hang_floor_ms=0), dict(max_attempts=0),
                                dict(probe_timeout_s=0)])
def test_config_rejects_bad_values(kw):
    with pytest.raises(ValueError):
        HealthConfig(**kw)


def test_worker_names_expand_to_every_address_they_resolve_to():
    from superserve.scheduler.sidecar.server import expand_workers

    table = {"triton": ["10.0.0.3", "10.0.0.2", "10.0.0.3"], "one": ["10.0.0.9"]}
    assert expand_workers(["triton:8001", "one:9"], lambda h, p: table[h]) == \
        ["10.0.0.2:8001", "10.0.0.3:8001", "10.0.0.9:9"]
    assert expand_workers(["127.0.0.1:18001"]) == ["127.0.0.1:18001"]
    with pytest.raises(ValueError, match="host:port"):
        expand_workers(["triton"])
    with pytest.raises(ValueError, match="cannot resolve"):
        expand_workers(["no-such-host.invalid:1"])
