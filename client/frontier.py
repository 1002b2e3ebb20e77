"""The fixed-baseline frontier and SuperServe's two headline ratios, from ``superserve bench`` results.

Serving one fixed subnet with Triton's dynamic batcher gives one point (served accuracy, client-side
SLO attainment) per Pareto subnet; a less accurate subnet is faster, so the points trace a frontier.
An adaptive policy (slackfit, cascade, infaas, clipper) is judged against the whole frontier, not
against whichever of a few fixed subnets happens to do well:

(a) **accuracy at the attainment target**: when the policy reaches ``target`` (0.99) attainment, its
    served accuracy (and real accuracy on labels) minus that of the most accurate fixed subnet that
    also reaches ``target``, and that gain as a share of the Pareto accuracy range; also the gain at
    *equal* attainment (the frontier's accuracy interpolated at the policy's own attainment);
(b) **attainment at equal accuracy**: the policy's attainment divided by the frontier's attainment
    interpolated at the policy's served accuracy.

Everything here is a pure function of results dicts (one per trace seed); nothing runs a server.
``aggregate`` gives each number's spread over seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from superserve.scheduler.core import policy_names

TARGET = 0.99


@dataclass(frozen=True)
class Point:
    name: str
    accuracy: float
    """Served accuracy (profile): for a fixed subnet its profiled accuracy, whatever its attainment."""
    attainment: float
    real_accuracy: float | None = None


def is_adaptive(policy: str) -> bool:
    """A run of a policy that chooses per batch (a point on the frontier plot, a ratio each; policy_names.ADAPTIVE)."""
    return policy_names.is_adaptive(policy)


def fixed_points(result: dict, accuracy_of: dict[str, float] | None = None) -> list[Point]:
    """The ``triton-fixed:*`` runs of one results file as frontier points. The subnet's accuracy comes
    from the run (``fixed_accuracy``, written by bench), else from ``accuracy_of`` (subnet -> profiled
    accuracy), else from the answers it served in time."""
    out = []
    for name, s in result["policies"].items():
        spec = policy_names.parse(name)
        if not spec.triton_fixed or spec.compare or spec.repeat != 1:
            continue
        acc = s.get("fixed_accuracy")
        if acc is None and accuracy_of:
            sub = s.get("fixed_subnet") or spec.arg or ""
            if sub not in accuracy_of and s.get("subnets"):
                sub = next(iter(s["subnets"]))
            acc = accuracy_of.get(sub)
        if acc is None:
            acc = s.get("mean_served_accuracy")
        if acc is None or s.get("slo_attainment") is None:
            continue
        out.append(Point(name, float(acc), float(s["slo_attainment"]), s.get("real_accuracy")))
    return out


def envelope(points: Iterable[Point]) -> list[Point]:
    """The non-dominated points (no other point both at least as accurate and of at least the same
    attainment, one of them strictly), by increasing accuracy (so by decreasing attainment)."""
    pts = sorted(points, key=lambda p: (-p.accuracy, -p.attainment))
    out, best = [], -math.inf
    for p in pts:  # most accurate first: keep a point only if it beats every more accurate one
        if p.attainment > best:
            out.append(p)
            best = p.attainment
    return out[::-1]


def attainment_at(env: Sequence[Point], accuracy: float) -> float | None:
    """The frontier's attainment at ``accuracy``, linear between envelope points; below the least
    accurate point the best attainment; None above the most accurate (no fixed subnet is as accurate)."""
    if not env or accuracy > env[-1].accuracy + 1e-9:
        return None
    if accuracy <= env[0].accuracy:
        return env[0].attainment
    for lo, hi in zip(env, env[1:]):
        if lo.accuracy <= accuracy <= hi.accuracy:
            w = (accuracy - lo.accuracy) / (hi.accuracy - lo.accuracy) if hi.accuracy > lo.accuracy else 0.0
            return lo.attainment + w * (hi.attainment - lo.attainment)
    return env[-1].attainment


def accuracy_at(env: Sequence[Point], attainment: float) -> float | None:
    """The frontier's served accuracy at ``attainment``, linear between envelope points; the most
    accurate point's accuracy at or below its attainment; None above every fixed subnet's attainment."""
    if not env or attainment > env[0].attainment + 1e-9:
        return None
    if attainment <= env[-1].attainment:
        return env[-1].accuracy
    for lo, hi in zip(env, env[1:]):  # lo: more attainment, less accuracy
        if hi.attainment <= attainment <= lo.attainment:
            w = (lo.attainment - attainment) / (lo.attainment - hi.attainment) if lo.attainment > hi.attainment else 0.0
            return lo.accuracy + w * (hi.accuracy - lo.accuracy)
    return env[0].accuracy


def _r(x, nd=4):
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def headline(result: dict, policy: str, accuracy_range: tuple[float, float] | None = None,
             accuracy_of: dict[str, float] | None = None, target: float = TARGET) -> dict:
    """Both ratios for one adaptive policy in one results file (one trace seed). A number that is not
    defined in this run is None with the reason under ``why``."""
    s = result["policies"][policy]
    att, acc, real = s["slo_attainment"], s.get("mean_served_accuracy"), s.get("real_accuracy")
    pts = fixed_points(result, accuracy_of)
    env = envelope(pts)
    lo_hi = accuracy_range or tuple(result.get("pareto_accuracy_range") or ()) or None
    span = (lo_hi[1] - lo_hi[0]) if lo_hi else None
    out: dict = {"policy": policy, "attainment": att, "served_accuracy": acc, "real_accuracy": real,
                 "fixed_runs": len(pts), "why": {}}
    reaching = [p for p in pts if p.attainment >= target]
    best = max(reaching, key=lambda p: (p.accuracy, p.attainment)) if reaching else None
    out["best_fixed_at_target"] = best.name if best else None
    gain = gain_real = None
    if best is None:
        out["why"]["gain_at_target"] = f"no fixed subnet reaches {target}"
    elif att < target:
        out["why"]["gain_at_target"] = f"{policy} attainment {att:.4f} < {target}"
    elif acc is None:
        out["why"]["gain_at_target"] = f"{policy} answered nothing in time"
    else:
        gain = acc - best.accuracy
        gain_real = real - best.real_accuracy if real is not None and best.real_accuracy is not None else None
    out["gain_at_target"] = _r(gain)
    out["real_gain_at_target"] = _r(gain_real)
    out["gain_at_target_share_of_range"] = _r(gain / span) if gain is not None and span else None
    eq_acc = accuracy_at(env, att)
    out["frontier_accuracy_at_equal_attainment"] = _r(eq_acc)
    out["gain_at_equal_attainment"] = _r(acc - eq_acc) if acc is not None and eq_acc is not None else None
    if eq_acc is None:
        out["why"]["gain_at_equal_attainment"] = f"no fixed subnet reaches {policy}'s attainment {att:.4f}"
    eq_att = attainment_at(env, acc) if acc is not None else None
    out["frontier_attainment_at_equal_accuracy"] = _r(eq_att)
    if eq_att is None:
        out["attainment_ratio"] = None
        out["why"]["attainment_ratio"] = "no fixed subnet is as accurate" if acc is not None else "nothing served"
    elif eq_att <= 0:
        out["attainment_ratio"] = None
        out["why"]["attainment_ratio"] = "the frontier's attainment is 0 there (ratio unbounded)"
    else:
        out["attainment_ratio"] = _r(att / eq_att)
    if not out["why"]:
        del out["why"]
    return out


METRICS = ("attainment", "served_accuracy", "real_accuracy", "gain_at_target", "real_gain_at_target",
           "gain_at_target_share_of_range", "gain_at_equal_attainment", "attainment_ratio")


def spread(values: Sequence[float | None]) -> dict:
    """Mean, sample standard deviation, min and max of the defined values; ``n`` of them defined."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if not len(v):
        return {"n": 0, "of": len(values), "mean": None, "sd": None, "min": None, "max": None}
    return {"n": int(len(v)), "of": len(values), "mean": _r(v.mean()),
            "sd": _r(v.std(ddof=1)) if len(v) > 1 else None, "min": _r(v.min()), "max": _r(v.max())}


def aggregate(per_seed: Sequence[dict]) -> dict:
    """One policy's ``headline`` dicts over trace seeds -> each metric's spread."""
    return {m: spread([h.get(m) for h in per_seed]) for m in METRICS}


def frontier_mean(results: Sequence[dict], accuracy_of: dict[str, float] | None = None) -> list[dict]:
    """Per fixed subnet, its accuracy and attainment mean and range over the seeds that ran it."""
    by: dict[str, list[Point]] = {}
    for r in results:
        for p in fixed_points(r, accuracy_of):
            by.setdefault(p.name, []).append(p)
    rows = []
    for name, ps in by.items():
        a = [p.attainment for p in ps]
        rows.append({"name": name, "accuracy": ps[0].accuracy, "attainment": _r(float(np.mean(a))),
                     "min": _r(min(a)), "max": _r(max(a)), "n": len(ps)})
    return sorted(rows, key=lambda r: r["accuracy"])


TOLERANCE = 0.005
"""Half a point of attainment: below what one run on a shared machine can tell apart (one request in 200)."""


def frontier_done(fixed_run: Sequence[Point], adaptive: Sequence[Point], target: float = TARGET,
                  tol: float = TOLERANCE) -> bool:
    """Whether running the remaining, less accurate fixed subnets could change a headline number by more
    than ``tol`` of attainment. ``fixed_run``: the fixed subnets run so far, most accurate first; M, the
    best attainment among them. It is enough when (a) the last one is no more accurate than any adaptive
    policy's served accuracy, (b) no less accurate subnet can join the envelope where it matters: the
    last one has attainment M (so the envelope's left end is known; anything below only adds points to
    its left) or M is already 1, each within ``tol``, and (c) M reaches ``target`` (exactly: then the most
    accurate fixed subnet reaching it has been run) and every adaptive policy's attainment (within
    ``tol``), so the envelope is known wherever an adaptive policy's accuracy or attainment falls."""
    if not fixed_run:
        return False
    last = fixed_run[-1]
    best = max(p.attainment for p in fixed_run)
    served = [p.accuracy for p in adaptive if p.accuracy is not None]
    if served and last.accuracy > min(served) + 1e-9:
        return False
    if last.attainment < best - tol and best < 1.0 - tol:
        return False
    return best >= target and best >= max([0.0] + [p.attainment for p in adaptive]) - tol
