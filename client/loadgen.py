"""Open-loop load generator: sends each request at its trace time, whatever the responses.

Closed-loop clients (send, wait, send) slow down exactly when the server does and so hide queueing;
SLO attainment is only meaningful open-loop. Each arrival of the trace becomes one gRPC ModelInfer
(``tritonclient.grpc.aio``) of one labelled Fashion-MNIST test image, with its own ``slo_ms``. The
result is one ``Record`` per request sent: every request is accounted for, including the ones that
never got an answer (outcome ``error``, after a client timeout well past their deadline).

Outcomes, judged at the client (send to response, the latency a user sees):
``ok`` answered within slo_ms (by a subnet meeting the request's accuracy floor, if it set one)
· ``late`` answered after it · ``inaccurate`` answered in time by a subnet below the floor (plain
Triton cannot honour floors) · ``dropped`` refused because the deadline could not be met (the
sidecar's 504/DEADLINE_EXCEEDED, Triton's queue-timeout rejection) · ``rejected`` refused for
overload (503/UNAVAILABLE: queue full) · ``error`` anything else.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from superserve.client.slo_classes import floor_classes, normalised
from superserve.client.slo_classes import parse as parse_slo_classes


@dataclass(frozen=True)
class Target:
    url: str
    """gRPC host:port."""
    model: str = "supernet"
    slo_param: bool = True
    """Send ``slo_ms`` as a request parameter (the sidecar); False for plain Triton models."""
    triton_timeout: bool = False
    """Send the SLO as Triton's per-request queue timeout (``timeout`` in µs), for Triton's queue policy."""
    metrics_url: str | None = None
    """The sidecar's Prometheus endpoint, if any (for the scheduler's own view of a run)."""
    batch_log: str | None = None
    """The sidecar's per-batch log file (``serve --batch-log``), if any."""
    request_log: str | None = None
    """The sidecar's per-request log file (``serve --request-log``), if any."""


@dataclass
class Record:
    index: int
    send_s: float
    """Planned send time (trace time, s from start)."""
    lag_ms: float
    """How late the generator actually sent it (a healthy run keeps this near 0)."""
    slo_ms: float
    min_accuracy: float = 0.0
    latency_ms: float | None = None
    outcome: str = "error"
    status: str = ""
    subnet: str | None = None
    accuracy: float | None = None
    correct: bool | None = None
    batch_size: int | None = None
    escalations: int = 0
    """Cascade stages run after the first (INFO's escalations)."""
    message: str = ""
    sent_ms: float | None = None
    """When it was sent, CLOCK_MONOTONIC ms (the sidecar's clock too: client/phases.py joins the two by request id,
    which is the record's index)."""
    timeout_s: float | None = None
    """The gRPC deadline it was sent with, s after sending (``slo_ms`` plus the run's deadline slack)."""


DEADLINE_SLACK_S = 30.0
"""By default a request's gRPC deadline is its SLO plus this, so a late answer is still received and counted late;
0 is a client that gives up at its latency target (the sidecar then plans with what is left of it, admission.py)."""


def slo_classes(spec: str, allow_zero: bool = False) -> list[tuple[float, float]]:
    """``"50"`` or ``"50:0.7,200:0.3"`` -> [(slo_ms, probability)], in the grammar Locust reads too
    (client/slo_classes.py). ``allow_zero``: accuracy-floor classes instead (``"0:0.6,0.92:0.4"``), drawn on
    their own (``bench --min-accuracy``)."""
    if allow_zero:
        return floor_classes(spec)
    classes = parse_slo_classes(spec, allow_default=False)
    for c in classes:
        if c.min_accuracy is not None:
            raise ValueError(f"SLO class {c.slo_ms:g}:{c.weight:g}:{c.min_accuracy:g}: the load generator takes "
                             "accuracy floors from --min-accuracy, not from a class's third field (min_accuracy)")
    return normalised([(c.slo_ms, c.weight) for c in classes if c.slo_ms is not None])


def assign_slos(n: int, classes: Sequence[tuple[float, float]], seed: int, stream: int = 7919) -> np.ndarray:
    """The value (slo_ms, or accuracy floor) of each of ``n`` requests, drawn from the classes with a
    fixed seed, so every policy sees the same; ``stream`` keeps the SLO and floor draws independent."""
    rng = np.random.default_rng(seed + stream)
    slos = np.array([s for s, _ in classes])
    return slos[rng.choice(len(classes), size=n, p=[p for _, p in classes])]


def _dropped(e: InferenceServerException) -> bool:
    status, msg = str(e.status()), (e.message() or "").lower()
    return "DEADLINE_EXCEEDED" in status or ("UNAVAILABLE" in status and "timeout" in msg)


async def _one(client, target: Target, rec: Record, x: np.ndarray, label: int, start: float,
               deadline_slack_s: float = DEADLINE_SLACK_S) -> None:
    inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    params = {"slo_ms": rec.slo_ms} if target.slo_param else None
    if params is not None and rec.min_accuracy > 0:
        params["min_accuracy"] = rec.min_accuracy
    kwargs = {"timeout": int(rec.slo_ms * 1000)} if target.triton_timeout else {}
    rec.timeout_s = rec.slo_ms / 1000 + deadline_slack_s
    t = time.perf_counter()
    rec.lag_ms = round((t - start - rec.send_s) * 1000, 3)
    rec.sent_ms = round(t * 1000, 3)
    try:
        r = await client.infer(target.model, [inp], parameters=params, client_timeout=rec.timeout_s,
                               request_id=str(rec.index), **kwargs)
    except InferenceServerException as e:
        rec.latency_ms = (time.perf_counter() - t) * 1000
        rec.status, rec.message = str(e.status()).replace("StatusCode.", ""), (e.message() or "")[:200]
        rec.outcome = "dropped" if _dropped(e) else "rejected" if "UNAVAILABLE" in rec.status else "error"
        return
    except Exception as e:  # noqa: BLE001 - a transport failure is still an answer to account for
        rec.status, rec.message, rec.outcome = type(e).__name__, str(e)[:200], "error"
        return
    rec.latency_ms = (time.perf_counter() - t) * 1000
    info = json.loads(r.as_numpy("INFO")[0][0])
    rec.status = "OK"
    rec.subnet, rec.accuracy, rec.batch_size = info.get("subnet"), info.get("accuracy"), info.get("batch_size")
    rec.escalations = info.get("escalations") or 0
    rec.outcome = "late" if rec.latency_ms > rec.slo_ms else "inaccurate" if rec.accuracy < rec.min_accuracy else "ok"
    rec.correct = bool(int(np.argmax(r.as_numpy("LOGITS")[0])) == int(label))


async def run_open_loop(target: Target, arrivals_s: np.ndarray, slos_ms: np.ndarray, images: np.ndarray,
                        labels: np.ndarray, min_accuracy: np.ndarray | None = None, progress=None,
                        deadline_slack_s: float = DEADLINE_SLACK_S) -> list[Record]:
    """Send request i at ``arrivals_s[i]`` (image ``i mod len(images)``) with ``slos_ms[i]`` and
    accuracy floor ``min_accuracy[i]`` (0: none), as a gRPC call whose deadline is ``slos_ms[i]`` plus
    ``deadline_slack_s``; return one Record per request."""
    floors = np.zeros(len(arrivals_s)) if min_accuracy is None else np.asarray(min_accuracy, dtype=float)
    if not len(arrivals_s) == len(slos_ms) == len(floors):
        raise ValueError(f"{len(arrivals_s)} arrivals but {len(slos_ms)} SLOs and {len(floors)} accuracy floors")
    client = grpcaio.InferenceServerClient(target.url)
    records = [Record(i, float(t), 0.0, float(s), float(a))
               for i, (t, s, a) in enumerate(zip(arrivals_s, slos_ms, floors))]
    tasks = []
    try:
        start = time.perf_counter()
        for rec in records:
            delay = rec.send_s - (time.perf_counter() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            k = rec.index % len(images)
            tasks.append(asyncio.create_task(_one(client, target, rec, images[k:k + 1], labels[k], start,
                                                  deadline_slack_s)))
            if progress and rec.index % 200 == 0:
                progress(rec.index)
        await asyncio.gather(*tasks)
    finally:
        await client.close()
    return records


def records_json(records: Sequence[Record]) -> list[dict]:
    return [asdict(r) for r in records]
