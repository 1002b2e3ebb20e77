"""Admission-time shedding (scheduler/core/shedding.py) and the queue counts it reads: it refuses what cannot
finish in time even at peak throughput, and never what an idle or lightly loaded scheduler could serve."""
import pytest

from superserve.scheduler import paths
from superserve.scheduler.core.edf_queue import EDFQueue, Pending
from superserve.scheduler.core.profile import Profile
from superserve.scheduler.core.shedding import Backlog, earliest_finish_ms, peak_rows_per_ms, shed_reason


@pytest.fixture(scope="module")
def profile():
    return Profile.load(sorted((paths.repo_root() / "profiles").glob("*.json"))[0])


def test_peak_is_the_best_rows_per_ms_of_any_point(profile):
    peak = peak_rows_per_ms(profile)
    smallest = profile.subnets[0]
    assert peak >= max(b / smallest.latency_ms[b] for b in profile.batch_sizes)
    assert all(b / s.latency_ms[b] <= peak for s in profile.subnets for b in profile.batch_sizes)


def test_idle_scheduler_admits_any_feasible_request(profile):
    peak = peak_rows_per_ms(profile)
    fastest = profile.subnets[0].at(1)
    assert shed_reason(0.0, fastest, Backlog(0, (0.0,)), fastest, peak) is None
    assert shed_reason(0.0, 100.0, Backlog(0, (0.0, 0.0)), fastest, peak) is None


def test_backlog_that_cannot_drain_in_time_is_refused_with_its_numbers(profile):
    peak = peak_rows_per_ms(profile)
    fastest = profile.subnets[0].at(1)
    rows = 200 * peak  # 200 ms of work at peak speed on one worker
    why = shed_reason(0.0, 100.0, Backlog(rows, (0.0,)), fastest, peak)
    assert why is not None and "overloaded" in why and "1 worker" in why
    # Two workers drain it in half the time: still too long for 100 ms, fine for 150 ms.
    assert shed_reason(0.0, 100.0, Backlog(rows, (0.0, 0.0)), fastest, peak) is not None
    assert shed_reason(0.0, 150.0, Backlog(rows, (0.0, 0.0)), fastest, peak) is None


def test_busy_workers_start_the_drain_when_the_first_frees():
    assert earliest_finish_ms(10.0, Backlog(0, (50.0, 30.0)), 2.0, 1.0) == 32.0
    assert earliest_finish_ms(10.0, Backlog(40, (5.0, 8.0)), 2.0, 1.0) == 10.0 + 20.0 + 2.0
    assert earliest_finish_ms(0.0, Backlog(0, ()), 2.0, 1.0) == float("inf")


def test_queue_counts_rows_ahead_by_deadline():
    q = EDFQueue(100)
    for i, (deadline, rows) in enumerate([(50, 1), (10, 1), (30, 1), (70, 1)]):
        q.push(Pending(i, 0, deadline, rows=rows))
    assert (q.rows, q.rows_ahead(5), q.rows_ahead(30), q.rows_ahead(100)) == (4, 0, 2, 4)
    q.remove([1, 3])
    assert (q.rows, q.rows_ahead(30), q.rows_ahead(100)) == (2, 1, 2)
    q.push(Pending(9, 0, 20, rows=4))
    assert q.rows == 6 and q.rows_ahead(100) == 6


def test_drain_rate_counts_only_intervals_with_requests_waiting():
    from superserve.scheduler.core.shedding import DrainRate

    d = DrainRate(window=4, min_batches=2)
    d.observe(0.0, 10, waiting=True)
    assert d.rows_per_ms() is None  # nothing measured yet
    d.observe(10.0, 20, waiting=True)  # 20 rows in 10 ms while the queue stayed non-empty
    d.observe(1000.0, 5, waiting=False)  # an idle second: the arrival rate, not the capacity
    d.observe(1010.0, 50, waiting=True)  # follows a completion with nothing waiting: not counted either
    assert d.rows_per_ms() is None
    d.observe(1015.0, 30, waiting=True)
    assert d.rows_per_ms() == pytest.approx((20 + 30) / (10 + 5))
    for i in range(4):  # the window keeps the last 4 intervals
        d.observe(1020.0 + 10 * i, 5, waiting=True)
    assert d.rows_per_ms() == pytest.approx(4 * 5 / (5 + 10 + 10 + 10))


def test_drain_rate_ignores_small_batches_so_a_short_queue_cannot_pull_it_down():
    """Shedding keeps the queue short, so batches are small and slow per row: counting them made the rate fall,
    which shed more, which shortened the queue again (a collapse measured at 3x overload)."""
    from superserve.scheduler.core.shedding import DrainRate

    d = DrainRate(min_batches=2, min_rows=32)
    for i in range(5):
        d.observe(10.0 * i, 64, waiting=True)  # saturated: 64 rows every 10 ms
    assert d.rows_per_ms() == pytest.approx(6.4)
    for i in range(50):
        d.observe(50.0 + 5.0 * i, 2, waiting=True)  # a short queue: batches of 2 every 5 ms
    assert d.rows_per_ms() == pytest.approx(6.4)


def test_measured_drain_rate_refuses_what_the_peak_bound_admits(profile):
    """At 3x overload the workers cleared ~0.75 rows/ms against a profile peak of ~5 rows/ms: a backlog of 200
    rows passes the peak bound yet cannot be answered within 90 ms at the measured rate."""
    peak, own = peak_rows_per_ms(profile), profile.subnets[0].at(1)
    backlog = Backlog(200, (0.0,))
    assert shed_reason(0.0, 90.0, backlog, own, peak) is None
    reason = shed_reason(0.0, 90.0, backlog, own, peak, measured=0.75)
    assert reason is not None and "measured 0.75 rows/ms" in reason
    assert earliest_finish_ms(0.0, backlog, own, peak, measured=0.75) == pytest.approx(200 / 0.75 + own)
    assert shed_reason(0.0, 90.0, Backlog(50, (0.0,)), own, peak, measured=0.75) is None  # 67 ms + own: in time
