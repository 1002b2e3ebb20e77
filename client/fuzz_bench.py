"""``superserve bench-fuzz``: fuzzed requests against a fresh ``superserve serve`` with default options on loopback
(issue 12): half over HTTP, half over gRPC, drawn from a seed by the generators the test suite uses
(client/fuzz_cases.py), one at a time on one keep-alive connection per protocol, with a good request of each
protocol every ``--good-every`` cases that must be served.

Judged on: the answer to every case, counted per protocol and status code; every 5xx (HTTP) and UNKNOWN or
INTERNAL (gRPC) listed with its case; the server healthy afterwards (ready, and a good request served on each
protocol); and the sidecar's /metrics accounting for exactly what was sent (``sched_requests_total`` over all
outcomes, plus the front ends' refusals, ``sched_limit_refusals_total`` and ``sched_auth_failures_total``).
Writes ``results/<name>.json`` with the command, commit and hardware."""
from __future__ import annotations

import json
import os
import re
import shlex
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from superserve.client import fuzz_cases, results
from superserve.scheduler import paths
from superserve.scheduler.provenance import command_line
from superserve.scheduler.ports import free_ports
from superserve.scheduler.sidecar.server import find_profile, serve_subprocess

ACCOUNTED = ("sched_requests_total{", "sched_limit_refusals_total{", "sched_auth_failures_total{")
"""/metrics counters whose sum over labels must grow by exactly the number of requests sent."""
HTTP_EXPECTED = {200, 400, 404, 413, 504}
"""HTTP answers a fuzzed request may get (504: a valid request whose fuzzed slo_ms is too tight to serve)."""
GRPC_EXPECTED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}


@dataclass(frozen=True)
class FuzzConfig:
    name: str = "fuzz"
    cases: int = 10_000
    """Fuzzed requests in all; half HTTP (the odd one too), half gRPC."""
    seed: int = 0
    good_every: int = 100
    """A good request on each protocol after every this many fuzzed ones."""
    serve_args: tuple[str, ...] = ()
    out_dir: Path = field(default_factory=lambda: paths.repo_root() / "results")

    def __post_init__(self):
        if self.cases < 2 or self.good_every < 1:
            raise ValueError(f"cases must be >= 2 and good_every >= 1, got {self.cases}, {self.good_every}")


def _case_text(body: bytes, headers: dict | None = None, limit: int = 600) -> dict:
    out = {"bytes": len(body), "body": body[:limit].decode("utf-8", errors="backslashreplace")
           + ("..." if len(body) > limit else "")}
    if headers:
        out["headers"] = headers
    return out


def accounted(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(ACCOUNTED))


class Fuzzer:
    """Sends the cases and keeps the tally."""

    def __init__(self, http_url: str, grpc_url: str, cfg: FuzzConfig):
        self.cfg, self.http = cfg, fuzz_cases.Http(http_url)
        self.channel = grpc.insecure_channel(grpc_url, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.infer = self.channel.unary_unary(fuzz_cases.GRPC_INFER)
        self.codes = {"http": Counter(), "grpc": Counter()}
        self.listed: list[dict] = []
        """Every 5xx / UNKNOWN / INTERNAL answer with its case."""
        self.good = Counter()
        self.sent = 0
        self.t0 = time.monotonic()
        self.good_body = json.dumps(fuzz_cases.good_body()).encode()
        self.good_grpc = fuzz_cases.good_grpc_request()

    def http_case(self, case: tuple[bytes, dict]) -> None:
        body, headers = case
        status, text = self.http.post(body, headers)
        self._tally("http", str(status), text.decode("utf-8", errors="replace"),
                    _case_text(body, headers), listed=status >= 500 or status not in HTTP_EXPECTED)

    def grpc_case(self, data: bytes) -> None:
        try:
            self.infer(data, timeout=30)
            code, details = "OK", ""
        except grpc.RpcError as e:
            code, details = e.code().name, e.details() or ""
        self._tally("grpc", code, details, {"bytes": len(data), "hex": data[:400].hex()},
                    listed=code not in GRPC_EXPECTED)

    def _tally(self, proto: str, code: str, message: str, case: dict, listed: bool) -> None:
        self.sent += 1
        self.codes[proto][code] += 1
        if listed:
            self.listed.append({"protocol": proto, "code": code, "message": message[:300], "case": case})
        if self.sent % self.cfg.good_every == 0:
            self.good_requests()
        if self.sent % 500 == 0:
            print(f"  {self.sent:6d}/{self.cfg.cases} fuzzed  {self.sent / (time.monotonic() - self.t0):4.0f}/s  "
                  f"http {dict(sorted(self.codes['http'].items()))}  grpc {dict(sorted(self.codes['grpc'].items()))}"
                  f"  good served {self.good['ok']}/{sum(self.good.values())}", flush=True)

    def good_requests(self) -> None:
        status, text = self.http.post(self.good_body)
        self.good["ok" if status == 200 else f"http {status}"] += 1
        try:
            self.infer(self.good_grpc, timeout=30)
            self.good["ok"] += 1
        except grpc.RpcError as e:
            self.good[f"grpc {e.code().name}"] += 1

    def close(self) -> None:
        self.http.close()
        self.channel.close()


def run(cfg: FuzzConfig, command: str) -> tuple[Path, bool]:
    d = Path(tempfile.mkdtemp(prefix="superserve-fuzz-"))  # logs, kept for inspection
    http, grpc_port, th, tg, tm = free_ports(5)
    args = ["--http-port", str(http), "--grpc-port", str(grpc_port), "--triton-http-port", str(th),
            "--triton-grpc-port", str(tg), "--triton-metrics-port", str(tm), "--profile", str(find_profile(None)),
            "--triton-log-file", str(d / "triton.log"), *cfg.serve_args]
    n_http = (cfg.cases + 1) // 2
    n_grpc = cfg.cases - n_http
    print(f"bench-fuzz: {n_http} HTTP + {n_grpc} gRPC fuzzed requests, seed {cfg.seed}, a good request of each "
          f"protocol every {cfg.good_every}; logs in {d}", flush=True)
    http_url, grpc_url = f"127.0.0.1:{http}", f"127.0.0.1:{grpc_port}"
    with serve_subprocess(args, str(d / "serve.log")) as proc:
        fz = Fuzzer(http_url, grpc_url, cfg)
        before = fuzz_cases.scrape(http_url)
        t0 = time.monotonic()
        fuzz_cases.each(fuzz_cases.http_requests(), n_http, cfg.seed, fz.http_case)
        fuzz_cases.each(fuzz_cases.grpc_requests(), n_grpc, cfg.seed, fz.grpc_case)
        duration = time.monotonic() - t0
        after = fuzz_cases.scrape(http_url)  # before the health checks below, which are requests too
        fuzzed = fz.sent
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=10) as r:
            ready = r.status == 200
        good_before = fz.good["ok"]
        fz.good_requests()
        health = {"ready": ready, "good_http_and_grpc_served_after": fz.good["ok"] - good_before == 2,
                  "serve_running": proc.poll() is None}
        fz.close()
    good_sent = sum(fz.good.values())
    sent_before_checks = fuzzed + good_sent - 2
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))
             if k.startswith(ACCOUNTED) and after.get(k, 0) != before.get(k, 0)}
    counted = accounted(after) - accounted(before)
    unexpected = {"http": {c: n for c, n in fz.codes["http"].items() if int(c) not in HTTP_EXPECTED},
                  "grpc": {c: n for c, n in fz.codes["grpc"].items() if c not in GRPC_EXPECTED}}
    errors_delta = after.get("sched_unexpected_errors_total", 0) - before.get("sched_unexpected_errors_total", 0)
    passed = (not unexpected["http"] and not unexpected["grpc"] and counted == sent_before_checks
              and all(health.values()) and fz.good["ok"] == good_sent and errors_delta == 0)
    result = {**results.header(command), "cores": len(os.sched_getaffinity(0)),
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
              "serve": "superserve serve on free loopback ports with an embedded Triton and default options"
                       + (f", plus {' '.join(cfg.serve_args)}" if cfg.serve_args else ""),
              "passed": passed,
              "requests": {"fuzzed": fuzzed, "http": sum(fz.codes["http"].values()),
                           "grpc": sum(fz.codes["grpc"].values()), "good": good_sent,
                           "good_served": fz.good["ok"], "good_outcomes": dict(fz.good)},
              "duration_s": round(duration, 1),
              "codes": {p: dict(sorted(c.items())) for p, c in fz.codes.items()},
              "unexpected_codes": unexpected,
              "expected_codes": {"http": sorted(HTTP_EXPECTED), "grpc": sorted(GRPC_EXPECTED)},
              "health_after": health,
              "accounting": {"sent": sent_before_checks, "counted_in_metrics": counted,
                             "equal": counted == sent_before_checks, "by_counter": delta,
                             "unexpected_errors": errors_delta},
              "listed_5xx_unknown_internal": fz.listed,
              "listed_by_code": dict(Counter(f"{x['protocol']} {x['code']}: "
                                             + re.sub(r"[\d.]+", "N", x["message"][:70]) for x in fz.listed)),
              "log_bytes": {f.name: f.stat().st_size for f in d.iterdir() if f.is_file()}}
    path = results.write(result, results.named(cfg.name, cfg.out_dir))
    print(f"{fuzzed} fuzzed + {good_sent} good requests in {duration:.0f} s; http {result['codes']['http']}, grpc "
          f"{result['codes']['grpc']}; unexpected codes {unexpected}; /metrics counted {counted:g} of "
          f"{sent_before_checks} sent; healthy after: {all(health.values())}; "
          f"{'PASSED' if passed else 'FAILED'}\nwrote {path}", flush=True)
    return path, passed


def main(args) -> int:
    cfg = FuzzConfig(name=args.name, cases=args.cases, seed=args.seed, good_every=args.good_every,
                     serve_args=tuple(shlex.split(args.serve_args or "")),
                     out_dir=Path(args.out_dir) if args.out_dir else paths.repo_root() / "results")
    _, passed = run(cfg, command_line())
    return 0 if passed else 1
