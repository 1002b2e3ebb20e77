"""Locust users for SuperServe (and plain Triton), built on ``tritonclient`` over HTTP and gRPC.

Each request sends one Fashion-MNIST test image to the model (default ``supernet``) with the KServe v2
parameters of an *SLO class*, picked at random by weight: ``--slo-classes 50:0.5,200:0.5`` means half
the requests ask for 50 ms, half for 200 ms; an optional third field is ``min_accuracy``
(``200:1:0.9``), and ``none`` as the latency sends no ``slo_ms`` (the server's default applies and the
client judges nothing). The grammar is client/slo_classes.py's, which ``superserve bench --slo-ms`` reads too.
Locust's statistics get one row per class (``supernet slo=50ms``), with a
*miss* counted as a failure: the server dropped the request as infeasible (HTTP 504 / gRPC
DEADLINE_EXCEEDED, ``Dropped``), or the answer reached the client after its ``slo_ms`` (``Late``).
Other server errors are failures too. Whether the answer had the right label is not a failure: it
goes, with the subnets and profiled accuracy reported in ``INFO``, into a summary logged at the end
and written to ``<csv prefix>_superserve.csv``.

Locust is closed-loop: a user sends its next request only after the previous one returned, so a
slow server slows its own load down. Use it to explore and watch (web UI, bursts); SLO attainment
is measured with ``superserve bench``, whose open-loop generator replays fixed arrival traces.

Run the stack (``superserve serve``: HTTP 8010, gRPC 8011, embedded Triton on 8000-8002), then::

    # gRPC, headless, 20 users for 60 s, CSV files results/locust_grpc_*.csv
    locust -f client/locustfile.py TritonGrpcUser --host 127.0.0.1:8011 --headless -u 20 -r 5 -t 60s \\
        --slo-classes 50:0.5,200:0.5 --csv results/locust_grpc --only-summary
    # the same over HTTP (with or without the http:// scheme)
    locust -f client/locustfile.py TritonHttpUser --host http://127.0.0.1:8010 --headless -u 20 -r 5 -t 60s \\
        --slo-classes 50:0.5,200:0.5 --csv results/locust_http
    # bursts: 2 users, rising to 20 for the last 5 s of every 20 s, 120 s in all (-u/-r/-t are not needed)
    locust -f client/locustfile.py TritonGrpcUser --host 127.0.0.1:8011 --headless --bursts \\
        --burst-base-users 2 --burst-peak-users 20 --burst-period 20 --burst-length 5 --burst-duration 120 \\
        --csv results/locust_bursts
    # web UI on http://127.0.0.1:8089; --class-picker offers the user classes and BurstShape
    locust -f client/locustfile.py --web-host 127.0.0.1 --class-picker

Without ``--host`` each class uses the ``superserve serve`` default port of its protocol; when you pass
``--host``, name the one user class that speaks that protocol. Plain Triton (``superserve triton``:
HTTP 8000, gRPC 8001) serves the same model name and tensors and ignores ``slo_ms``, so point the
same command at it to compare; misses are then judged at the client only. ``--no-slo-param`` keeps
the classes but sends no ``slo_ms`` (for servers that reject parameters they do not know).

Options of this file (each also an environment variable ``SUPERSERVE_<NAME>``, see ``_add_arguments``;
Locust's ``--help`` does not list them): ``--slo-classes``, ``--model-name``, ``--no-slo-param``,
``--user-rps`` (requests per second per user, 0 = back to back; default 5), ``--client-timeout``,
``--data-dir``; burst shape: ``--bursts``, ``--burst-base-users``, ``--burst-peak-users``,
``--burst-period``, ``--burst-length``, ``--burst-duration``, ``--burst-spawn-rate``.

Locust exits with code 1 when any request failed; misses are failures, so a run with misses exits 1
(``--exit-code-on-error 0`` changes that). Its ``_stats.csv`` is rewritten once a second, so it may
lag the final summary printed at exit by up to a second of requests.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass

from locust import LoadTestShape, User, constant_throughput, events, task
from locust.runners import MasterRunner, WorkerRunner

import grpc.experimental.gevent as grpc_gevent  # noqa: E402  (after locust has monkey-patched the stdlib)

# gRPC's C core does its own I/O: without this, every call blocks the whole gevent loop (one user at a
# time). It must run after gevent patched the stdlib (importing locust does that) and before any channel.
grpc_gevent.init_gevent()

import numpy as np  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from superserve.client.slo_classes import SloClass  # noqa: E402  (the grammar bench's load generator reads too)
from superserve.client.slo_classes import parse as parse_slo_classes  # noqa: E402

log = logging.getLogger("superserve.locust")
DEADLINE_STATUSES = ("504", "StatusCode.DEADLINE_EXCEEDED")


class Dropped(Exception):
    """The server answered 504 / DEADLINE_EXCEEDED: no admissible subnet could meet the deadline."""


class Late(Exception):
    """The answer reached the client after the request's slo_ms."""


class ServerError(Exception):
    """Any other error the server (or the connection) returned."""


@dataclass(frozen=True)
class Settings:
    """The per-run options, read from Locust's parsed options (which the web UI may change per run)."""
    model: str
    classes: tuple[SloClass, ...]
    send_slo: bool
    user_rps: float
    """Request rate cap per user (requests/s); 0 sends back to back."""
    client_timeout_s: float

    @classmethod
    def from_options(cls, opts) -> "Settings":
        return cls(model=str(opts.model_name), classes=parse_slo_classes(opts.slo_classes),
                   send_slo=not opts.no_slo_param, user_rps=float(opts.user_rps),
                   client_timeout_s=float(opts.client_timeout))


@dataclass(frozen=True)
class BurstPlan:
    """``base_users`` users, rising to ``peak_users`` for the last ``length_s`` of every ``period_s``."""
    base_users: int
    peak_users: int
    period_s: float
    length_s: float
    duration_s: float
    spawn_rate: float

    def __post_init__(self):
        if not 0 <= self.base_users <= self.peak_users or self.peak_users < 1:
            raise ValueError(f"bursts need 0 <= base users ({self.base_users}) <= peak users "
                             f"({self.peak_users}) and peak >= 1")
        if not 0 < self.length_s <= self.period_s or self.duration_s <= 0 or self.spawn_rate <= 0:
            raise ValueError(f"bursts need 0 < length ({self.length_s} s) <= period ({self.period_s} s), "
                             f"duration ({self.duration_s} s) > 0, spawn rate ({self.spawn_rate}) > 0")

    @classmethod
    def from_options(cls, opts) -> "BurstPlan":
        return cls(int(opts.burst_base_users), int(opts.burst_peak_users), float(opts.burst_period),
                   float(opts.burst_length), float(opts.burst_duration), float(opts.burst_spawn_rate))

    def users_at(self, t_s: float) -> int | None:
        if t_s >= self.duration_s:
            return None
        return self.peak_users if t_s % self.period_s >= self.period_s - self.length_s else self.base_users


class BurstShape(LoadTestShape):
    """Steady base load with periodic spikes, then stop (see BurstPlan). Opt-in: Locust would run any
    concrete shape in the locustfile automatically, so this one is abstract and ``--bursts`` (or the web
    UI's ``--class-picker``) installs it."""
    abstract = True

    def tick(self):
        plan = BurstPlan.from_options(self.runner.environment.parsed_options)
        users = plan.users_at(self.get_run_time())
        return None if users is None else (users, plan.spawn_rate)


class Tally:
    """Per SLO class outcome counts, subnets and accuracy; merged from workers in distributed runs."""
    FIELDS = ("sent", "in_time", "late", "dropped", "errors", "correct", "with_accuracy", "accuracy_sum")

    def __init__(self):
        self.rows: dict[str, dict] = {}

    def row(self, name: str) -> dict:
        return self.rows.setdefault(name, {**{f: 0 for f in self.FIELDS}, "subnets": {}})

    def add(self, name: str, outcome: str, info: dict | None = None, correct: bool | None = None) -> None:
        r = self.row(name)
        r["sent"] += 1
        r[outcome] += 1
        if outcome == "in_time":
            if info and info.get("accuracy") is not None:
                r["accuracy_sum"] += float(info["accuracy"])
                r["with_accuracy"] += 1
            if info and info.get("subnet"):
                r["subnets"][info["subnet"]] = r["subnets"].get(info["subnet"], 0) + 1
            r["correct"] += bool(correct)

    def merge(self, rows: dict | None) -> None:
        for name, other in (rows or {}).items():
            r = self.row(name)
            for f in self.FIELDS:
                r[f] += other[f]
            for subnet, n in other["subnets"].items():
                r["subnets"][subnet] = r["subnets"].get(subnet, 0) + n

    def drain(self) -> dict:
        rows, self.rows = self.rows, {}
        return rows

    def summary(self) -> list[dict]:
        out = []
        for name, r in sorted(self.rows.items()):
            sent = r["sent"] or 1
            top = Counter(r["subnets"]).most_common(1)
            served = r["accuracy_sum"] / r["with_accuracy"] if r["with_accuracy"] else None
            out.append({"name": name, **{f: r[f] for f in ("sent", "in_time", "late", "dropped", "errors")},
                        "slo_attainment": round(r["in_time"] / sent, 4),
                        "mean_served_accuracy": "" if served is None else round(served, 4),
                        "real_accuracy": round(r["correct"] / sent, 4), "top_subnet": top[0][0] if top else ""})
        return out


TALLY = Tally()
DATA: dict[str, np.ndarray] = {}


@events.init_command_line_parser.add_listener
def _add_arguments(parser):
    # Locust's own parser (an argument group would not take include_in_web_ui); each option has an env var.
    parser.add_argument("--slo-classes", default="50:0.5,200:0.5", env_var="SUPERSERVE_SLO_CLASSES",
                        help="comma-separated slo_ms[:weight[:min_accuracy]]; slo 'none' sends no slo_ms")
    parser.add_argument("--model-name", default="supernet", env_var="SUPERSERVE_MODEL_NAME", help="model to infer")
    parser.add_argument("--no-slo-param", action="store_true", default=False, env_var="SUPERSERVE_NO_SLO_PARAM",
                        help="send no slo_ms parameter (misses are still judged at the client)")
    parser.add_argument("--user-rps", type=float, default=5.0, env_var="SUPERSERVE_USER_RPS",
                        help="requests per second per user at most (0: back to back)")
    parser.add_argument("--client-timeout", type=float, default=30.0, env_var="SUPERSERVE_CLIENT_TIMEOUT",
                        help="seconds before the client gives up on a request")
    parser.add_argument("--data-dir", default="", env_var="SUPERSERVE_DATA_DIR", include_in_web_ui=False,
                        help="folder with the Fashion-MNIST IDX .gz files (default /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--bursts", action="store_true", default=False, env_var="SUPERSERVE_BURSTS",
                        include_in_web_ui=False, help="drive the user count with BurstShape (ignores -u, -r)")
    parser.add_argument("--burst-base-users", type=int, default=2, env_var="SUPERSERVE_BURST_BASE_USERS")
    parser.add_argument("--burst-peak-users", type=int, default=20, env_var="SUPERSERVE_BURST_PEAK_USERS")
    parser.add_argument("--burst-period", type=float, default=20.0, env_var="SUPERSERVE_BURST_PERIOD",
                        help="seconds from one burst to the next")
    parser.add_argument("--burst-length", type=float, default=5.0, env_var="SUPERSERVE_BURST_LENGTH",
                        help="seconds each burst lasts (at the end of each period)")
    parser.add_argument("--burst-duration", type=float, default=120.0, env_var="SUPERSERVE_BURST_DURATION",
                        help="seconds until the shape stops the test")
    parser.add_argument("--burst-spawn-rate", type=float, default=100.0, env_var="SUPERSERVE_BURST_SPAWN_RATE",
                        help="users started or stopped per second when the count changes")


@events.init.add_listener
def _on_init(environment, runner, **_):
    opts = environment.parsed_options
    try:
        Settings.from_options(opts)
        if opts.bursts:
            BurstPlan.from_options(opts)
    except ValueError as e:
        log.error("bad option: %s", e)
        sys.exit(1)
    shape = BurstShape()
    if environment.available_shape_classes is not None:  # offered by the web UI's --class-picker
        shape = environment.available_shape_classes.setdefault("BurstShape", shape)
    if opts.bursts:
        shape.runner = runner
        environment.shape_class = shape
    if not isinstance(runner, MasterRunner):
        from superserve.supernet.data import DatasetMissing, load_split
        try:
            DATA["images"], DATA["labels"] = load_split("test", opts.data_dir or None)
        except DatasetMissing as e:
            log.error("%s", e)
            sys.exit(1)


@events.test_start.add_listener
def _on_test_start(environment, **_):
    TALLY.drain()
    if environment.host and len(environment.user_classes) > 1:
        log.warning("--host %s applies to every user class; HTTP and gRPC listen on different ports, so name "
                    "one class (TritonGrpcUser or TritonHttpUser)", environment.host)


@events.report_to_master.add_listener
def _report_to_master(client_id, data, **_):
    data["superserve"] = TALLY.drain()


@events.worker_report.add_listener
def _worker_report(client_id, data, **_):
    TALLY.merge(data.get("superserve"))


@events.quitting.add_listener
def _on_quitting(environment, **_):
    if isinstance(environment.runner, WorkerRunner):
        return
    rows = TALLY.summary()
    if not rows:
        return
    log.info("SuperServe client-side summary (closed loop; measure SLO attainment with superserve bench):")
    for r in rows:
        log.info("  %-30s sent %6d  in time %6d  late %5d  dropped %5d  errors %5d  attainment %.4f  "
                 "served acc %s  real acc %.4f  top subnet %s", r["name"], r["sent"], r["in_time"], r["late"],
                 r["dropped"], r["errors"], r["slo_attainment"], r["mean_served_accuracy"], r["real_accuracy"],
                 r["top_subnet"])
    prefix = environment.parsed_options.csv_prefix if environment.parsed_options else None
    if prefix:
        with open(f"{prefix}_superserve.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _info(values: np.ndarray | None) -> dict | None:
    """The JSON in the first INFO element, or None (another model, or not JSON)."""
    try:
        return json.loads(values.reshape(-1)[0]) if values is not None and values.size else None
    except (ValueError, TypeError):
        return None


def _strip_scheme(host: str) -> tuple[str, bool]:
    """``http://h:p/`` -> (``h:p``, False), ``https://h:p`` -> (``h:p``, True); no scheme is kept as is."""
    host = host.strip().rstrip("/")
    for scheme, ssl in (("https://", True), ("http://", False), ("grpc://", False), ("grpcs://", True)):
        if host.startswith(scheme):
            return host[len(scheme):], ssl
    return host, False


class TritonUser(User):
    """One image per request, SLO class by weight, misses as failures. Subclasses speak one protocol."""
    abstract = True
    protocol = ""

    def __init__(self, environment):
        super().__init__(environment)
        self.settings = Settings.from_options(environment.parsed_options)
        self.weights = [c.weight for c in self.settings.classes]
        self.url, self.ssl = _strip_scheme(self.host)
        # The scheduler's bearer token (superserve serve --token-file / SUPERSERVE_TOKEN), from the environment
        # only: a Locust option would show on the command line and in the web UI.
        token = os.environ.get("SUPERSERVE_TOKEN", "").strip()
        self.headers = {"authorization": f"Bearer {token}"} if token else None

    def wait_time(self) -> float:
        """At most ``--user-rps`` requests per second per user (Locust's ``constant_throughput``); 0: none."""
        rps = self.settings.user_rps
        return constant_throughput(rps)(self) if rps > 0 else 0.0

    @task
    def infer(self) -> None:
        cls = random.choices(self.settings.classes, self.weights)[0]
        name = cls.name(self.settings.model)
        i = random.randrange(len(DATA["labels"]))
        start = time.perf_counter()
        try:
            result = self._infer(DATA["images"][i:i + 1], cls.parameters(self.settings.send_slo))
        except InferenceServerException as e:
            elapsed_ms = (time.perf_counter() - start) * 1000
            log.debug("%s: %s %s", name, e.status(), e.message())
            if str(e.status()) in DEADLINE_STATUSES:
                dropped = Dropped("deadline infeasible: dropped by the server (504/DEADLINE_EXCEEDED)")
                self._fire(name, elapsed_ms, dropped)
                TALLY.add(name, "dropped")
            else:
                self._fire(name, elapsed_ms, ServerError(f"{e.status()}: {str(e.message())[:200]}"))
                TALLY.add(name, "errors")
            return
        except Exception as e:  # connection refused, reset, timeouts of the HTTP client
            self._fire(name, (time.perf_counter() - start) * 1000, ServerError(f"{type(e).__name__}: {e}"[:200]))
            TALLY.add(name, "errors")
            return
        elapsed_ms = (time.perf_counter() - start) * 1000
        logits, info = result.as_numpy("LOGITS"), result.as_numpy("INFO")
        info = _info(info)
        correct = logits is not None and int(np.asarray(logits).reshape(-1).argmax()) == int(DATA["labels"][i])
        late = cls.slo_ms is not None and elapsed_ms > cls.slo_ms
        self._fire(name, elapsed_ms, Late(f"answered after the {cls.slo_ms:g} ms SLO") if late else None,
                   length=logits.nbytes if logits is not None else 0)
        TALLY.add(name, "late" if late else "in_time", info, correct)

    def _fire(self, name: str, elapsed_ms: float, exception: Exception | None, length: int = 0) -> None:
        self.environment.events.request.fire(request_type=self.protocol, name=name, response_time=elapsed_ms,
                                             response_length=length, exception=exception, context={})

    def _infer(self, x: np.ndarray, params: dict):
        raise NotImplementedError


class TritonGrpcUser(TritonUser):
    """tritonclient.grpc (synchronous calls, made cooperative by ``grpc.experimental.gevent``)."""
    host = "127.0.0.1:8011"
    protocol = "grpc"

    def on_start(self) -> None:
        self.client = grpcclient.InferenceServerClient(self.url, ssl=self.ssl)

    def on_stop(self) -> None:
        self.client.close()

    def _infer(self, x, params):
        inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return self.client.infer(self.settings.model, [inp], parameters=params or None,
                                 client_timeout=self.settings.client_timeout_s, headers=self.headers)


class TritonHttpUser(TritonUser):
    """tritonclient.http (geventhttpclient underneath: cooperative already)."""
    host = "http://127.0.0.1:8010"
    protocol = "http"

    def on_start(self) -> None:
        self.client = httpclient.InferenceServerClient(self.url, ssl=self.ssl, concurrency=1,
                                                       network_timeout=self.settings.client_timeout_s)

    def on_stop(self) -> None:
        self.client.close()

    def _infer(self, x, params):
        inp = httpclient.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        return self.client.infer(self.settings.model, [inp], parameters=params or None,
                                 headers=dict(self.headers) if self.headers else None)  # it adds its own
