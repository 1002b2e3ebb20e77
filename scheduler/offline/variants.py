"""INFaaS-style variants: every Pareto subnet exported as its own Triton model, loaded on demand.

``build_variant_repository`` writes a Triton model repository with one model per Pareto subnet,
each holding only that subnet's sliced weights (``superserve.supernet.export.save_static``) and
served by the same ``python_supernet`` backend (config parameter ``exported``), with the
supernet's inputs and outputs. ``VariantWorker`` drives a Triton started with explicit model
control: ``infer`` on a subnet whose model is not loaded first loads it (``load_model``),
unloading the least recently used variant when the memory budget is full. Every load is timed:
this is the cost a separate-models deployment pays where SubNetAct only switches a subnet.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import statistics
import time
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .. import paths
from ..core.errors import InvalidInput, WorkerFailed
from ..sidecar.triton_worker import map_error, split_result, worker_client

log = logging.getLogger(__name__)

MANIFEST = "variants.json"
MANIFEST_FORMAT = 1
EXPORTED_FILE = "subnet.pt"
_VARIANT_DIR = re.compile(r"variant_\d+")


# -- the repository ----------------------------------------------------------------------------
def _supernet_config(model: str = "supernet") -> str:
    return (paths.model_repository() / model / "config.pbtxt").read_text()


def variant_config(model_name: str, subnet: str, model: str = "supernet") -> str:
    """The supernet ``model``'s config.pbtxt (same backend, family, inputs, outputs, batching) for one
    exported subnet."""
    text = _supernet_config(model)
    if f'name: "{model}"' not in text:
        raise ValueError(f"model_repository/{model}/config.pbtxt has no 'name: \"{model}\"' line to rename")
    body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))
    body = body.replace(f'name: "{model}"', f'name: "{model_name}"', 1)
    return (f"# INFaaS variant: subnet {subnet} exported as its own model (superserve.scheduler.offline.variants).\n"
            + body.rstrip("\n")
            + f'\nparameters {{ key: "exported", value: {{ string_value: "1/{EXPORTED_FILE}" }} }}\n')


def _supernet_model(root: Path, weights_path: Path, model: str = "supernet") -> None:
    """The supernet model ``model`` itself beside the variants (for benchmarks comparing both in one server)."""
    from .model_config import with_weights, weights_parameter

    text = _supernet_config(model)
    if weights_path.resolve() != paths.default_weights().resolve():
        text = with_weights(text, weights_parameter(weights_path))
    (root / model / "1").mkdir(parents=True, exist_ok=True)
    (root / model / "config.pbtxt").write_text(text)


def read_manifest(root: str | Path) -> dict | None:
    """The ``variants.json`` of a repository built here, or None if there is none (or it is unreadable)."""
    try:
        m = json.loads((Path(root) / MANIFEST).read_text())
        return m if m.get("format") == MANIFEST_FORMAT and isinstance(m.get("variants"), dict) else None
    except (OSError, ValueError):
        return None


def load_variant_map(root: str | Path) -> dict[str, str]:
    """{subnet name: model name} of a repository built by ``build_variant_repository``."""
    m = read_manifest(root)
    if m is None:
        raise FileNotFoundError(f"{Path(root) / MANIFEST} missing or unreadable; build the repository with "
                                "build_variant_repository")
    return dict(m["variants"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_variant_root(weights_path: str | Path | None = None) -> Path:
    """Where ``superserve serve --policy infaas`` keeps the variants of these weights (a cache
    folder per weights sha256): ``$XDG_CACHE_HOME/superserve/variants-<sha256[:12]>``."""
    sha256 = _sha256(Path(weights_path) if weights_path else paths.default_weights())
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "superserve" / f"variants-{sha256[:12]}"


def _complete(root: Path, manifest: dict | None, sha256: str) -> bool:
    return (manifest is not None and manifest.get("supernet") == sha256
            and all((root / m / "config.pbtxt").is_file() and (root / m / "1" / EXPORTED_FILE).is_file()
                    for m in manifest["variants"].values()))


def build_variant_repository(root: str | Path, weights_path: str | Path | None = None,
                             with_supernet: bool = False, config_model: str = "supernet") -> dict[str, str]:
    """Write (or reuse) a model repository at ``root`` with one model per Pareto subnet of the
    weights (default: the committed ones), named ``variant_00``... in Pareto order, and the mapping
    in ``root/variants.json``. Returns {subnet name: model name}.

    Cached: a repository already built here from weights with the same sha256 is reused as is.
    ``with_supernet`` also writes the ``config_model`` supernet model (SubNetAct) beside the variants.
    ``config_model`` is the model_repository entry whose config (family, inputs, outputs) the variants copy;
    its family must be the weights' (the backend refuses the variants at load otherwise)."""
    root = Path(root)
    weights_path = Path(weights_path) if weights_path else paths.default_weights()
    sha256 = _sha256(weights_path)
    manifest = read_manifest(root)
    if _complete(root, manifest, sha256):
        log.info("variant repository %s: reusing %d variants of supernet %s", root, len(manifest["variants"]),
                 sha256[:12])
        if with_supernet:
            _supernet_model(root, weights_path, config_model)
        return dict(manifest["variants"])

    from superserve.supernet.checkpoint import load_checkpoint  # torch: only when exporting
    from superserve.supernet.export import save_static
    from superserve.supernet.progress import Progress

    model, meta = load_checkpoint(weights_path)  # verifies the sha256 against the metadata
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)  # the manifest, written last, marks a complete build
    stale = set((manifest or {}).get("variants", {}).values())
    for d in root.iterdir():
        if d.is_dir() and (d.name in stale or _VARIANT_DIR.fullmatch(d.name)):
            shutil.rmtree(d)
    pareto = list(meta["pareto"])
    accuracy = {r["name"]: r.get("test_accuracy", r["val_accuracy"]) for r in meta["subnets"]}
    width = max(2, len(str(len(pareto) - 1)))
    variants = {name: f"variant_{i:0{width}d}" for i, name in enumerate(pareto)}
    log.info("variant repository %s: exporting %d Pareto subnets of supernet %s", root, len(pareto), sha256[:12])
    t, bar = time.perf_counter(), Progress(len(pareto), "export variants")
    for name, mname in variants.items():
        (root / mname / "1").mkdir(parents=True)
        save_static(model, model.space.parse(name), root / mname / "1" / EXPORTED_FILE, accuracy[name], meta["sha256"])
        (root / mname / "config.pbtxt").write_text(variant_config(mname, name, config_model))
        bar.update(1, mname)
    if with_supernet:
        _supernet_model(root, weights_path, config_model)
    (root / MANIFEST).write_text(json.dumps({
        "format": MANIFEST_FORMAT, "supernet": sha256, "weights": str(weights_path.resolve()),
        "variants": variants, "accuracy": {n: accuracy[n] for n in pareto}}, indent=1) + "\n")
    log.info("variant repository %s: %d variants exported in %.1f s", root, len(variants), time.perf_counter() - t)
    return variants


# -- the worker --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadEvent:
    subnet: str
    model: str
    seconds: float
    """Wall time of Triton's load_model call (the model is ready when it returns)."""
    warm: bool
    """Loaded ahead of traffic (``warm``) rather than on demand by ``infer``."""
    evicted: tuple[str, ...] = ()
    """Subnets unloaded to make room for this one."""


class VariantWorker:
    """A Triton server (explicit model control) serving each subnet as its own variant model.

    A ``triton_worker.Worker`` like ``triton_worker.TritonWorker`` (``url``, ``client``, ``ready``, ``infer``,
    ``close``), whose ``loaded`` is: the subnets whose models are loaded now,
    at most ``memory_budget`` of them; the least recently used is unloaded to make room."""

    def __init__(self, url: str, variants: dict[str, str], memory_budget: int = 4,
                 load_timeout_s: float = 300.0, unload_timeout_s: float = 60.0,
                 control_headers: dict[str, str] | None = None):
        if not variants:
            raise ValueError("VariantWorker needs at least one variant")
        if memory_budget < 1:
            raise ValueError(f"memory_budget must be >= 1 variant, got {memory_budget}")
        if load_timeout_s <= 0 or unload_timeout_s <= 0:
            raise ValueError(f"load_timeout_s and unload_timeout_s must be > 0, got {load_timeout_s}, "
                             f"{unload_timeout_s}")
        self.url, self.variants, self.memory_budget = url, dict(variants), memory_budget
        self.load_timeout_s, self.unload_timeout_s = load_timeout_s, unload_timeout_s
        self.client = worker_client(url)
        self.control_headers = dict(control_headers) if control_headers else None
        """gRPC metadata unlocking Triton's model-repository API (``TritonProcess.control_headers``)."""
        self.last_call_loaded = False
        """The last ``infer`` to finish loaded its variant first (its latency is mostly the load)."""
        self.load_events: list[LoadEvent] = []
        self.unloads: Counter[str] = Counter()
        self._lru: OrderedDict[str, None] = OrderedDict()  # loaded subnets, least recently used first
        self._busy: Counter[str] = Counter()  # requests in flight per subnet (never unloaded under them)
        self._lock = asyncio.Lock()  # one load or unload at a time
        self._outputs = [grpcclient.InferRequestedOutput("LOGITS"), grpcclient.InferRequestedOutput("INFO")]

    @property
    def loaded(self) -> frozenset[str]:
        return frozenset(self._lru)

    @property
    def load_seconds(self) -> list[float]:
        return [e.seconds for e in self.load_events]

    @property
    def loads(self) -> Counter[str]:
        return Counter(e.subnet for e in self.load_events)

    def load_stats(self, on_demand_only: bool = True) -> dict:
        """Counts and durations of the loads so far (by default those ``infer`` waited for)."""
        events = [e for e in self.load_events if not (on_demand_only and e.warm)]
        secs = [e.seconds for e in events]
        return {"loads": len(secs), "unloads": sum(self.unloads.values()),
                "load_seconds_total": round(sum(secs), 3),
                "load_seconds_mean": round(statistics.fmean(secs), 3) if secs else None,
                "load_seconds_p50": round(statistics.median(secs), 3) if secs else None,
                "load_seconds_max": round(max(secs), 3) if secs else None,
                "events": [asdict(e) for e in events]}

    async def ready(self) -> bool:
        """The server answers (variants may all be unloaded); also learns which variants are loaded.

        Liveness, not Triton's readiness: with its default strict readiness Triton reports "not ready" while
        any model is loading, which took this worker out of rotation for every on-demand variant load."""
        try:
            if not await self.client.is_server_live():
                return False
            await self._sync()
            return True
        except InferenceServerException:
            return False

    async def _sync(self) -> None:
        index = await self.client.get_model_repository_index(headers=self.control_headers, as_json=True)
        ready = {m["name"] for m in index.get("models", []) if m.get("state") == "READY"}
        for subnet, model in self.variants.items():
            if model in ready and subnet not in self._lru:
                self._lru[subnet] = None
            elif model not in ready:
                self._lru.pop(subnet, None)

    async def warm(self, subnets) -> None:
        """Load these subnets ahead of traffic (the last one listed ends most recently used)."""
        for s in subnets:
            self._check(s)
            await self._ensure(s, warm=True)

    def _check(self, subnet: str) -> None:
        if subnet not in self.variants:
            raise InvalidInput(f"parameter 'subnet': {subnet!r} has no variant model on worker {self.url} "
                               f"({len(self.variants)} variants, e.g. {next(iter(self.variants))!r})")

    async def _ensure(self, subnet: str, warm: bool = False) -> None:
        if subnet in self._lru:
            self._lru.move_to_end(subnet)
            return
        async with self._lock:
            if subnet in self._lru:  # loaded by a concurrent call while this one waited
                self._lru.move_to_end(subnet)
                return
            evicted = []
            while len(self._lru) >= self.memory_budget:
                victim = next((s for s in self._lru if not self._busy[s]), None)
                if victim is None:
                    log.warning("worker %s: every loaded variant is busy; loading %s over the budget of %d",
                                self.url, subnet, self.memory_budget)
                    break
                await self._unload(victim)
                evicted.append(victim)
            model = self.variants[subnet]
            t = time.perf_counter()
            try:
                await self.client.load_model(model, headers=self.control_headers,
                                             client_timeout=self.load_timeout_s)
            except InferenceServerException as e:
                raise WorkerFailed(f"worker {self.url}: loading variant {model} ({subnet}) failed: "
                                   f"{e.status()}: {e.message()}") from None
            seconds = time.perf_counter() - t
            self._lru[subnet] = None
            self.load_events.append(LoadEvent(subnet, model, seconds, warm, tuple(evicted)))
            log.info("worker %s: loaded %s (%s) in %.2f s%s", self.url, model, subnet, seconds,
                     f", unloaded {', '.join(evicted)}" if evicted else "")

    async def _unload(self, subnet: str) -> None:
        """Unload and wait until Triton has released the model (unload_model returns before that)."""
        model = self.variants[subnet]
        self._lru.pop(subnet, None)
        try:
            await self.client.unload_model(model, headers=self.control_headers,
                                             client_timeout=self.unload_timeout_s)
            deadline = time.monotonic() + self.unload_timeout_s
            while await self.client.is_model_ready(model):
                if time.monotonic() > deadline:
                    raise WorkerFailed(f"worker {self.url}: variant {model} still ready {self.unload_timeout_s:g} s "
                                       "after unload_model")
                await asyncio.sleep(0.02)
        except InferenceServerException as e:
            raise WorkerFailed(f"worker {self.url}: unloading variant {model} ({subnet}) failed: "
                               f"{e.status()}: {e.message()}") from None
        self.unloads[subnet] += 1

    async def infer(self, images: np.ndarray, subnet: str, timeout_s: float) -> tuple[np.ndarray, list[dict]]:
        """Run ``images`` on ``subnet``'s variant, loading it first if needed. ``timeout_s`` bounds
        the inference; the load (seconds, by design) is not counted against it."""
        self._check(subnet)
        self._busy[subnet] += 1
        loads = len(self.load_events)
        try:
            await self._ensure(subnet)
            loaded_now = len(self.load_events) > loads  # this call (or one it waited on) loaded a variant
            model = self.variants[subnet]
            inp = grpcclient.InferInput("INPUT", list(images.shape), "FP32")
            inp.set_data_from_numpy(images)
            try:
                r = await self.client.infer(model, [inp], outputs=self._outputs, parameters={"subnet": subnet},
                                            client_timeout=timeout_s)
            except InferenceServerException as e:
                raise map_error(self.url, e, model) from None
        finally:
            self._busy[subnet] -= 1
        self.last_call_loaded = loaded_now
        return split_result(self.url, r, len(images))

    async def close(self) -> None:
        await self.client.close()
