"""The live engine and the simulator drive one request life cycle: on the same bursty trace, with stand-in
workers on a virtual clock, every policy makes the same batches (time, worker, subnet, requests) and every
request meets the same fate (answer subnet, stages run, error class, time) on both sides.

The engine runs for real (asyncio tasks, futures, timers, the worker pool and its hang rule) on an event
loop whose clock jumps to the next timer instead of sleeping; its stand-in workers run one batch at a time,
taking the profile's latency times a seeded lognormal draw, as the simulator's workers do. A rule changed
in the engine's driver or the simulator's alone (when to pump, the sweep, pipelining, escalation, Clipper's
feedback) changes one of the two sequences and fails this test."""
from __future__ import annotations

import pytest

from superserve.scheduler.core.latency_model import LatencyModelConfig
from superserve.scheduler.core.gears import Gear, GearPlan, Stage
from superserve.scheduler.offline.sim import SimConfig, simulate
from superserve.scheduler.policies import make_policy
from superserve.scheduler.sidecar.engine import Engine, EngineConfig
from tests.conftest import committed_profile as profile
from tests.virtual_engine import (MARGIN_MS, QUANTILE, SEED, SIGMA, WORKERS, SeededRecord, Timeline, bursty_trace,
                                  fates_of_sim, first_difference, run_engine)

PROFILE = profile()
SUBNETS = [s.name for s in PROFILE.subnets]
MID = SUBNETS[len(SUBNETS) // 2]
SLOW = SUBNETS[-5]


def plan() -> GearPlan:
    return GearPlan((Gear(0, 500, (Stage(SUBNETS[4], 0.5), Stage(MID, 0.6), Stage(SUBNETS[-1], None)), 8),
                     Gear(500, 1e9, (Stage(SUBNETS[0], 0.4), Stage(SUBNETS[8], None)), 32)))


POLICIES = {"slackfit": lambda: make_policy("slackfit"),
            "fixed": lambda: make_policy("fixed", subnet=SLOW),
            "clipper": lambda: make_policy("clipper", subnet=SLOW),
            "cascade": lambda: make_policy("cascade", plan=plan()),
            "infaas": lambda: make_policy("infaas", load_ms=5000.0)}


def run_sim(policy, reqs, record) -> tuple[list, list]:
    batches: list = []
    cfg = SimConfig(workers=WORKERS, margin_ms=MARGIN_MS, default_min_confidence=0.3, jitter_sigma=SIGMA, seed=SEED,
                    latency=LatencyModelConfig(quantile=QUANTILE))
    outs = simulate(policy, PROFILE, reqs, record, cfg, batches)
    return [(b.at_ms, b.worker, b.subnet, b.requests) for b in batches], fates_of_sim(outs)


@pytest.mark.parametrize("name", list(POLICIES))
def test_engine_and_simulator_make_the_same_decisions(name):
    reqs = bursty_trace()
    record = SeededRecord({s.name: s.accuracy for s in PROFILE.subnets}, len(reqs))
    cfg = EngineConfig(margin_ms=MARGIN_MS, default_min_confidence=0.3, latency_quantile=QUANTILE,
                       queue_capacity=100_000)
    policy = POLICIES[name]()
    eb, ef, pipelined = run_engine(lambda clock, workers: Engine(cfg, PROFILE, policy, workers, clock=clock), reqs,
                                   Timeline(lambda subnet, rows: PROFILE.get(subnet).at(rows)), record)
    sb, sf = run_sim(POLICIES[name](), reqs, record)
    assert first_difference(eb, sb) is None, "batches differ: " + first_difference(eb, sb)
    assert first_difference(ef, sf) is None, "fates differ: " + first_difference(ef, sf)
    # The trace exercises what could differ: batching, drops, floors, and per policy its own rules.
    errors = {f[0] for f in ef if len(f) == 1}
    assert max(len(b[3]) for b in eb) >= 4 and "InvalidInput" in errors, (errors, len(eb))
    if name != "clipper":  # Clipper serves late rather than drop
        assert "DeadlineInfeasible" in errors
    if name in ("slackfit", "cascade"):
        assert sum(len(f) == 3 and len(f[1]) > 1 for f in ef) >= 10  # escalations
    if name in ("slackfit", "fixed"):  # batches sent to a worker still running one
        assert pipelined >= 10, pipelined
    if name == "clipper":  # the AIMD cap grew from 1: observe() ran on both sides
        assert max(len(b[3]) for b in eb) >= 8
