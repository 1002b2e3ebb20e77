"""The Prometheus text exposition of the scheduler's statistics (STYLE.md section 6 names).

The engine fills a ``Stats`` (scheduler/core/stats.py); ``render`` publishes it at /metrics. Base units (seconds),
counters end in ``_total``, labels have bounded values (outcomes, served models, subnets, worker urls)."""
from __future__ import annotations

from ..core.stats import OUTCOMES, Stats


def render(s: Stats) -> str:
    out = ["# HELP sched_requests_total Requests answered, by outcome (late = answered after its deadline).",
           "# TYPE sched_requests_total counter"]
    out += [f'sched_requests_total{{outcome="{o}"}} {s.requests[o]}' for o in OUTCOMES]
    out += ["# HELP sched_deadline_misses_total Requests answered after their deadline or dropped as infeasible.",
            "# TYPE sched_deadline_misses_total counter", f"sched_deadline_misses_total {s.deadline_misses}",
            "# HELP sched_served_accuracy_sum Sum of the profiled accuracy of the subnets that answered in time.",
            "# TYPE sched_served_accuracy_sum counter", f"sched_served_accuracy_sum {s.served_accuracy_sum:.6f}",
            "# HELP sched_queue_depth Requests waiting in the EDF queue.",
            "# TYPE sched_queue_depth gauge", f"sched_queue_depth {s.queue_depth}",
            "# HELP sched_model_loads_total Variant models loaded on demand before a batch could run (infaas).",
            "# TYPE sched_model_loads_total counter", f"sched_model_loads_total {s.model_loads}",
            "# HELP sched_model_load_seconds_total Time spent loading those models.",
            "# TYPE sched_model_load_seconds_total counter", f"sched_model_load_seconds_total {s.model_load_seconds_sum:.3f}",
            "# HELP sched_escalations_total Requests re-queued for a more accurate subnet (cascade stage).",
            "# TYPE sched_escalations_total counter", f"sched_escalations_total {s.escalations}",
            "# HELP sched_escalation_fallbacks_total Escalated requests answered with the previous stage's result.",
            "# TYPE sched_escalation_fallbacks_total counter", f"sched_escalation_fallbacks_total {s.escalation_fallbacks}",
            "# HELP sched_profile_latency_scale Observed over profiled batch latency that the policy plans with.",
            "# TYPE sched_profile_latency_scale gauge", f"sched_profile_latency_scale {s.latency_factor}",
            "# HELP sched_subnet_selected_total Requests served per subnet.",
            "# TYPE sched_subnet_selected_total counter"]
    out += [f'sched_subnet_selected_total{{model="{m}",subnet="{k}"}} {v}'
            for (m, k), v in sorted(s.subnet_selected.items())]
    out += ["# HELP sched_model_requests_total Requests for each served model, by outcome (sched_requests_total "
            "also counts those refused before a model was known).", "# TYPE sched_model_requests_total counter"]
    out += [f'sched_model_requests_total{{model="{m}",outcome="{o}"}} {s.model_requests[(m, o)]}'
            for m in sorted({m for m, _ in s.model_requests} | set(s.model_latency_factor)) for o in OUTCOMES]
    out += ["# HELP sched_model_profile_latency_scale Observed over profiled batch latency each model's policy "
            "plans with.", "# TYPE sched_model_profile_latency_scale gauge"]
    out += [f'sched_model_profile_latency_scale{{model="{m}"}} {f}' for m, f in sorted(s.model_latency_factor.items())]
    out += ["# HELP sched_worker_inflight Batches in flight per Triton worker.", "# TYPE sched_worker_inflight gauge"]
    out += [f'sched_worker_inflight{{worker="{k}"}} {v}' for k, v in sorted(s.worker_inflight.items())]
    out += ["# HELP sched_worker_healthy 1 while a Triton worker is in rotation, 0 while it is out.",
            "# TYPE sched_worker_healthy gauge"]
    out += [f'sched_worker_healthy{{worker="{k}"}} {v}' for k, v in sorted(s.worker_healthy.items())]
    out += ["# HELP sched_worker_failures_total Times a worker was found failing, by reason (error, hang, probe).",
            "# TYPE sched_worker_failures_total counter"]
    out += [f'sched_worker_failures_total{{worker="{w}",reason="{r}"}} {v}'
            for (w, r), v in sorted(s.worker_failures.items())]
    out += ["# HELP sched_worker_batches_total Batch calls per worker, by outcome (ok, failed, hung, invalid, deadline).",
            "# TYPE sched_worker_batches_total counter"]
    out += [f'sched_worker_batches_total{{worker="{w}",outcome="{o}"}} {v}'
            for (w, o), v in sorted(s.worker_batches.items())]
    out += ["# HELP sched_worker_readmissions_total Times a worker came back into rotation.",
            "# TYPE sched_worker_readmissions_total counter"]
    out += [f'sched_worker_readmissions_total{{worker="{k}"}} {v}' for k, v in sorted(s.worker_readmissions.items())]
    out += ["# HELP sched_batch_retries_total Failed batches whose requests went back to the queue.",
            "# TYPE sched_batch_retries_total counter", f"sched_batch_retries_total {s.batch_retries}",
            "# HELP sched_request_retries_total Requests put back in the queue after their worker failed.",
            "# TYPE sched_request_retries_total counter", f"sched_request_retries_total {s.request_retries}",
            "# HELP sched_shed_total Requests refused at admission (503): the queue ahead would make them late.",
            "# TYPE sched_shed_total counter", f"sched_shed_total {s.shed}",
            "# HELP sched_unexpected_errors_total Requests that hit an exception no handler expected (answered 500).",
            "# TYPE sched_unexpected_errors_total counter", f"sched_unexpected_errors_total {s.unexpected_errors}",
            "# HELP sched_reply_margin_seconds Reply margin planned with, when measured online (else 0).",
            "# TYPE sched_reply_margin_seconds gauge", f"sched_reply_margin_seconds {s.reply_margin_ms / 1000:.6f}",
            "# HELP sched_auth_failures_total Requests refused (401 / UNAUTHENTICATED) for a missing or wrong token.",
            "# TYPE sched_auth_failures_total counter"]
    out += [f'sched_auth_failures_total{{protocol="{p}",reason="{r}"}} {s.auth_failures[(p, r)]}'
            for p in ("http", "grpc") for r in ("missing", "invalid")]
    from .limits import REFUSALS  # (protocol, reason) pairs, each published even at 0

    out += ["# HELP sched_limit_refusals_total Requests and connections refused by the front-end limits "
            "(connection cap, read timeouts, size limits, gRPC calls in progress), by protocol and reason.",
            "# TYPE sched_limit_refusals_total counter"]
    out += [f'sched_limit_refusals_total{{protocol="{p}",reason="{r}"}} {s.limit_refusals[(p, r)]}'
            for p, r in (*REFUSALS, *sorted(k for k in s.limit_refusals if k not in REFUSALS))]
    guard = s.http_connections
    if guard is not None:
        out += ["# HELP sched_http_connections HTTP connections open now (the cap is --max-connections).",
                "# TYPE sched_http_connections gauge", f"sched_http_connections {guard.open}",
                "# HELP sched_http_connections_refused_total HTTP connections refused with 503: over the cap.",
                "# TYPE sched_http_connections_refused_total counter",
                f"sched_http_connections_refused_total {guard.refused}",
                "# HELP sched_http_connections_closed_total HTTP connections closed for a head or body that came "
                "too slowly (408) or a head too large (431).",
                "# TYPE sched_http_connections_closed_total counter",
                f"sched_http_connections_closed_total {guard.closed}"]
    out += fleet_lines(s)
    for name, h, help_ in (("sched_batch_size", s.batch_size, "Rows per dispatched batch."),
                           ("sched_decision_seconds", s.decision_seconds, "Time the policy took per decision."),
                           ("sched_queue_wait_seconds", s.queue_wait_seconds, "Arrival to dispatch."),
                           ("sched_request_latency_seconds", s.request_latency_seconds, "Arrival to answer."),
                           ("sched_reply_seconds", s.reply_seconds,
                            "The engine's answer to the front end's encoded response (the reply path the sidecar sees).")):
        out += [f"# HELP {name} {help_}", f"# TYPE {name} histogram"] + h.lines(name)
    return "\n".join(out) + "\n"


def fleet_lines(s: Stats) -> list[str]:
    """The fleet's and the autoscaler's metrics (only when the scheduler manages its workers)."""
    if s.workers_target is None:
        return []
    out = ["# HELP sched_workers_target Workers the scheduler wants (the autoscaler's target, or the fixed count).",
           "# TYPE sched_workers_target gauge", f"sched_workers_target {s.workers_target}",
           "# HELP sched_workers Workers the scheduler manages that are in its pool (admitted, not draining).",
           "# TYPE sched_workers gauge", f"sched_workers {s.workers_actual}",
           "# HELP sched_workers_draining Workers finishing their calls in flight before they stop.",
           "# TYPE sched_workers_draining gauge", f"sched_workers_draining {s.workers_draining}",
           "# HELP sched_worker_admissions_total Workers admitted to the pool after readiness and warm-up.",
           "# TYPE sched_worker_admissions_total counter", f"sched_worker_admissions_total {s.worker_admissions}",
           "# HELP sched_workers_lost_total Workers dropped because their process or actor died or moved.",
           "# TYPE sched_workers_lost_total counter", f"sched_workers_lost_total {s.workers_lost}",
           "# HELP sched_worker_demand_ratio Last second's requests on the most accurate subnet over the pool's "
           "capacity (may exceed 1).",
           "# TYPE sched_worker_demand_ratio gauge", f"sched_worker_demand_ratio {s.worker_demand:.4f}",
           "# HELP sched_scaling_decisions_total Changes of the target worker count, by direction and reason.",
           "# TYPE sched_scaling_decisions_total counter"]
    out += [f'sched_scaling_decisions_total{{direction="{d}",reason="{r}"}} {v}'
            for (d, r), v in sorted(s.scaling_decisions.items())]
    return out
