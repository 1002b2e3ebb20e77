"""One policy-name grammar for serve, simulate, bench, the sweep and the reports (scheduler/core/policy_names.py)."""

from __future__ import annotations

import pytest

from superserve.scheduler.core import policy_names as pn
from superserve.scheduler.core.policy_names import PolicyNameError, PolicySpec


@pytest.mark.parametrize(
    "text, spec",
    [
        ("slackfit", PolicySpec("slackfit")),
        ("clipper:d1.1.1-w25.25.25", PolicySpec("clipper", "d1.1.1-w25.25.25")),
        ("cascade:plans/cpu-amd-epyc-2c.json", PolicySpec("cascade", "plans/cpu-amd-epyc-2c.json")),
        ("fixed:largest", PolicySpec("fixed", "largest")),
        ("triton-fixed:pareto", PolicySpec("triton-fixed", "pareto")),
        ("slackfit+escalate", PolicySpec("slackfit+escalate")),
        ("slackfit+escalate:0.9", PolicySpec("slackfit+escalate", "0.9")),
        ("slackfit-classic", PolicySpec("slackfit-classic")),
        ("slackfit@compare", PolicySpec("slackfit", compare=True)),
        ("slackfit@compare#2", PolicySpec("slackfit", compare=True, repeat=2)),
        ("clipper:largest#2", PolicySpec("clipper", "largest", repeat=2)),
    ],
)
def test_names_parse_and_print_back(text, spec):
    assert pn.parse(text) == spec
    assert spec.label == str(spec) == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("nope", "unknown policy 'nope'"),
        ("slackfit:big", "takes no argument"),
        ("infaas:x", "takes no argument"),
        ("clipper:", "empty argument"),
        ("slackfit+escalate:high", r"number in \[0, 1\]"),
        ("slackfit+escalate:1.5", r"number in \[0, 1\]"),
        ("triton_fixed:largest", "unknown policy"),
        ("slackfit#0", "must be 1 or more"),
    ],
)
def test_bad_names_fail_naming_the_field_and_the_name(text, message):
    with pytest.raises(PolicyNameError, match=message) as e:
        pn.parse(text, field="--policies")
    assert str(e.value).startswith("--policies: ")
    assert isinstance(e.value, ValueError)  # callers that catch ValueError (config checks) keep working


def test_each_command_accepts_its_own_kinds_only():
    assert pn.parse("cascade", pn.SIMULATED).kind == "cascade"
    with pytest.raises(
        PolicyNameError, match="choose from slackfit, slackfit-paper, slackfit-drop, slackfit-affine.*, fixed"
    ):
        pn.parse("infaas", pn.SIMULATED, "--policy")
    with pytest.raises(PolicyNameError, match="unknown policy 'triton-fixed:largest'"):
        pn.parse("triton-fixed:largest", pn.SERVED, "--policy")


def test_what_each_kind_runs_as():
    assert pn.parse("slackfit-classic").served_as == "slackfit"
    assert pn.parse("slackfit+escalate:0.7").served_as == "slackfit"
    assert pn.parse("clipper:largest").served_as == "clipper"
    assert pn.parse("triton-fixed:largest").served_as is None
    assert pn.parse("triton-fixed:largest@compare").base == "triton-fixed:largest"
    assert [pn.is_adaptive(x) for x in ("slackfit#2", "cascade:p.json", "fixed:big", "triton-fixed:big")] == [
        True,
        True,
        False,
        False,
    ]


def test_lists_skip_empty_items_and_refuse_an_empty_list():
    assert [s.kind for s in pn.parse_list("slackfit,,clipper:big,")] == ["slackfit", "clipper"]
    with pytest.raises(PolicyNameError, match="no policy named"):
        pn.parse_list(" , ")


def test_serve_policy_folds_the_argument_into_subnet_or_plan():
    assert pn.serve_policy("slackfit", None, None) == ("slackfit", None, None)
    assert pn.serve_policy("clipper:big", None, None) == ("clipper", "big", None)
    assert pn.serve_policy("fixed", "big", None) == ("fixed", "big", None)
    assert pn.serve_policy("fixed:big", "big", None) == ("fixed", "big", None)
    assert pn.serve_policy("cascade:p.json", None, None) == ("cascade", None, "p.json")
    with pytest.raises(PolicyNameError, match="--subnet another"):
        pn.serve_policy("fixed:big", "small", None)
    with pytest.raises(PolicyNameError, match="--plan another"):
        pn.serve_policy("cascade:a.json", None, "b.json")
    with pytest.raises(PolicyNameError, match="run labels"):
        pn.serve_policy("slackfit@compare", None, None)


def test_bench_and_sweep_configs_refuse_a_bad_name_at_once():
    from superserve.client.bench import BenchConfig
    from superserve.client.sweep import SweepConfig

    with pytest.raises(PolicyNameError, match="policies: unknown policy 'slackfit2'"):
        BenchConfig(policies=("slackfit", "slackfit2"))
    with pytest.raises(PolicyNameError, match="takes no argument"):
        SweepConfig(policies=("infaas:x",))


def test_simulate_refuses_a_policy_it_cannot_replay_before_loading_anything():
    from superserve.scheduler.cli import main

    with pytest.raises(SystemExit, match="superserve simulate: --policy: unknown policy 'infaas'"):
        main(["simulate", "--policy", "slackfit,infaas"])


def test_the_served_kinds_are_the_policies_the_sidecar_builds():
    from superserve.scheduler.policies import PolicyName

    assert {p.value for p in PolicyName} == set(pn.SERVED)
    assert {pn.SERVED_AS.get(k, k) for k in pn.SIMULATED} <= set(pn.SERVED) and set(pn.ADAPTIVE) <= set(pn.KINDS)
