"""The policy-name grammar shared by ``serve --policy``, ``simulate --policy``, ``bench --policies``,
``bench-sweep --policies``, the results files and the reports: one parser, so that every command accepts and
rejects the same names with the same message.

    name  := kind [":" arg] ["@compare"] ["#" N]

=====================  =============================================================  ==================
kind                   what runs                                                      arg (optional)
=====================  =============================================================  ==================
``slackfit``           our scheduler, SlackFit                                        none
``slackfit-classic``   SlackFit with the latency handling from before issue 13        none
``slackfit-paper``     SlackFit with the paper's 16 latency buckets                   none
``slackfit-drop``      SlackFit dropping what fits only the likely latency            none
``slackfit-margin``    SlackFit with the reply margin measured online                 none
``slackfit-affine``    SlackFit with ``--latency-model affine``                       its quantile, 0.5-1
``slackfit-quantile``  SlackFit with ``--latency-model quantile``                     its quantile, 0.5-1
``slackfit+escalate``  SlackFit; answers below a confidence go up while slack allows  confidence, 0-1
``cascade``            the gear-plan cascade                                          the plan's file
``clipper``            Clipper's AIMD batch on one subnet                             subnet or role
``infaas``             INFaaS-style variant selection                                 none
``fixed``              our scheduler on one subnet                                    subnet or role
``triton-fixed``       Triton's dynamic batcher on one subnet, no sidecar             subnet, role, or
                                                                                      ``pareto`` (each)
=====================  =============================================================  ==================

A role is ``smallest``, ``middle`` or ``largest`` (client/triton_fixed.pick). ``@compare`` and ``#N`` only label
runs in a results file (``bench --compare-python``: the same policy under another interpreter, and repeats).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

SERVED = ("slackfit", "fixed", "clipper", "infaas", "cascade")
"""Policies a ``superserve serve`` runs (its ``--policy``)."""
KINDS = (
    "slackfit",
    "slackfit-classic",
    "slackfit-paper",
    "slackfit-drop",
    "slackfit-margin",
    "slackfit-affine",
    "slackfit-quantile",
    "cascade",
    "slackfit+escalate",
    "clipper",
    "infaas",
    "fixed",
    "triton-fixed",
)
"""Every kind ``superserve bench`` can run."""
SIMULATED = (
    "slackfit",
    "slackfit-paper",
    "slackfit-drop",
    "slackfit-affine",
    "slackfit-quantile",
    "fixed",
    "clipper",
    "cascade",
)
"""Policies ``superserve simulate`` can replay (no models to load, no Triton batcher)."""
ADAPTIVE = tuple(k for k in KINDS if k not in ("fixed", "triton-fixed"))
"""Policies that choose per batch: a point on the frontier plot and a headline ratio each (``fixed`` is our
scheduler on one subnet, neither adaptive nor Triton's batcher)."""
NO_ARG = ("slackfit", "slackfit-classic", "slackfit-paper", "slackfit-drop", "slackfit-margin", "infaas")
SERVED_AS = {
    "slackfit-classic": "slackfit",
    "slackfit-paper": "slackfit",
    "slackfit-drop": "slackfit",
    "slackfit-margin": "slackfit",
    "slackfit-affine": "slackfit",
    "slackfit-quantile": "slackfit",
    "slackfit+escalate": "slackfit",
}
"""Bench kinds that are ``serve --policy slackfit`` with other options (client/bench.policy_server)."""
PARETO = "pareto"
"""``triton-fixed:pareto``: one ``triton-fixed`` run per Pareto subnet of the profile."""
_LABEL = re.compile(r"(?P<base>.*?)(?P<compare>@compare)?(?:#(?P<repeat>[0-9]+))?")


class PolicyNameError(ValueError):
    """A policy name outside the grammar; the message names the field, the name and what is accepted."""


@dataclass(frozen=True)
class PolicySpec:
    """One parsed policy name."""

    kind: str
    arg: str | None = None
    """What follows ``kind:`` (subnet, role, plan file, confidence, ``pareto``); None when absent."""
    compare: bool = False
    """Labelled ``@compare``: run under ``bench --compare-python``'s interpreter."""
    repeat: int = 1
    """``#N``: the N-th run of the same policy in one results file."""

    @property
    def base(self) -> str:
        """``kind[:arg]``, without the run labels: what a server is started for."""
        return self.kind if self.arg is None else f"{self.kind}:{self.arg}"

    @property
    def label(self) -> str:
        """The whole name, as a results file keys the run."""
        return self.base + ("@compare" if self.compare else "") + (f"#{self.repeat}" if self.repeat != 1 else "")

    @property
    def served_as(self) -> str | None:
        """The ``serve --policy`` that runs it; None for ``triton-fixed`` (plain Triton, no sidecar)."""
        return None if self.kind == "triton-fixed" else SERVED_AS.get(self.kind, self.kind)

    @property
    def adaptive(self) -> bool:
        return self.kind in ADAPTIVE

    @property
    def triton_fixed(self) -> bool:
        return self.kind == "triton-fixed"

    def __str__(self) -> str:
        return self.label


def parse(text: str, kinds: tuple[str, ...] = KINDS, field: str = "policy") -> PolicySpec:
    """``text`` as a PolicySpec; PolicyNameError naming ``field`` unless its kind is one of ``kinds`` and its
    argument fits the kind."""
    m = _LABEL.fullmatch(text.strip())
    assert m is not None  # the pattern matches every string
    kind, colon, arg = m["base"].partition(":")
    if kind not in kinds:
        raise PolicyNameError(f"{field}: unknown policy {text!r}; choose from {_forms(kinds)}")
    if colon and not arg:
        raise PolicyNameError(f"{field}: policy {text!r} has an empty argument after ':'")
    if kind in NO_ARG and colon:
        raise PolicyNameError(f"{field}: policy {kind!r} takes no argument, got {text!r}")
    if kind == "slackfit+escalate" and arg:
        try:
            confidence = float(arg)
        except ValueError:
            confidence = math.nan
        if not 0 <= confidence <= 1:
            raise PolicyNameError(f"{field}: slackfit+escalate:<min_confidence> needs a number in [0, 1], got {arg!r}")
    if kind in ("slackfit-affine", "slackfit-quantile") and arg:
        try:
            q = float(arg)
        except ValueError:
            q = math.nan
        if not 0.5 <= q < 1:
            raise PolicyNameError(f"{field}: {kind}:<quantile> needs a number in [0.5, 1), got {arg!r}")
    repeat = int(m["repeat"]) if m["repeat"] else 1
    if repeat < 1:
        raise PolicyNameError(f"{field}: run label #{m['repeat']} in {text!r} must be 1 or more")
    return PolicySpec(kind, arg or None, bool(m["compare"]), repeat)


def parse_list(text: str, kinds: tuple[str, ...] = KINDS, field: str = "policies") -> tuple[PolicySpec, ...]:
    """A comma-separated list of names (empty items skipped); PolicyNameError on the first bad one or none."""
    specs = tuple(parse(item, kinds, field) for item in text.split(",") if item.strip())
    if not specs:
        raise PolicyNameError(f"{field}: no policy named in {text!r}")
    return specs


def kind_of(label: str) -> str:
    """The kind of a results file's run label, without judging the rest (reports read files of any age)."""
    m = _LABEL.fullmatch(label.strip())
    assert m is not None
    return m["base"].partition(":")[0]


def is_adaptive(label: str) -> bool:
    return kind_of(label) in ADAPTIVE


def serve_policy(policy: str, subnet: str | None, plan: str | None) -> tuple[str, str | None, str | None]:
    """``serve --policy`` with ``--subnet`` and ``--plan`` as (kind, subnet, plan). ``fixed:<subnet>``,
    ``clipper:<subnet>`` and ``cascade:<plan>`` are the same as the option; both at once must agree."""
    spec = parse(policy, SERVED, "--policy")
    if spec.compare or spec.repeat != 1:
        raise PolicyNameError(f"--policy: run labels (@compare, #N) name bench runs, not a policy: {policy!r}")
    if spec.arg is None:
        return spec.kind, subnet, plan
    if spec.kind == "cascade":
        if plan and plan != spec.arg:
            raise PolicyNameError(f"--policy {policy} names plan {spec.arg!r}, --plan another ({plan!r})")
        return spec.kind, subnet, spec.arg
    if subnet and subnet != spec.arg:
        raise PolicyNameError(f"--policy {policy} names subnet {spec.arg!r}, --subnet another ({subnet!r})")
    return spec.kind, spec.arg, plan


def _forms(kinds: tuple[str, ...]) -> str:
    forms = {
        "slackfit+escalate": "slackfit+escalate[:min_confidence]",
        "slackfit-affine": "slackfit-affine[:quantile]",
        "slackfit-quantile": "slackfit-quantile[:quantile]",
        "cascade": "cascade[:plan.json]",
        "clipper": "clipper[:subnet]",
        "fixed": "fixed[:subnet]",
        "triton-fixed": "triton-fixed[:subnet|pareto]",
    }
    return ", ".join(forms.get(k, k) for k in kinds)
