"""Clipper's AIMD batch cap as pure functions: grow on met batches, cut 10% on a miss, never drop."""
import pytest

from superserve.scheduler.core.edf_queue import Pending
from superserve.scheduler.policies import AIMD, Batch, Clipper, WorkerView, make_policy
from tests.conftest import TOY_PROFILE as PROFILE

W = WorkerView(0, 0)


def q(n, slo=100.0):
    return tuple(Pending(i, 0.0, slo + i * 0.01) for i in range(n))


def test_aimd_grows_additively_and_backs_off_multiplicatively():
    a = AIMD(step=2, backoff=0.9, max_cap=32)
    assert a.next_cap(4, True) == 6
    assert a.next_cap(31, True) == 32          # capped
    assert a.next_cap(20, False) == 18         # floor(20 * 0.9)
    assert a.next_cap(1, False) == 1           # never below min_cap


@pytest.mark.parametrize("bad", [dict(step=0), dict(backoff=1.0), dict(min_cap=0), dict(min_cap=8, max_cap=4)])
def test_aimd_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        AIMD(**bad)


def test_batch_follows_the_cap_not_the_slack():
    c = Clipper("mid")
    assert len(c.decide(q(40), 0.0, PROFILE, W).batch.requests) == 1   # starts at 1
    for _ in range(7):
        c.observe(Batch((0,), "mid", 1.0), 1.0, 100.0)
    d = c.decide(q(40), 0.0, PROFILE, W)
    assert len(d.batch.requests) == 8 and d.batch.subnet == "mid"
    assert d.batch.requests == tuple(range(8))                        # earliest deadlines first
    c.observe(d.batch, 150.0, 100.0)  # the batch itself ran over the SLO
    assert len(c.decide(q(40), 0.0, PROFILE, W).batch.requests) == 7  # floor(8 * 0.9)


def test_clipper_never_drops_early():
    c = Clipper("big")
    d = c.decide(q(3, slo=0.5), 10.0, PROFILE, W)   # every deadline already passed
    assert d.drop == () and d.batch.requests == (0,)
    assert c.early_drop is False


def test_make_policy_needs_a_subnet_for_clipper():
    assert isinstance(make_policy("clipper", subnet="big"), Clipper)
    with pytest.raises(ValueError, match="subnet"):
        make_policy("clipper")
