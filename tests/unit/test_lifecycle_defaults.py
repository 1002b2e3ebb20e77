"""Each default of the request life cycle is written once, as a field of LifecycleConfig (scheduler/core/lifecycle.py),
and reaches unchanged: the live engine (EngineConfig, so ``superserve serve`` and every ``bench`` that starts it), the
simulator (SimConfig), the cascade planner (PlanConfig's margin) and the command lines of ``serve``, ``simulate`` and
``plan``. Compared by value, so a default edited in one place only fails here; the simulator's deliberate
differences (margin, queue capacity, latency model) are pinned as such. A fresh interpreter with other defaults in
LifecycleConfig shows that changing them there changes all the others."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Any

import pytest

from superserve.scheduler import paths


def differences(got: Any, want: Any) -> str:
    """The fields of two dataclasses that differ, as ``name: got != want``."""
    if type(got) is not type(want) or not dataclasses.is_dataclass(got):
        return f"{got!r} != {want!r}"
    names = [f.name for f in dataclasses.fields(got) if getattr(got, f.name) != getattr(want, f.name)]
    return ", ".join(f"{n}: {getattr(got, n)!r} != {getattr(want, n)!r}" for n in names)


def mismatches() -> list[str]:
    """Where the engine, the simulator, the planner and the command lines leave the life cycle's defaults (as
    LifecycleConfig has them in this interpreter), one line each; empty when they all agree. Imports here, not at
    the top of the module, so that a fresh interpreter can change LifecycleConfig before anything reads it."""
    from superserve.scheduler.cli import build_parser
    from superserve.scheduler.commands.serving import serve_config
    from superserve.scheduler.core.health import HealthConfig
    from superserve.scheduler.core.lifecycle import LifecycleConfig
    from superserve.scheduler.offline.planner import PlanConfig
    from superserve.scheduler.offline.sim import SimConfig
    from superserve.scheduler.sidecar.auth import AuthConfig, TlsConfig
    from superserve.scheduler.sidecar.engine import EngineConfig
    from superserve.scheduler.sidecar.limits import ConnectionLimits
    from superserve.client.simulate import sim_config

    base, sim = LifecycleConfig(), SimConfig()
    serve_args = build_parser().parse_args(["serve"])
    serve_args.control_key = None
    serve = serve_config(serve_args, AuthConfig(), ConnectionLimits(), TlsConfig())
    simulated = dataclasses.replace(base, queue_capacity=sim.queue_capacity)  # simulate plans as serve does
    found = {
        "EngineConfig()": (EngineConfig().lifecycle(HealthConfig()), base),
        "superserve serve": (serve.engine.lifecycle(serve.health), base),
        "SimConfig()": (
            sim.lifecycle(),
            dataclasses.replace(base, margin_ms=sim.margin_ms, queue_capacity=sim.queue_capacity, latency=sim.latency),
        ),
        "superserve simulate": (sim_config(build_parser().parse_args(["simulate"])).lifecycle(), simulated),
        "PlanConfig().margin_ms": (PlanConfig().margin_ms, base.margin_ms),
        "superserve plan --margin-ms": (build_parser().parse_args(["plan"]).margin_ms, base.margin_ms),
        "PlanConfig().slo_ms": (PlanConfig().slo_ms, EngineConfig().default_slo_ms),
        "superserve serve --default-slo-ms": (serve.engine.default_slo_ms, EngineConfig().default_slo_ms),
    }
    return [f"{name}: {differences(got, want)}" for name, (got, want) in found.items() if got != want]


def test_engine_simulator_planner_and_command_lines_take_the_life_cycles_defaults():
    assert mismatches() == []


def test_the_simulator_differs_only_where_it_says_so():
    """SimConfig's three deliberate differences (its docstrings say why): no reply margin, a queue that leaves the
    drops to the policy, and the profile planned as it is on a simulated host that runs exactly the profile."""
    from superserve.scheduler.core.lifecycle import LifecycleConfig
    from superserve.scheduler.offline.sim import SimConfig

    sim, base = SimConfig(), LifecycleConfig()
    assert sim.margin_ms == 0.0 < base.margin_ms
    assert sim.queue_capacity > base.queue_capacity
    assert sim.latency is None and base.latency is not None


# Every life-cycle default but the health rule, each set to a value none of the others has by default.
OTHER_DEFAULTS = """dict(margin_ms=7.0, queue_capacity=1234, max_inflight_per_worker=2,
    latency=LatencyModelConfig(quantile=0.9), latency_kind="affine", pipeline=False, pipeline_lead_ms=1.5,
    pipeline_min_rows=5, default_min_confidence=0.4, admission_shedding=False, shed_drain="measured",
    shed_peak_fraction=0.8)"""


@pytest.mark.slow  # a fresh interpreter importing the whole CLI: in `make test`, not the quick loop
def test_changing_a_default_in_lifecycle_config_changes_it_everywhere():
    """In a fresh interpreter, LifecycleConfig is given other defaults before any other module reads it; the
    engine, the simulator, the planner and the command lines then all follow it."""
    code = f"""
import dataclasses, json
from superserve.scheduler.core import lifecycle
from superserve.scheduler.core.latency_model import LatencyModelConfig
other = {OTHER_DEFAULTS}
lifecycle.LifecycleConfig = dataclasses.make_dataclass(
    "LifecycleConfig", [(k, object, dataclasses.field(default=v)) for k, v in other.items()],
    bases=(lifecycle.LifecycleConfig,), frozen=True)
from superserve.scheduler.sidecar.engine import EngineConfig
from tests.unit.test_lifecycle_defaults import mismatches
print(json.dumps({{"mismatches": mismatches(), "engine_min_rows": EngineConfig().pipeline_min_rows}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=paths.repo_root(),
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["engine_min_rows"] == 5  # the other defaults took effect
    assert result["mismatches"] == []
