"""``superserve serve``: the sidecar scheduler (KServe v2 HTTP + gRPC) in front of Triton workers,
starting an embedded Triton unless ``--worker`` URLs are given."""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from aiohttp import web
from google.protobuf import json_format

from ..core.health import HealthConfig
from ..core.lifecycle import ModelSpec
from ..core.profile import Profile, ProfileError
from ..policies.factories import PolicyOptions, factory_for
from .api_grpc import GrpcFrontend, add_to_server
from .api_http import HttpFrontend
from .auth import Auth, AuthConfig, TlsConfig
from .dataplane import ModelSurface
from .drain import Drain
from .engine import Engine, EngineConfig
from .limits import (ConnectionLimits, GrpcLimits, LimitedTCPSite, grpc_server_kwargs, http_refusal_middleware,
                     http_runner_kwargs)
from .served_models import DEFAULT_MODELS, model_files, parse_profiles
from .triton_launcher import TritonConfig, TritonProcess, control_headers

log = logging.getLogger(__name__)
MODEL = "supernet"


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    http_port: int = 8010
    grpc_port: int = 8011
    policy: str = "slackfit"
    subnet: str | None = None
    """The subnet of policy 'fixed' (with several models: ``supernet=S1,vit=S2``)."""
    models: tuple[str, ...] = DEFAULT_MODELS
    """The supernet models served, each under its own name (``serve --models supernet,vit``); the first is the
    default of requests' life cycle and the one Triton workers are probed with."""
    workers: tuple[str, ...] = ()
    """gRPC host:port of running Triton workers; empty: start ``local_workers`` embedded Tritons."""
    resolve_workers: bool = False
    """Expand each worker host name into every address it resolves to (docker compose --scale: one DNS
    name, many Triton containers). Resolved once, at start."""
    local_workers: int = 1
    """Embedded Tritons to start when ``workers`` is empty (see ``local_triton_configs`` for ports)."""
    worker_transport: str = "grpc"
    """How batch calls reach Triton: "grpc" (the generated stub) or "http" (HTTP/1.1 keep-alive, triton_http.py,
    cheaper in CPU for both sides). Probes and metadata use gRPC either way."""
    worker_http: tuple[str, ...] = ()
    """With "http" and running ``workers``: each worker's HTTP host:port, in the order of ``workers``."""
    triton: TritonConfig = field(default_factory=TritonConfig)
    profile: str | None = None
    """Profile path; default profiles/<hardware>.json, else the one committed profile (with a warning). With
    several models: ``MODEL=FILE,...`` (served_models.parse_profiles); a model not named uses its default."""
    latency_stat: str = "mean"
    variant_repository: str | None = None
    """Policy infaas: where the per-subnet variant models are exported (default: a cache folder)."""
    memory_budget: int = 4
    """Policy infaas: variant models loaded at once per worker."""
    load_ms: float = 5000.0
    """Policy infaas: expected time to load a variant (replaced by the warm-up load's measured time)."""
    slackfit_buckets: int = 1
    slackfit_overflow: str = "serve"
    """Policy slackfit: 1 searches every point under the slack; 16 is the paper's bucket rule."""
    plan: str | None = None
    """Policy cascade: the gear plan (default plans/<hardware>.json, made by 'superserve plan')."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    drain_timeout_s: float = 10.0
    """On SIGTERM/SIGINT: how long requests in flight may take to be answered before they get 503."""
    auth: AuthConfig = field(default_factory=AuthConfig)
    insecure_public: bool = False
    """Allow a non-loopback ``host`` with no token (and no client certificates): anyone who reaches it may call."""
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    """Connection caps and read timeouts of the two front ends (limits.py)."""
    tls: TlsConfig = field(default_factory=TlsConfig)
    """Certificate files for HTTPS and gRPC over TLS (auth.py); with a client CA, mutual TLS."""
    cluster: object = None
    """A cluster.ClusterConfig: workers the sidecar starts, watches and scales itself (local processes or Ray
    actors, ``serve --ray`` / ``--autoscale``); None: the fixed workers above."""

    def __post_init__(self):
        if not is_loopback(self.triton.host):
            raise ValueError(f"the embedded Triton must listen on loopback only (its model control and "
                             f"shared-memory APIs are not for clients), got host {self.triton.host!r}")
        if not is_loopback(self.host) and not self.auth.token and not self.tls.client_ca and not self.insecure_public:
            raise ValueError(f"host {self.host!r} is not loopback and no token is set: anyone who reaches it could "
                             "call the scheduler. Set a token (--token-file or SUPERSERVE_TOKEN) or client "
                             "certificates (--tls-client-ca), or pass --insecure-public if the network in front "
                             "of it is trusted")
        if self.drain_timeout_s < 0:
            raise ValueError(f"drain_timeout_s must be >= 0, got {self.drain_timeout_s}")
        if self.local_workers < 1:
            raise ValueError(f"local_workers must be >= 1, got {self.local_workers}")
        if self.worker_transport not in ("grpc", "http"):
            raise ValueError(f"worker_transport must be grpc or http, got {self.worker_transport!r}")
        if self.worker_http and len(self.worker_http) != len(self.workers):
            raise ValueError(f"give one worker HTTP address per worker: {len(self.worker_http)} for "
                             f"{len(self.workers)} workers")
        if self.worker_transport == "http" and self.workers and not self.worker_http:
            raise ValueError("worker transport http with running workers needs each worker's HTTP host:port "
                             "(--worker-http, in the order of --worker)")
        if self.worker_http and self.resolve_workers:
            raise ValueError("--worker-http cannot be paired with --resolve-workers (addresses found at start)")
        if self.cluster is not None and (self.workers or self.policy == "infaas" or self.worker_transport != "grpc"):
            raise ValueError("a cluster of managed workers (--ray, --autoscale) takes no --worker URLs, serves "
                             "the supernet models (not policy infaas) and calls its workers over gRPC")
        if not self.models:
            raise ValueError("serve at least one model")
        if len(self.models) > 1 and self.policy == "infaas":
            raise ValueError("several models (--models) are served by the supernet deployment: not with policy "
                             "infaas, whose workers load one variant model per subnet of a single model")
        if self.workers and self.local_workers != 1:
            raise ValueError(f"give running workers ({len(self.workers)} URLs) or a number of local workers "
                             f"({self.local_workers}), not both")


def is_loopback(host: str) -> bool:
    """``host`` is a loopback address (127.0.0.0/8, ::1) or the name localhost."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def local_triton_configs(base: TritonConfig, n: int) -> list[TritonConfig]:
    """Ports of ``n`` local Tritons: worker i takes the base ports + 3*i (8000-8002, 8003-8005, ... by
    default); a base port of 0 means free ports chosen by the OS, fresh for every worker."""
    ports = [base.http_port, base.grpc_port, base.metrics_port]
    out = []
    for i in range(n):
        http, grpc, metrics = (p + 3 * i if p else 0 for p in ports)  # TritonProcess resolves 0
        log_file = base.log_file if n == 1 or not base.log_file else f"{base.log_file}.{i}"
        out.append(replace(base, http_port=http, grpc_port=grpc, metrics_port=metrics, log_file=log_file))
    used = [p for c in out for p in (c.http_port, c.grpc_port, c.metrics_port) if p]
    if len(set(used)) != len(used):
        raise ValueError(f"the Triton ports of {n} local workers overlap ({used}); give three consecutive ports "
                         "(the default 8000-8002) or 0 for free ones")
    return out


def expand_workers(urls, resolve=None) -> list[str]:
    """``host:port`` -> one ``ip:port`` per address ``host`` resolves to (sorted, deduplicated)."""
    import socket

    def default(host: str, port: int) -> list[str]:
        try:
            return [a[4][0] for a in socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)]
        except socket.gaierror as e:
            raise ValueError(f"worker {host}:{port}: cannot resolve {host!r} ({e})") from None

    resolve = resolve or default
    out = []
    for url in urls:
        host, _, port = url.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"worker {url!r} must be host:port")
        out += [f"{ip}:{port}" for ip in sorted(set(resolve(host, int(port))))]
    return list(dict.fromkeys(out))


def find_profile(explicit: str | None, measure: bool = True) -> Path:
    """The profile to plan with (local_profile.py: this machine's, measured quickly if none matches)."""
    from .local_profile import find_profile as find

    return find(explicit, measure)


def _int_lists(d):
    """json_format renders int64 as strings; Triton's HTTP API renders dims and shapes as numbers."""
    if isinstance(d, dict):
        return {k: ([int(x) for x in v] if k in ("dims", "shape") and isinstance(v, list) else _int_lists(v))
                for k, v in d.items()}
    if isinstance(d, list):
        return [_int_lists(x) for x in d]
    return d


class Sidecar:
    """The running scheduler: engine, front ends and (maybe) an embedded Triton."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.tritons: list[TritonProcess] = []
        self.cluster = None
        """cluster.ClusterWorkers when the sidecar manages its workers (cfg.cluster)."""
        self.engine: Engine | None = None
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None
        self.http_site: LimitedTCPSite | None = None
        self.drain = Drain(on_refused=lambda e: self.engine.record_rejection(e) if self.engine else None)
        self.auth = Auth(cfg.auth, on_refused=self._count_auth_failure)

    def _count_auth_failure(self, protocol: str, reason: str) -> None:
        if self.engine:
            self.engine.stats.auth_failures[(protocol, reason)] += 1

    async def start(self) -> "Sidecar":
        cfg = self.cfg
        remote = cfg.workers or (cfg.cluster is not None and cfg.cluster.ray is not None)
        files = {name: model_files(name) for name in cfg.models}
        explicit = parse_profiles(cfg.profile, cfg.models)
        profiles = {name: Profile.load(f.profile_path(explicit.get(name), measure=not remote),
                                       expect_supernet=f.sha256, stat=cfg.latency_stat) for name, f in files.items()}
        profile = profiles[cfg.models[0]]
        several = len(cfg.models) > 1
        factory = factory_for(PolicyOptions(cfg.policy, cfg.subnet, cfg.plan, cfg.load_ms, cfg.memory_budget,
                                            cfg.variant_repository, cfg.models, cfg.slackfit_buckets,
                                            cfg.slackfit_overflow))
        if cfg.subnet:
            for name in cfg.models:
                pinned = factory.subnet_for(name)
                if pinned and profiles[name].get(pinned) is None:
                    raise ProfileError(f"--subnet {pinned!r} is not in the profile of model {name!r}")
        await factory.prepare()
        triton_cfg = factory.triton_config(cfg.triton)
        urls = expand_workers(cfg.workers) if cfg.resolve_workers else list(cfg.workers)
        if cfg.resolve_workers:
            log.info("workers %s resolve to %s", list(cfg.workers), urls)
        http = list(cfg.worker_http) if cfg.worker_http else [None] * len(urls)
        warmup = factory.warmup(profile, cfg.health.warmup_timeout_s,
                                {n: (profiles[n], files[n].input.dims) for n in cfg.models}
                                if several or files[cfg.models[0]].input.dims != (1, 28, 28) else None)
        if cfg.cluster is not None:  # workers the sidecar starts, watches and scales (cluster.py)
            from .cluster import ClusterWorkers

            self.cluster = ClusterWorkers(cfg.cluster, triton_cfg, warmup, cfg.models)
            workers = await self.cluster.start()
            urls = [w.url for w in workers]
        elif not urls:
            await self._start_tritons(local_triton_configs(triton_cfg, cfg.local_workers))
            urls = [t.cfg.grpc_url for t in self.tritons]
            http = [t.cfg.http_url if cfg.worker_transport == "http" else None for t in self.tritons]
        if self.cluster is None:
            keys = ([t.control_headers("grpc") for t in self.tritons] if self.tritons
                    else [control_headers(cfg.triton.control_key, "grpc") if cfg.triton.control_key else None] * len(urls))
            workers = [factory.worker(u, k, h) for u, k, h in zip(urls, keys, http)]
        for w in workers:
            if not await w.ready():
                raise RuntimeError(factory.not_ready(w.url))
        await factory.warm(workers, profile)
        specs = [ModelSpec(n, profiles[n], factory.policy(profiles[n], n)) for n in cfg.models]
        policy = specs[0].policy
        surfaces = []
        for i, name in enumerate(cfg.models):
            triton_model = factory.surface_model(profile) if i == 0 else name
            meta_pb = await workers[0].client.get_model_metadata(triton_model)
            config_pb = await workers[0].client.get_model_config(triton_model)
            meta_pb.name = name  # clients see the served model's name, whichever Triton model serves it
            config_pb.config.name = name
            meta = json_format.MessageToDict(meta_pb, preserving_proto_field_name=True)
            surfaces.append(ModelSurface(
                name, _int_lists(meta),
                _int_lists(json_format.MessageToDict(config_pb.config, preserving_proto_field_name=True)),
                max_rows=profiles[name].max_batch, input=files[name].input, metadata_pb=meta_pb, config_pb=config_pb))
        self.engine = Engine(cfg.engine, None, None, workers, health=cfg.health, models=specs)
        self.engine.pool.start(warmup)
        self.engine.start_lag_probe()
        if self.cluster is not None:
            self.cluster.attach(self.engine)
        app = HttpFrontend(self.engine, surfaces).app
        refusals = self.engine.stats.limit_refusals
        app.middlewares.append(http_refusal_middleware(refusals))  # first: counts what aiohttp refuses (413)
        if self.auth.enabled:  # outside the drain: a refused caller is never counted in flight
            app.middlewares.append(self.auth.http_middleware())
        app.middlewares.append(self.drain.http_middleware())  # last: closest to the handlers
        self._runner = web.AppRunner(app, access_log=None, **http_runner_kwargs(cfg.limits))
        await self._runner.setup()
        self.http_site = LimitedTCPSite(self._runner, cfg.host, cfg.http_port, limits=cfg.limits, refusals=refusals,
                                        ssl_context=cfg.tls.http_context())
        await self.http_site.start()
        self.engine.stats.http_connections = self.http_site.guard
        interceptors = [GrpcLimits(cfg.limits, refusals)]  # first: the cap applies before anything else runs
        interceptors += [self.auth.grpc_interceptor()] if self.auth.enabled else []
        self._grpc = grpc.aio.server(interceptors=[*interceptors, self.drain.grpc_interceptor()],
                                     **grpc_server_kwargs(cfg.limits, [("grpc.max_receive_message_length", 64 << 20),
                                                                       ("grpc.max_send_message_length", 64 << 20)]))
        add_to_server(self._grpc, GrpcFrontend(self.engine, surfaces))
        creds, address = cfg.tls.grpc_credentials(), f"{cfg.host}:{cfg.grpc_port}"
        if (self._grpc.add_secure_port(address, creds) if creds else self._grpc.add_insecure_port(address)) == 0:
            raise OSError(f"cannot bind gRPC to {cfg.host}:{cfg.grpc_port}")
        await self._grpc.start()
        gc.freeze()  # start-up objects (profile, stubs, metadata) are never scanned again by the collector
        log.info("scheduler ready: policy %s, models %s, profile %s (%d subnets), workers %s", policy.name,
                 ", ".join(cfg.models), profile.hardware, len(profile.subnets), urls)
        return self

    async def _start_tritons(self, configs: list[TritonConfig]) -> None:
        """Start the local Tritons side by side; if one fails, stop the others and raise."""
        procs = [TritonProcess(c) for c in configs]
        results = await asyncio.gather(*(asyncio.to_thread(p.start) for p in procs), return_exceptions=True)
        self.tritons = [p for p, r in zip(procs, results) if not isinstance(r, BaseException)]
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]

    async def stop(self) -> None:
        """Drain (stop admitting, answer what is in flight), then close the ports, the engine and Triton."""
        if self.engine and (self._runner or self._grpc):
            await self.drain.drain(self.cfg.drain_timeout_s)
        if self._grpc:
            await self._grpc.stop(grace=1)
        if self._runner:
            await self._runner.cleanup()
        if self.cluster:
            await self.cluster.stop_watching()
        if self.engine:
            await self.engine.close()
        if self.cluster:
            await self.cluster.close()
        if self.tritons:
            await asyncio.gather(*(asyncio.to_thread(t.stop) for t in self.tritons))


async def serve_forever(cfg: ServeConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    sidecar = Sidecar(cfg)

    def on_signal() -> None:  # the first signal drains; a second one cuts the drain short
        if stop.is_set():
            sidecar.drain.hurry()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await sidecar.start()
        scheme = "https" if cfg.tls.enabled else "http"
        print(f"SuperServe ready  HTTP {scheme}://{cfg.host}:{cfg.http_port}  gRPC {cfg.host}:{cfg.grpc_port}"
              f"{' (TLS)' if cfg.tls.enabled else ''}  metrics {scheme}://{cfg.host}:{cfg.http_port}/metrics  "
              f"policy {cfg.policy}  token {'required' if cfg.auth.token else 'off'}"
              + "".join(f"  Triton {t.cfg.grpc_url} (log {t.log_path})" for t in sidecar.tritons)
              + (f"  workers {' '.join(cfg.workers)}" if cfg.workers else "")
              + (f"  {sidecar.cluster.fleet.backend.name} workers "
                 + " ".join(w.url for w in sidecar.cluster.fleet.workers) if sidecar.cluster else ""), flush=True)
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await sidecar.stop()
    return 0


@contextlib.contextmanager
def serve_subprocess(args: list[str], log_path: str, python: str | None = None):
    """Run ``superserve serve <args>`` as its own process group, wait for its ready line, and stop
    it with SIGINT (SIGKILL after 20 s) on exit. Yields the process; raises with the log's tail if
    it does not come up. Used by the demo, benchmarks and tests: the real CLI, not an in-process copy.
    ``python``: another interpreter (e.g. an older checkout's venv, for before/after benchmarks)."""
    import os
    import subprocess
    import sys

    from .triton_launcher import _spawn

    with open(log_path, "w") as log_file:  # killed with its launcher: a killed bench leaves no sidecar behind
        proc = _spawn([python or sys.executable, "-m", "superserve.scheduler.cli", "serve", *args],
                      stdout=subprocess.PIPE, stderr=log_file, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("SuperServe ready"):
            proc.wait(timeout=10)
            raise RuntimeError(f"superserve serve did not start (exit {proc.returncode}); log {log_path}:\n"
                               + Path(log_path).read_text()[-3000:])
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
