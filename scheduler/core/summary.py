"""The per-policy numbers of a run (docs/design.md, Results), computed one way for every source: the load
generator's records (``superserve bench``, the fault bench) and the simulator's outcomes
(``superserve simulate``, the gear planner), so the same name always means the same number.

A record has ``outcome`` (ok, late, inaccurate, dropped, rejected, error), ``latency_ms``, ``accuracy``
(profiled accuracy of the subnet that answered), ``subnet``, ``correct``, ``escalations`` and ``lag_ms``
(send lag; None on a virtual clock)."""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

ANSWERED = ("ok", "late")
"""Outcomes whose latency the percentiles cover (an answer below its accuracy floor is not counted as served)."""


def summarize(records: Sequence[Any]) -> dict[str, Any]:
    """Attainment and real accuracy over requests *sent*; served accuracy over the in-time answers;
    latency percentiles over the requests answered in time or late;
    refusals and drops are counted, not timed."""
    n = len(records)
    by = Counter(r.outcome for r in records)
    ok = [r for r in records if r.outcome == "ok"]
    answered = [r.latency_ms for r in records if r.outcome in ANSWERED]
    pct = (lambda q: round(float(np.percentile(answered, q)), 3)) if answered else (lambda q: None)
    known = not ok or any(r.correct is not None for r in ok)  # the simulator without a record knows no labels
    lags = [r.lag_ms for r in records if r.lag_ms is not None]
    return {"requests": n, "slo_attainment": round(len(ok) / n, 4) if n else None,
            "mean_served_accuracy": round(float(np.mean([r.accuracy for r in ok])), 4) if ok else None,
            "real_accuracy": round(sum(bool(r.correct) for r in ok) / n, 4) if n and known else None,
            "late": by["late"], "inaccurate": by["inaccurate"], "dropped": by["dropped"],
            "rejected": by["rejected"], "errors": by["error"],
            "escalated": sum(r.escalations > 0 for r in records),
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "send_lag_p99_ms": round(float(np.percentile(lags, 99)), 3) if lags else None,
            "subnets": dict(Counter(r.subnet for r in records if r.outcome in ANSWERED).most_common())}


def describe(s: dict[str, Any]) -> str:
    """One line of a summary, the same names for the same numbers wherever it is printed."""
    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)
    return (f"attainment {num(s['slo_attainment'], '.3f')}  served acc {num(s['mean_served_accuracy'], '.4f')}  "
            f"real acc {num(s['real_accuracy'], '.4f')}  late {s['late']}  below floor {s['inaccurate']}  "
            f"dropped {s['dropped']}  rejected {s['rejected']}  errors {s['errors']}  escalated {s['escalated']}  "
            f"p50 {s['p50_ms']} p99 {s['p99_ms']} ms")
