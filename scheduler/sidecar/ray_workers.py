"""Triton workers as Ray actors (``superserve serve --ray ADDRESS|auto``; the optional extra
``superserve-triton[ray]``).

Each worker is one actor, ``TritonActor``: it starts the wheel's ``tritonserver`` on its node with the project's
repository (only the served supernet models, ``serve --models``; model control off, the restricted APIs locked by a
fresh key), bound to the node's address on free ports, and reports where it serves. It asks Ray for ``worker_cpus``
CPUs, or one GPU (``worker_gpus``), in which case every model's instance group runs on that GPU (``KIND_GPU``; Ray
sets ``CUDA_VISIBLE_DEVICES``). Actors are spread over the nodes and restarted by Ray without limit when their
process or node dies (``max_restarts=-1``): the restarted actor starts a new Triton, on new ports, with a new
incarnation, and the fleet (fleet.py) drops the old address and admits the new one. A Triton whose actor died is
killed by its guard (orphan_guard.py). The data path does not go through Ray: the sidecar calls each Triton over
gRPC, as it does a local one.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.exceptions import RayError

from .. import paths
from . import orphan_guard
from .local_workers import Endpoint
from .triton_launcher import TritonConfig, TritonProcess

log = logging.getLogger(__name__)
NAMESPACE = "superserve"


@dataclass(frozen=True)
class RayWorkersConfig:
    address: str = "auto"
    """Ray's address: ``auto`` (the cluster this node belongs to), ``HOST:PORT``, or ``ray://HOST:10001``."""
    worker_cpus: float = 1.0
    """CPUs each worker asks Ray for (the supernet uses one intra-op thread per instance)."""
    worker_gpus: float = 0.0
    """GPUs each worker asks Ray for: 0 (CPU) or 1 (the supernet on that GPU)."""
    models: tuple[str, ...] = ("supernet",)
    """The models each worker's Triton loads (``serve --models``; the sidecar sets them)."""
    instances: int | None = None
    """Supernet instances per worker's Triton (core/instance_count.py; None: the committed config's)."""

    def __post_init__(self):
        if not self.models:
            raise ValueError("a Ray worker must load at least one model")
        if not self.address:
            raise ValueError("--ray needs an address: auto, HOST:PORT or ray://HOST:PORT")
        if self.worker_cpus < 0 or self.worker_gpus not in (0, 1) or (self.worker_cpus == 0 and not self.worker_gpus):
            raise ValueError(f"a Ray worker needs worker_cpus > 0 or worker_gpus = 1 (worker_gpus 0 or 1), got "
                             f"{self.worker_cpus}, {self.worker_gpus}")


def gpu_repository(source: Path, models: str | tuple[str, ...]) -> Path:
    """A temporary repository holding ``models`` with their instance groups on the GPU (the caller removes
    it)."""
    models = (models,) if isinstance(models, str) else models
    texts = {m: (source / m / "config.pbtxt").read_text() for m in models}
    for m, text in texts.items():  # checked before anything is written
        if "KIND_CPU" not in text:
            raise ValueError(f"{source / m / 'config.pbtxt'} has no KIND_CPU instance group to move to the GPU")
    root = Path(tempfile.mkdtemp(prefix="superserve-gpu-repo-"))
    for m, text in texts.items():
        (root / m).mkdir()
        (root / m / "config.pbtxt").write_text(text.replace("KIND_CPU", "KIND_GPU"))
        for item in (source / m).iterdir():
            if item.name != "config.pbtxt":
                (root / m / item.name).symlink_to(item.resolve(), target_is_directory=item.is_dir())
    return root


class TritonActor:
    """One Triton worker on the node Ray placed this actor on (made remote by ``actor_class``)."""

    def __init__(self, models: tuple[str, ...] = ("supernet",), instances: int | None = None):
        models = (models,) if isinstance(models, str) else tuple(models)
        self.repo = gpu_repository(paths.model_repository(), models) if ray.get_gpu_ids() else None
        host = ray.util.get_node_ip_address()
        repo = str(self.repo) if self.repo else None
        self.triton = TritonProcess(TritonConfig(host=host, http_port=0, grpc_port=0, metrics_port=0,
                                                 models=models, model_repository=repo, instances=instances))
        self.triton.start()
        self.guard = orphan_guard.start(self.triton.proc.pid)
        self.incarnation = uuid.uuid4().hex[:12]

    def info(self) -> dict:
        return {"url": self.triton.cfg.grpc_url, "incarnation": self.incarnation, "pid": os.getpid(),
                "triton_pid": self.triton.proc.pid, "node_id": ray.get_runtime_context().get_node_id(),
                "gpus": [str(g) for g in ray.get_gpu_ids()], "log": str(self.triton.log_path)}

    def stop(self) -> int | None:
        code = self.triton.stop()
        self.guard.wait(timeout=5)
        if self.repo is not None:
            shutil.rmtree(self.repo, ignore_errors=True)
        return code


_remote_class = None


def actor_class():
    global _remote_class
    if _remote_class is None:
        _remote_class = ray.remote(max_restarts=-1, max_task_retries=0)(TritonActor)
    return _remote_class


class RayActors:
    """The fleet's backend on a Ray cluster: one TritonActor per worker."""

    name = "ray"

    def __init__(self, cfg: RayWorkersConfig):
        self.cfg = cfg
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=cfg.address, namespace=NAMESPACE, log_to_driver=False)
        self._actors: list = []
        self._describe: dict[int, str] = {}

    async def start(self):
        opts = dict(num_cpus=self.cfg.worker_cpus, num_gpus=self.cfg.worker_gpus, scheduling_strategy="SPREAD")
        actor = actor_class().options(**opts).remote(self.cfg.models, self.cfg.instances)
        self._actors.append(actor)
        return actor

    async def address(self, actor, timeout_s: float) -> Endpoint | None:
        """Where the actor's Triton serves, or None while the actor starts, restarts or is gone."""
        try:
            info = await asyncio.wait_for(asyncio.wrap_future(actor.info.remote().future()), timeout_s)
        except (asyncio.TimeoutError, RayError):
            return None
        self._describe[id(actor)] = f"Ray actor pid {info['pid']} on node {info['node_id'][:8]} ({info['url']})"
        return Endpoint(info["url"], info["incarnation"])

    async def info(self, actor, timeout_s: float = 5.0) -> dict:
        return await asyncio.wait_for(asyncio.wrap_future(actor.info.remote().future()), timeout_s)

    async def stop(self, actor) -> None:
        """Stop the actor's Triton cleanly (SIGTERM, shared memory removed), then the actor, for good."""
        try:
            await asyncio.wait_for(asyncio.wrap_future(actor.stop.remote().future()), 30)
        except (asyncio.TimeoutError, RayError) as e:
            log.warning("Ray worker did not stop its Triton (%s); killing the actor (its guard stops Triton)",
                        type(e).__name__)
        ray.kill(actor, no_restart=True)
        if actor in self._actors:
            self._actors.remove(actor)

    def describe(self, actor) -> str:
        return self._describe.get(id(actor), "Ray actor (starting)")

    async def close(self) -> None:
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors.clear()
        if self._owns_ray:
            ray.shutdown()
