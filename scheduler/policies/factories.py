"""How each policy is deployed by ``superserve serve``: which models its Tritons load, which worker class
talks to them, what is set up before the first request (INFaaS exports its variants and times a load;
the cascade loads its gear plan), and the policy object itself. Start-up code (files, Triton calls);
the policies stay pure. The composition root (sidecar/server.py) asks ``factory_for(name)`` and has no policy
branches of its own; a new policy with its own set-up adds a factory here."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np

from .. import paths
from ..core.gears import GearPlan
from ..core.profile import Profile, ProfileError
from ..sidecar.triton_launcher import TritonConfig
from ..sidecar.triton_worker import TritonWorker, Worker
from . import PolicyName, make_policy
from .base import Policy

log = logging.getLogger(__name__)
MODEL = "supernet"


@dataclass(frozen=True)
class PolicyOptions:
    """What the command line says about the policy (ServeConfig's fields of the same names)."""
    name: str = "slackfit"
    subnet: str | None = None
    plan: str | None = None
    load_ms: float = 5000.0
    memory_budget: int = 4
    variant_repository: str | None = None
    models: tuple[str, ...] = (MODEL,)
    """The supernet models served (``serve --models``); the first is the workers' own and the default."""
    slackfit_buckets: int = 1
    """SlackFit's latency buckets: 1 searches the whole slack; 16 is the paper's rule (slackfit.py)."""
    slackfit_overflow: str = "serve"
    """SlackFit's head that fits only the likely latency: ``serve`` it best effort or ``drop`` it (slackfit.py)."""


class PolicyFactory:
    """The supernet deployment (slackfit, fixed, clipper): Tritons load the one supernet model."""

    def __init__(self, opts: PolicyOptions):
        self.opts = opts

    async def prepare(self) -> None:
        """Set-up before any Triton starts."""

    def triton_config(self, cfg: TritonConfig) -> TritonConfig:
        # only the served supernets: the repository's baseline models are for benchmarks
        return cfg if cfg.models else replace(cfg, models=self.opts.models)

    def worker(self, url: str, control_headers: dict | None, http_address: str | None = None) -> Worker:
        """The worker at gRPC ``url``; with ``http_address``, batch calls go over HTTP (sidecar/triton_http.py)."""
        if http_address:
            from ..sidecar.triton_http import TritonHttpWorker

            return TritonHttpWorker(url, http_address, self.opts.models[0])
        return TritonWorker(url, self.opts.models[0])

    def not_ready(self, url: str) -> str:
        return f"Triton worker {url} is not ready with model {self.opts.models[0]!r}"

    async def warm(self, workers: list[Worker], profile: Profile) -> None:
        """Set-up once the workers are ready."""

    def surface_model(self, profile: Profile) -> str:
        """The Triton model whose metadata and config the front ends serve under the first served model's name."""
        return self.opts.models[0]

    def policy(self, profile: Profile, model: str = MODEL) -> Policy:
        """The policy instance of served model ``model`` (each model has its own)."""
        p = make_policy(self.opts.name, subnet=self.subnet_for(model), n_buckets=self.opts.slackfit_buckets,
                        overflow=self.opts.slackfit_overflow)
        p.check(profile)
        return p

    def subnet_for(self, model: str) -> str | None:
        """Policy fixed's subnet of ``model``: ``--subnet S`` (the first served model's) or
        ``--subnet supernet=S1,vit=S2`` (one per model)."""
        s = self.opts.subnet
        if s and "=" in s:
            return dict(part.split("=", 1) for part in s.split(",")).get(model)
        return s if model == self.opts.models[0] else None

    def warmup(self, profile: Profile, timeout_s: float,
               models: dict | None = None) -> Callable[[Worker], Awaitable] | None:
        """The small inference sent to a worker before it rejoins the rotation (sidecar/worker_pool.py): one row of
        the input shape of each model's family, on its smallest subnet. ``models``: {name: (profile, input
        dims)} when several are served (each call names its model); None: the one model, 28x28 grey."""
        if not models:
            smallest = profile.subnets[0].name
            return lambda w: w.infer(np.zeros((1, 1, 28, 28), np.float32), smallest, timeout_s)
        calls = [(name, prof.subnets[0].name, np.zeros((1, *dims), np.float32))
                 for name, (prof, dims) in models.items()]

        async def warm(w: Worker):
            out = None
            for name, smallest, x in calls:
                out = await w.infer(x, smallest, timeout_s, model=name)  # type: ignore[call-arg]
            return out
        return warm


class CascadeFactory(PolicyFactory):
    """The cascade policy: the supernet, and a gear plan made for these weights."""

    def policy(self, profile: Profile, model: str = MODEL) -> Policy:
        """The model's gear plan: ``--plan`` (the first served model's), else plans/<hardware>.json for the
        built-in supernet and plans/<model>/<hardware>.json for another model."""
        folder = paths.repo_root() / "plans" / ("" if model == MODEL else model)
        own = self.opts.plan if model == self.opts.models[0] else None
        path = Path(own) if own else folder / f"{profile.hardware}.json"
        plan = GearPlan.load(path)
        if plan.supernet and plan.supernet != profile.supernet:
            raise ProfileError(f"gear plan {path} was made for weights {plan.supernet[:12]}, not "
                               f"{profile.supernet[:12]}; re-run 'superserve plan'")
        p = make_policy(self.opts.name, plan=plan)
        p.check(profile)
        return p


class InfaasFactory(PolicyFactory):
    """INFaaS: one Triton model per subnet (exported variants), loaded on demand with explicit model control;
    the expected load time is measured by loading the largest variant on every worker before serving."""

    def __init__(self, opts: PolicyOptions):
        super().__init__(opts)
        self.variants: dict[str, str] = {}
        self.root = Path(opts.variant_repository) if opts.variant_repository else None
        self.load_ms = opts.load_ms

    async def prepare(self) -> None:
        from ..offline.variants import build_variant_repository, default_variant_root

        self.root = self.root or default_variant_root()
        self.variants = await asyncio.to_thread(build_variant_repository, self.root)

    def surface_model(self, profile: Profile) -> str:
        return self.variants[profile.subnets[-1].name]  # clients see the one model name, whichever variant serves

    def triton_config(self, cfg: TritonConfig) -> TritonConfig:
        return replace(cfg, model_repository=str(self.root), explicit=True, models=())

    def worker(self, url: str, control_headers: dict | None, http_address: str | None = None) -> Worker:
        from ..offline.variants import VariantWorker

        if http_address:
            raise ValueError("policy infaas calls its variant models over gRPC only (no --worker-transport http)")
        return VariantWorker(url, self.variants, self.opts.memory_budget, control_headers=control_headers)

    def not_ready(self, url: str) -> str:
        return f"Triton worker {url} is not ready"

    async def warm(self, workers: list, profile: Profile) -> None:
        largest = profile.subnets[-1].name
        for w in workers:
            await w.warm([largest])
        measured = [s for w in workers for s in w.load_seconds]
        self.load_ms = max(measured) * 1000 if measured else self.load_ms
        log.info("infaas: variant load takes %.0f ms here; memory budget %d variants", self.load_ms,
                 self.opts.memory_budget)

    def policy(self, profile: Profile, model: str = MODEL) -> Policy:
        p = make_policy(self.opts.name, load_ms=self.load_ms)
        p.check(profile)
        return p

    def warmup(self, profile: Profile, timeout_s: float, models: dict | None = None):
        return None  # a restarted variant Triton loads on demand; a warm-up would load a model


FACTORIES: dict[str, type[PolicyFactory]] = {PolicyName.CASCADE.value: CascadeFactory,
                                             PolicyName.INFAAS.value: InfaasFactory}


def factory_for(opts: PolicyOptions) -> PolicyFactory:
    """The factory of ``opts.name`` (the supernet deployment unless the policy has its own)."""
    try:
        PolicyName(opts.name)
    except ValueError:
        raise ValueError(f"unknown policy {opts.name!r}; choose from {[p.value for p in PolicyName]}") from None
    return FACTORIES.get(opts.name, PolicyFactory)(opts)
