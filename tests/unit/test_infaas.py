"""INFaaS variant selection as a pure function of (queue, now, profile, loaded variants)."""
import pytest

from superserve.scheduler.core.edf_queue import Pending
from superserve.scheduler.policies.base import WorkerView
from superserve.scheduler.policies.infaas import InfaasPolicy
from superserve.scheduler.core.profile import Profile, SubnetProfile

BATCHES = (1, 2, 4, 8, 16, 32)
# Latency grows with batch (base + per-row cost); more accurate is slower.
PROFILE = Profile("test", "abc", BATCHES, (
    SubnetProfile("small", 0.85, {b: 1 + 0.1 * b for b in BATCHES}),
    SubnetProfile("mid", 0.89, {b: 3 + 0.5 * b for b in BATCHES}),
    SubnetProfile("big", 0.93, {b: 10 + 2.0 * b for b in BATCHES}),
))
ANY = WorkerView(0, 0)  # loaded=None: the worker runs any subnet without a load


def loaded(*names):
    return WorkerView(0, 0, frozenset(names))


def queue(n, now=0.0, slo=100.0, **kw):
    return tuple(Pending(i, now, now + slo + i * 0.01, **kw) for i in range(n))


def test_empty_queue_decides_nothing():
    d = InfaasPolicy().decide((), 0.0, PROFILE, ANY)
    assert d.batch is None and d.drop == ()


def test_cheapest_admissible_variant_not_the_most_accurate():
    d = InfaasPolicy().decide(queue(1, slo=100), 0.0, PROFILE, ANY)
    # Plenty of slack, yet INFaaS minimises cost: the cheapest variant, not the most accurate.
    assert (d.batch.subnet, d.batch.requests, d.batch.expected_ms) == ("small", (0,), pytest.approx(1.1))


@pytest.mark.parametrize("floor, subnet", [(0.0, "small"), (0.86, "mid"), (0.89, "mid"), (0.9, "big"), (0.93, "big")])
def test_min_accuracy_is_honoured(floor, subnet):
    d = InfaasPolicy().decide(queue(1, slo=100, min_accuracy=floor), 0.0, PROFILE, ANY)
    assert d.batch.subnet == subnet


def test_pinned_subnet_is_served_as_pinned():
    d = InfaasPolicy().decide(queue(1, subnet="mid"), 0.0, PROFILE, loaded("small", "big"))
    assert d.batch.subnet == "mid" and d.batch.expected_ms == pytest.approx(3.5 + 5000)


def test_loaded_variant_preferred_when_loading_the_cheaper_one_breaks_the_slack():
    # small would be cheaper but needs a 5 s load; big is loaded and meets the 100 ms slack.
    d = InfaasPolicy(load_ms=5000).decide(queue(1, slo=100), 0.0, PROFILE, loaded("big"))
    assert d.batch.subnet == "big" and d.batch.expected_ms == pytest.approx(12)


def test_loaded_variant_preferred_even_when_a_load_would_fit():
    d = InfaasPolicy(load_ms=50).decide(queue(1, slo=100), 0.0, PROFILE, loaded("big"))
    assert d.batch.subnet == "big"
    # Of several loaded variants that fit, the cheapest.
    d = InfaasPolicy(load_ms=50).decide(queue(1, slo=100), 0.0, PROFILE, loaded("mid", "big"))
    assert d.batch.subnet == "mid"


def test_load_chosen_when_no_loaded_variant_is_admissible_and_the_slack_allows():
    # Floor 0.88: small (loaded) may not serve; mid is the cheapest admissible and 3.5 + 50 fits 100 ms.
    d = InfaasPolicy(load_ms=50).decide(queue(1, slo=100, min_accuracy=0.88), 0.0, PROFILE, loaded("small"))
    assert d.batch.subnet == "mid" and d.batch.expected_ms == pytest.approx(53.5)


def test_load_chosen_when_the_loaded_variant_misses_the_deadline():
    # big is loaded but needs 12 ms; 5 ms of slack left. Loading small (1.1 + 3 ms) fits.
    d = InfaasPolicy(load_ms=3).decide(queue(1, slo=5), 0.0, PROFILE, loaded("big"))
    assert d.batch.subnet == "small" and d.batch.expected_ms == pytest.approx(4.1)


def test_a_load_that_cannot_fit_is_still_made_for_the_cheapest_variant_that_meets_the_latency():
    # A cold worker: nothing loaded, the load (5 s) exceeds any slack. INFaaS loads the cheapest
    # admissible variant anyway; the head is late by the load, later requests find it loaded.
    d = InfaasPolicy().decide(queue(1, slo=100, min_accuracy=0.88), 0.0, PROFILE, loaded())
    assert d.batch.subnet == "mid" and d.batch.expected_ms == pytest.approx(5003.5) and d.drop == ()
    # big (loaded) misses 8 ms of slack; mid meets it without its load: mid is loaded.
    d = InfaasPolicy().decide(queue(1, slo=8, min_accuracy=0.88), 0.0, PROFILE, loaded("big"))
    assert d.batch.subnet == "mid"


def test_infeasible_head_dropped_ignoring_loads_and_the_rest_served():
    q = (Pending(0, 0.0, 0.5), Pending(1, 0.0, 0.9, min_accuracy=0.88), Pending(2, 0.0, 50.0), Pending(3, 0.0, 60.0))
    d = InfaasPolicy().decide(q, 0.0, PROFILE, loaded("small"))
    # 0: 0.5 ms < small's 1.1 ms; 1: 0.9 ms < mid's 3.5 ms. 2 and 3 fit small, which is loaded.
    assert d.drop == (0, 1)
    assert d.batch.subnet == "small" and d.batch.requests == (2, 3)


def test_everything_infeasible_drops_all():
    d = InfaasPolicy().decide(queue(3, slo=1.0), 0.0, PROFILE, ANY)
    assert d.batch is None and d.drop == (0, 1, 2)


def test_batch_is_the_largest_that_the_queue_fills_and_meets_the_deadline():
    # 40 queued, 10 ms: small fits every batch up to 32 (4.2 ms).
    d = InfaasPolicy().decide(queue(40, slo=10), 0.0, PROFILE, ANY)
    assert d.batch.subnet == "small" and d.batch.requests == tuple(range(32))
    # 5 queued: the smallest profiled batch that holds them all (8).
    d = InfaasPolicy().decide(queue(5, slo=10), 0.0, PROFILE, ANY)
    assert d.batch.requests == tuple(range(5)) and d.batch.expected_ms == pytest.approx(1.8)
    # Floor 0.88 on a worker with mid loaded, 10 ms: 3 + 0.5 b <= 10 gives batch 8.
    d = InfaasPolicy().decide(queue(40, slo=10, min_accuracy=0.88), 0.0, PROFILE, loaded("mid"))
    assert d.batch.subnet == "mid" and len(d.batch.requests) == 8 and d.batch.expected_ms == pytest.approx(7)


def test_batch_budget_counts_the_load():
    # mid needs a 50 ms load; 60 ms of slack leaves 10 ms for the batch: batch 8 (7 ms), 57 ms expected.
    d = InfaasPolicy(load_ms=50).decide(queue(40, slo=60, min_accuracy=0.88), 0.0, PROFILE, loaded("small"))
    assert d.batch.subnet == "mid" and len(d.batch.requests) == 8 and d.batch.expected_ms == pytest.approx(57)


def test_batch_only_takes_requests_that_admit_the_variant():
    q = (Pending(0, 0.0, 100.0), Pending(1, 0.0, 100.1, min_accuracy=0.9), Pending(2, 0.0, 100.2))
    d = InfaasPolicy().decide(q, 0.0, PROFILE, ANY)
    assert d.batch.subnet == "small" and d.batch.requests == (0, 2)


def test_the_clock_moves_the_choice():
    q = queue(1, slo=15, min_accuracy=0.88)
    w = loaded("small", "mid", "big")
    assert InfaasPolicy().decide(q, 0.0, PROFILE, w).batch.subnet == "mid"   # cheapest admissible
    d = InfaasPolicy().decide(q, 12.0, PROFILE, w)                           # 3 ms left < mid's 3.5 ms
    assert d.batch is None and d.drop == (0,)


def test_fastest_ms_ignores_loads():
    p = InfaasPolicy(load_ms=5000)
    assert p.fastest_ms(Pending(0, 0, 100, min_accuracy=0.88), PROFILE) == pytest.approx(3.5)
    assert p.fastest_ms(Pending(0, 0, 100, rows=3), PROFILE) == pytest.approx(1.4)  # batch 4
    assert p.fastest_ms(Pending(0, 0, 100, min_accuracy=0.95), PROFILE) is None


def test_decide_does_not_mutate_and_repeats():
    q, w = queue(10, slo=20), loaded("big")
    p = InfaasPolicy(load_ms=5)
    assert p.decide(q, 0.0, PROFILE, w) == p.decide(q, 0.0, PROFILE, w)
    assert q == queue(10, slo=20)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "5"])
def test_load_ms_is_validated(bad):
    with pytest.raises(ValueError, match="load_ms"):
        InfaasPolicy(load_ms=bad)


def test_name():
    assert InfaasPolicy().name == "infaas"
