"""Cascade escalation (CascadeServe's idea on one supernet): when a subnet's answer is not
confident enough, the request goes back to the EDF queue for a more accurate subnet, as long as
its remaining slack still fits one. Every stage runs on the same weights, so escalating costs time,
never memory.

Pure functions shared by the live engine and the simulator: they decide *whether* a request
escalates; the policy decides *where* the escalated request runs (``Pending.above_accuracy``
restricts it to subnets more accurate than the one that just answered).
"""
from __future__ import annotations

from dataclasses import replace

from ..policies.base import Policy
from .edf_queue import Pending
from .profile import Profile

MEASURES = {"max_softmax": "confidence", "margin": "margin"}
"""Confidence measure -> the INFO field that carries it."""


def threshold_for(p: Pending, subnet: str, policy: Policy, default: float | None) -> float | None:
    """The confidence ``p`` must reach after running on ``subnet``: the request's own
    ``min_confidence``, else the policy's (a cascade plan's stage threshold), else the server's default."""
    if p.min_confidence is not None:
        return p.min_confidence
    t = policy.escalation_threshold(subnet)
    return t if t is not None else default


def escalate(p: Pending, ran_accuracy: float, confidence: float, threshold: float | None, now_ms: float,
             policy: Policy, profile: Profile) -> Pending | None:
    """The request re-queued for the next stage, or None to answer with what it has.

    It escalates when its ``confidence`` (the lowest over its rows) is below ``threshold``, it does
    not pin a subnet, and some more accurate subnet the policy may use still fits its slack at
    ``now_ms`` (the planning clock: now plus the reply margin)."""
    if threshold is None or confidence >= threshold or p.subnet is not None:
        return None
    nxt = replace(p, stage=p.stage + 1, above_accuracy=ran_accuracy)
    fastest = policy.fastest_ms(nxt, profile)
    if fastest is None or p.deadline_ms - now_ms < fastest:
        return None
    return nxt
