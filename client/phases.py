"""Where each answered request spent its time, on one clock: the load generator's send and receive times
(client/loadgen.py, ``Record.sent_ms`` and ``latency_ms``) joined by request id with the sidecar's request log
(``serve --request-log``, written by scheduler/sidecar/dataplane.py). Both stamp CLOCK_MONOTONIC, so on one host
the differences are real durations:

- ``to_scheduler``: send until the front end had decoded the request (the client's gRPC stack, the kernel's
  socket queues, the sidecar's gRPC threads and event loop before the handler ran);
- ``in_scheduler``: decoded until the engine answered (queue, batch, the Triton call);
- ``encode``: answered until the front end had encoded the answer;
- ``to_client``: encoded until the client had it (gRPC's write path in the sidecar, the socket, the client).

When the client sent a gRPC deadline under a second, gRPC's server sets the call's deadline from when its threads
read the call (plus what the client's deadline had left when the client's gRPC wrote it), so the deadline minus the
timeout the client asked for (``Record.timeout_s``) splits ``to_scheduler`` in two: ``to_grpc`` (the kernel and the
wire, until the sidecar's gRPC threads read the call) and ``in_grpc`` (read until the front end ran: gRPC's threads
and the event loop; it also holds the client's own delay between its call and its gRPC's write, small while the
client is not starved, ``bench --client-nice``). Longer timeouts are sent rounded up (gRPC's wire format: 30.1 s
arrived as about 30.2 s), so they do not split (``bench --deadline-slack-s 0`` sends the SLO itself).

The scheduler's own clock covers ``in_scheduler`` and ``encode`` only; a request late at the client but not by
that clock lost its time in ``to_scheduler`` or ``to_client``, and the summary says which."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from superserve.client import batchlog

PHASES = ("to_scheduler", "in_scheduler", "encode", "to_client")
SPLIT = ("to_grpc", "in_grpc")
"""``to_scheduler`` in two, where the sidecar's log has the call's deadline (docstring)."""
EXACT_TIMEOUT_S = 1.0
"""gRPC sends timeouts below this to the millisecond; longer ones rounded up (docstring)."""


def join(records: Sequence, logged: Sequence[dict]) -> list[dict]:
    """Per answered request found in both: its phases (ms), its SLO and whether it was late at the client."""
    by_id = {row["id"]: row for row in logged}
    out = []
    for r in records:
        row = by_id.get(str(r.index))
        if row is None or r.sent_ms is None or r.latency_ms is None or r.status != "OK":
            continue
        received = r.sent_ms + r.latency_ms
        j = {"to_scheduler": row["decoded"] - r.sent_ms, "in_scheduler": row["answered"] - row["decoded"],
             "encode": row["encoded"] - row["answered"], "to_client": received - row["encoded"],
             "slo_ms": r.slo_ms, "late": r.outcome == "late"}
        if "deadline" in row and r.timeout_s is not None and r.timeout_s < EXACT_TIMEOUT_S:
            read = row["deadline"] - r.timeout_s * 1000
            j["to_grpc"], j["in_grpc"] = read - r.sent_ms, row["decoded"] - read
        out.append(j)
    return out


def _q(a) -> dict:
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 90, 99)} if len(a) else {}


def summarize(joined: Sequence[dict]) -> dict:
    """Quantiles of each phase over all joined answers and over the late ones; for each late answer, the phase
    that took the most of its time beyond what the scheduler's clock saw (the blame counts)."""
    if not joined:
        return {}
    late = [j for j in joined if j["late"]]
    out = {"n": len(joined), "late": len(late),
           "all": {p: _q([j[p] for j in joined if p in j]) for p in PHASES + SPLIT},
           "late_answers": {p: _q([j[p] for j in late if p in j]) for p in PHASES + SPLIT}}
    # late at the client although the scheduler's part (in_scheduler + encode) fit the SLO: the time outside
    blame = {"to_scheduler": 0, "to_client": 0, "scheduler": 0}
    for j in late:
        inside = j["in_scheduler"] + j["encode"]
        if inside > j["slo_ms"]:
            blame["scheduler"] += 1
        else:
            blame["to_scheduler" if j["to_scheduler"] >= j["to_client"] else "to_client"] += 1
    out["late_blame"] = blame
    return out


def from_files(records: Sequence, request_log: str | None, skip: int = 0) -> dict:
    """``summarize`` of the records joined with the request log's lines after the first ``skip``."""
    return summarize(join(records, batchlog.read(request_log, skip=skip)))
