"""Weights on disk: ``<name>.pt`` (state dict) beside ``<name>.json`` (architecture, calibrated
subnets, accuracy table, sha256 of the .pt, the command that produced it)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .network import ElasticCNN
from .subnets import SearchSpace


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(model: ElasticCNN, path: str | Path, meta: dict) -> dict:
    """Write weights and metadata; returns the metadata as written (with sha256)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    meta = dict(meta)
    meta["arch"] = {"stage_channels": list(model.stage_channels), "max_depth": len(model.stages[0].blocks),
                    "num_classes": model.num_classes, "depth_choices": list(model.space.depth_choices),
                    "width_choices": list(model.space.width_choices)}
    meta["calibrated"] = list(model.calibrated)
    meta["sha256"] = sha256_of(path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    verify: bool = True) -> tuple[ElasticCNN, dict]:
    """Build the network from the metadata and load the weights (eval mode)."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.exists() or not meta_path.exists():
        raise FileNotFoundError(f"supernet weights {path} or metadata {meta_path} missing; run 'superserve train'")
    meta = json.loads(meta_path.read_text())
    if verify and sha256_of(path) != meta["sha256"]:
        raise ValueError(f"{path}: sha256 does not match {meta_path} (weights replaced without their metadata?)")
    a = meta["arch"]
    space = SearchSpace(tuple(a["depth_choices"]), tuple(a["width_choices"]), len(a["stage_channels"]))
    model = ElasticCNN(tuple(a["stage_channels"]), a["max_depth"], a["num_classes"], space)
    model.set_calibrated(meta["calibrated"])
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return model.to(device).eval(), meta
