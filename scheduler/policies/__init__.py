"""Scheduling policies, registered by name; unknown names fail at start-up."""
from __future__ import annotations

from enum import Enum

from .base import Batch, Decision, Policy, WorkerView
from .fixed import Fixed
from .slackfit import SlackFit


class PolicyName(str, Enum):
    SLACKFIT = "slackfit"
    FIXED = "fixed"


def make_policy(name: str, subnet: str | None = None, n_buckets: int = 16) -> Policy:
    try:
        kind = PolicyName(name)
    except ValueError:
        raise ValueError(f"unknown policy {name!r}; choose from {[p.value for p in PolicyName]}") from None
    if kind is PolicyName.SLACKFIT:
        return SlackFit(n_buckets=n_buckets)
    if not subnet:
        raise ValueError("policy 'fixed' needs a subnet (--subnet NAME)")
    return Fixed(subnet)


__all__ = ["Batch", "Decision", "Policy", "WorkerView", "PolicyName", "make_policy", "SlackFit", "Fixed"]
