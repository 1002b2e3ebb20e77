"""The INFO output's rows (docs/design.md): Triton's JSON per row, with the scheduler's fields filled in.

Triton's backend writes ``"queue_ms": null`` (it cannot know) and ``"escalations": 0, "subnets":
[<subnet>]`` last. Decoding and re-encoding that JSON for every request cost more than the rest of
answering it, so the scheduler splices its values into the bytes instead; the result is byte for
byte what ``json.dumps`` of the updated dict gives (tested). A row in any other form (a dict from an
in-process worker, or bytes another backend wrote) takes the slow, general path.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

_QUEUE = b'"queue_ms": null'
_ESC = b', "escalations": '


def annotate(row: bytes | dict[str, Any], queue_ms: float, escalations: int, subnets: Sequence[str]) -> bytes:
    """``row`` with queue_ms, escalations and subnets set, as JSON bytes."""
    if isinstance(row, (bytes, bytearray)):
        q, e = row.find(_QUEUE), row.rfind(_ESC)
        if 0 <= q < e and row.endswith(b"]}"):
            return b"".join((row[:q], b'"queue_ms": ', json.dumps(queue_ms).encode(), row[q + len(_QUEUE):e], _ESC,
                             str(escalations).encode(), b', "subnets": ', json.dumps(list(subnets)).encode(), b"}"))
    fields: dict[str, Any] = json.loads(row) if isinstance(row, (bytes, bytearray)) else row
    return json.dumps(dict(fields, queue_ms=queue_ms, escalations=escalations, subnets=list(subnets))).encode()


def parse(row: bytes | dict[str, Any], queue_ms: float, escalations: int, subnets: Sequence[str]) -> dict[str, Any]:
    """``row`` as a dict with the scheduler's fields set (for confidence checks and tests)."""
    d: dict[str, Any] = json.loads(row) if isinstance(row, (bytes, bytearray)) else dict(row)
    d.update(queue_ms=queue_ms, escalations=escalations, subnets=list(subnets))
    return d
