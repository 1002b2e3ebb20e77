"""SlackFit and fixed as pure functions of (queue, now, profile): no clock, no sockets."""
import pytest

from superserve.scheduler.core.edf_queue import EDFQueue, Pending
from superserve.scheduler.policies import Fixed, SlackFit, WorkerView, make_policy
from superserve.scheduler.core.profile import Profile, ProfileError
from tests.conftest import TOY_PROFILE as PROFILE
from tests.conftest import committed_profile
from tests.conftest import pending_queue as queue

W = WorkerView(0, 0)


def test_empty_queue_decides_nothing():
    assert SlackFit().decide((), 0.0, PROFILE, W).batch is None
    assert Fixed("big").decide((), 0.0, PROFILE, W).batch is None


def test_low_load_large_slack_serves_the_most_accurate_subnet():
    d = SlackFit().decide(queue(1, slo=100), 0.0, PROFILE, W)
    assert d.batch.subnet == "big" and d.batch.requests == (0,) and d.drop == ()


def test_burst_with_tight_slack_takes_a_large_batch_on_a_small_subnet():
    d = SlackFit().decide(queue(40, slo=6), 0.0, PROFILE, W)
    # slack 6 ms: big never fits; mid fits up to batch 4 (5 ms), small up to 32 (4.2 ms): largest batch wins
    assert d.batch.subnet == "small" and len(d.batch.requests) == 32
    assert d.batch.requests == tuple(range(32))  # earliest deadlines first
    assert d.batch.expected_ms <= 6


def test_slack_maps_to_the_bucket_just_under_it():
    # With 8 queued and 30 ms slack the largest fillable batch (8) goes to the most accurate subnet
    # whose batch-8 point fits: big@8 = 26 ms.
    d = SlackFit(n_buckets=16).decide(queue(8, slo=30), 0.0, PROFILE, W)
    assert (d.batch.subnet, len(d.batch.requests)) == ("big", 8)
    # Less slack (20 ms): big@8 no longer fits; big@4 (18 ms) does but mid@8 (7 ms) has the larger batch.
    d = SlackFit(n_buckets=16).decide(queue(8, slo=20), 0.0, PROFILE, W)
    assert d.batch.subnet == "mid" and len(d.batch.requests) == 8


def test_the_clock_moves_the_choice_not_the_queue():
    q = queue(1, now=0.0, slo=15)
    assert SlackFit().decide(q, 0.0, PROFILE, W).batch.subnet == "big"      # 15 ms left: big@1 = 12
    assert SlackFit().decide(q, 10.0, PROFILE, W).batch.subnet == "mid"     # 5 ms left
    assert SlackFit().decide(q, 13.5, PROFILE, W).batch.subnet == "small"   # 1.5 ms left
    d = SlackFit().decide(q, 14.5, PROFILE, W)                               # 0.5 ms: nothing fits
    assert d.batch is None and d.drop == (0,)


def test_infeasible_heads_are_dropped_and_the_rest_served():
    q = (Pending(0, 0, 0.5), Pending(1, 0, 0.8), Pending(2, 0, 50))
    d = SlackFit().decide(q, 0.0, PROFILE, W)
    assert d.drop == (0, 1) and d.batch.requests == (2,)


def test_min_accuracy_is_honoured():
    q = queue(20, slo=8, min_accuracy=0.88)
    d = SlackFit().decide(q, 0.0, PROFILE, W)
    assert d.batch.subnet == "mid"  # small (0.85) is not admissible; mid@8 = 7 ms fits
    assert len(d.batch.requests) == 8
    # Nothing admissible is fast enough: dropped.
    d = SlackFit().decide(queue(1, slo=3, min_accuracy=0.9), 0.0, PROFILE, W)
    assert d.batch is None and d.drop == (0,)


def test_mixed_constraints_are_batched_only_where_admissible():
    q = (Pending(0, 0, 8, min_accuracy=0.88), Pending(1, 0, 9), Pending(2, 0, 9.5, subnet="small"), Pending(3, 0, 10))
    d = SlackFit().decide(q, 0.0, PROFILE, W)
    assert d.batch.subnet == "mid" and d.batch.requests == (0, 1, 3)  # request 2 pinned elsewhere waits


def test_pinned_subnet_is_served_on_that_subnet():
    q = tuple(Pending(i, 0, 100, subnet="small") for i in range(3))
    d = SlackFit().decide(q, 0.0, PROFILE, W)
    assert d.batch.subnet == "small" and d.batch.requests == (0, 1, 2)


def test_multi_row_requests_count_their_rows():
    q = tuple(Pending(i, 0, 6, rows=4) for i in range(10))
    d = SlackFit().decide(q, 0.0, PROFILE, W)
    assert d.batch.subnet == "small" and len(d.batch.requests) == 8  # 32 rows


def test_fixed_takes_the_largest_batch_meeting_the_earliest_deadline():
    d = Fixed("mid").decide(queue(40, slo=8), 0.0, PROFILE, W)
    assert d.batch.subnet == "mid" and len(d.batch.requests) == 8  # mid@8 = 7 ms, mid@16 = 11 ms
    d = Fixed("mid").decide(queue(3, slo=100), 0.0, PROFILE, W)
    assert len(d.batch.requests) == 3 and d.batch.expected_ms == PROFILE.get("mid").latency_ms[4]
    d = Fixed("big").decide(queue(2, slo=5), 0.0, PROFILE, W)
    assert d.batch is None and d.drop == (0, 1)


@pytest.mark.parametrize("name", ["slackfit", "fixed", "clipper", "infaas", "cascade"])
def test_decide_is_pure_state_moves_only_in_the_driver_steps(name):
    """A decision depends on its inputs and on the state the driver's steps (on_arrival, advance, observe)
    set, never on earlier decisions; the queue handed in (here a list) is left as it was."""
    from superserve.scheduler.core.gears import Gear, GearPlan, Stage

    plan = GearPlan((Gear(0, 100, (Stage("small", 0.9), Stage("big", None)), 8),
                     Gear(100, 1e9, (Stage("small", 0.5), Stage("mid", None)), 32)))

    def fresh():
        p = make_policy(name, subnet="mid", plan=plan)
        for t in range(0, 1000, 5):  # 200 req/s until t = 1 s
            p.on_arrival(float(t), 1)
        return p

    early, late = list(queue(40, now=2900, slo=200)), list(queue(40, now=4998, slo=6))
    kept = list(early)
    a, b = fresh(), fresh()
    for p in (a, b):  # both policies take the same driver steps; only ``a`` decides in between
        p.advance(1000.0, PROFILE)
    first = a.decide(early, 3000.0, PROFILE, W)  # between the steps: must not move the gear
    assert early == kept and a.decide(early, 3000.0, PROFILE, W) == first
    for p in (a, b):
        p.advance(5000.0, PROFILE)
    assert a.decide(late, 5000.0, PROFILE, W) == b.decide(late, 5000.0, PROFILE, W)


def test_registry_and_profile_errors():
    assert isinstance(make_policy("slackfit"), SlackFit)
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        make_policy("nope")
    with pytest.raises(ValueError, match="needs a subnet"):
        make_policy("fixed")
    with pytest.raises(ProfileError, match="not in the profile"):
        Fixed("huge").decide(queue(1), 0.0, PROFILE, W)
    with pytest.raises(ProfileError, match="missing field"):
        Profile.from_dict({"hardware": "x"})


def test_edf_queue_orders_by_deadline_and_is_bounded():
    q = EDFQueue(capacity=3)
    for i, d in enumerate([30, 10, 20]):
        q.push(Pending(i, 0, d))
    assert [p.id for p in q.snapshot()] == [1, 2, 0] and q.head().id == 1
    with pytest.raises(OverflowError, match="queue full"):
        q.push(Pending(9, 0, 5))
    assert [p.id for p in q.remove([2, 7])] == [2]
    assert [p.id for p in q.snapshot()] == [1, 0]
    assert EDFQueue().head() is None


def test_the_whole_slack_is_searched_not_only_the_bucket_under_it():
    # The committed profile at 75 ms of slack with 5 queued: the paper's bucket just under 75 ms holds only
    # d2.2.3-w75@64 (73.8 ms, 0.901); d3.3.3-w100@8 (0.929) fits far inside the slack and serves all five.
    profile = committed_profile()
    q = queue(5, slo=75)
    paper = SlackFit(n_buckets=16).decide(q, 0.0, profile, W).batch
    whole = SlackFit().decide(q, 0.0, profile, W).batch
    assert (paper.subnet, len(paper.requests)) == ("d2.2.3-w75.75.75", 5)
    assert (whole.subnet, len(whole.requests)) == ("d3.3.3-w100.100.100", 5)
    assert whole.expected_ms == profile.get("d3.3.3-w100.100.100").latency_ms[8]  # the fastest point serving 5
    # In a burst both rules fill the largest batch first: 200 queued, 75 ms, the most accurate subnet at 64.
    burst = queue(200, slo=75)
    for policy in (SlackFit(), SlackFit(n_buckets=16)):
        b = policy.decide(burst, 0.0, profile, W).batch
        assert (b.subnet, len(b.requests)) == ("d2.2.3-w75.75.75", 64)


def test_a_head_that_fits_only_the_likely_latency_is_served_best_effort_or_dropped():
    # The planning view at 4x the profile (a busy host's p99), the likely view at the profile: at 8 ms of slack
    # nothing fits the plan (the fastest point is 4 x 2.23 ms), while every subnet's batch of 4 fits what a batch
    # most likely takes.
    profile = committed_profile()
    planned = profile.scaled(4.0).with_median(profile)
    q = queue(3, slo=8)
    served = SlackFit().decide(q, 0.0, planned, W)
    fastest = min(profile.subnets, key=lambda s: s.latency_ms[4])
    assert served.batch is not None and served.batch.subnet == fastest.name and len(served.batch.requests) == 3
    assert served.batch.expected_ms == fastest.latency_ms[4]  # planned at the likely latency, which fits
    dropped = SlackFit(overflow="drop").decide(q, 0.0, planned, W)
    assert dropped.batch is None and dropped.drop == (q[0].id,)
    # nothing more than the planning view when the two are one (no latency model): the same as before
    assert SlackFit().decide(q, 0.0, profile.scaled(4.0), W).batch is None
    with pytest.raises(ValueError, match="overflow"):
        SlackFit(overflow="maybe")
