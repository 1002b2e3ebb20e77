"""Scheduling policies, registered by name; unknown names fail at start-up."""
from __future__ import annotations

from enum import Enum

from .base import Batch, Decision, Policy, WorkerView
from .cascade import CascadePolicy
from .clipper import AIMD, Clipper
from .fixed import Fixed
from .infaas import InfaasPolicy
from .slackfit import SlackFit


class PolicyName(str, Enum):
    SLACKFIT = "slackfit"
    FIXED = "fixed"
    CLIPPER = "clipper"
    INFAAS = "infaas"
    CASCADE = "cascade"


def make_policy(name: str, subnet: str | None = None, n_buckets: int = 1, load_ms: float = 5000.0,
                plan=None, overflow: str = "serve") -> Policy:
    """``plan``: the cascade policy's GearPlan (core/gears.py); ``overflow``: SlackFit's (slackfit.SlackFit.overflow)."""
    try:
        kind = PolicyName(name)
    except ValueError:
        raise ValueError(f"unknown policy {name!r}; choose from {[p.value for p in PolicyName]}") from None
    if kind is PolicyName.SLACKFIT:
        return SlackFit(n_buckets=n_buckets, overflow=overflow)
    if kind is PolicyName.INFAAS:
        return InfaasPolicy(load_ms=load_ms)
    if kind is PolicyName.CASCADE:
        if plan is None:
            raise ValueError("policy 'cascade' needs a gear plan (--plan FILE, made by 'superserve plan')")
        return CascadePolicy(plan)
    if not subnet:
        raise ValueError(f"policy {kind.value!r} needs a subnet (--subnet NAME)")
    return Clipper(subnet) if kind is PolicyName.CLIPPER else Fixed(subnet)


__all__ = ["Batch", "Decision", "Policy", "WorkerView", "PolicyName", "make_policy", "SlackFit", "Fixed", "Clipper", "AIMD", "InfaasPolicy", "CascadePolicy"]
