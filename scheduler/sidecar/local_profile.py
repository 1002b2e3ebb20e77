"""Which profile to plan with, and a quick one of this machine when none matches.

A committed ``profiles/<hardware>.json`` measured for the weights served is used as it is. Otherwise
(another machine's profile, or other weights) ``serve`` and ``bench`` measure a quick profile here:
a temporary Triton on free ports, every Pareto subnet at every batch size, a few timed calls each
(under a minute on a 2-core CPU host), cached under the user's cache folder keyed by hardware and
weights (``~/.cache/superserve/profiles/<hardware>-<sha12>.json``) so it is measured once.
``--profile FILE`` still forces a file; ``superserve profile`` remains the full measurement."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from .. import paths
from ..core.profile import ProfileError
from ..provenance import hardware_name

log = logging.getLogger(__name__)
QUICK_REPS = 6
QUICK_WARMUP = 2


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "superserve" / "profiles"


def weights_sha() -> str | None:
    meta = paths.default_weights().with_suffix(".json")
    try:
        return json.loads(meta.read_text())["sha256"]
    except (OSError, KeyError, ValueError):
        return None


def _supernet_of(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("supernet")
    except (OSError, ValueError):
        return None


def cached_path(hardware: str, sha: str) -> Path:
    return cache_dir() / f"{hardware}-{sha[:12]}.json"


def find_profile(explicit: str | None, measure: bool = True) -> Path:
    """``explicit`` if given; else the committed profile of this hardware for these weights; else a
    cached quick profile of this machine; else (``measure``) a new quick profile; else any committed
    profile, with a warning that latency targets will be off."""
    if explicit:
        return Path(explicit)
    hw, sha = hardware_name(), weights_sha()
    committed = paths.repo_root() / "profiles" / f"{hw}.json"
    if committed.exists() and (sha is None or _supernet_of(committed) == sha):
        return committed
    others = sorted((paths.repo_root() / "profiles").glob("*.json"))
    why = (f"profiles/{committed.name} was measured for other weights" if committed.exists()
           else f"no committed profile for this hardware ({hw})")
    if sha is not None:
        cached = cached_path(hw, sha)
        if cached.exists() and _supernet_of(cached) == sha:
            log.warning("%s; planning with this machine's quick profile %s (measured earlier; "
                        "'superserve profile' makes a full one)", why, cached)
            return cached
        if measure:
            log.warning("%s; measuring a quick profile of this machine (under a minute, once; cached at %s)",
                        why, cached)
            return measure_quick(cached, hw)
    if not others:
        raise ProfileError(f"{why}; run 'superserve profile'")
    log.warning("%s; using %s. Latency targets will be off until you run 'superserve profile' here.", why,
                others[0].name)
    return others[0]


def measure_quick(out: Path, hardware: str, reps: int = QUICK_REPS, batch_sizes=None) -> Path:
    """Start a Triton on free ports, measure every Pareto subnet at every batch size, write ``out``."""
    import tritonclient.grpc as grpcclient

    from ..ports import free_ports
    from ..offline.profiler import BATCH_SIZES, build_profile, write_profile
    from .triton_launcher import TritonConfig, TritonProcess

    meta = json.loads(paths.default_weights().with_suffix(".json").read_text())
    t0 = time.monotonic()
    http, grpc, metrics = free_ports(3)
    with TritonProcess(TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, models=("supernet",))) as t:
        client = grpcclient.InferenceServerClient(t.cfg.grpc_url)
        prof = build_profile(client, meta, hardware, batch_sizes or BATCH_SIZES, reps, warmup=QUICK_WARMUP,
                             label="quick profile")
        client.close()
    prof["quick"] = {"reps": reps, "seconds": round(time.monotonic() - t0, 1),
                     "note": "measured by serve/bench because no committed profile matched; "
                             "'superserve profile' makes the full one"}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    write_profile(prof, tmp)
    tmp.replace(out)  # atomic: a concurrent reader sees the whole file or none
    log.warning("quick profile of this machine measured in %.0f s: %s", time.monotonic() - t0, out)
    return out
