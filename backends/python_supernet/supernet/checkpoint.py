"""Weights on disk: ``<name>.pt`` (state dict) beside ``<name>.json`` (family, architecture, input and
output specs, servable subnets, accuracy table, sha256 of the .pt, the command that produced it).

Loading checks everything it can before serving and fails with a message naming the file and what
differs: a missing or unreadable file, a sha256 that is not the JSON's, another family than the model
config asks for, an architecture the family cannot build, tensors missing, unexpected or of another
shape than the architecture needs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .families import DEFAULT_FAMILY, UnknownFamily, build
from .family import Supernet, TensorSpec


class WeightsMismatch(ValueError):
    """The weights file does not fit: its message names the file and what differs."""


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(model: Supernet, path: str | Path, meta: dict) -> dict:
    """Write weights and metadata; returns the metadata as written (with sha256)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    meta = dict(meta)
    meta["family"] = model.family
    meta["arch"] = model.arch()
    meta["input"] = model.input_spec.to_json()
    meta["output"] = model.output_spec.to_json()
    meta["calibrated"] = list(model.calibrated)
    meta["sha256"] = sha256_of(path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def read_meta(path: str | Path) -> dict:
    """The JSON beside weights ``path`` (WeightsMismatch naming it if missing or unreadable)."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.exists() or not meta_path.exists():
        raise FileNotFoundError(f"supernet weights {path} or metadata {meta_path} missing; run 'superserve train' "
                                "(or 'superserve add-model' for weights of your own)")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        raise WeightsMismatch(f"{meta_path}: not valid JSON ({e})") from None
    for key in ("arch", "sha256"):
        if key not in meta:
            raise WeightsMismatch(f"{meta_path}: no {key!r} entry; this is not the metadata of supernet weights")
    return meta


def state_dict_differences(model: torch.nn.Module, state: dict) -> list[str]:
    """What keeps ``state`` from loading into ``model``: missing, unexpected and mis-shaped tensors."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [f"{k}: file {list(state[k].shape)} vs expected {list(want[k].shape)}"
              for k in want if k in state and hasattr(state[k], "shape") and state[k].shape != want[k].shape]
    out = []
    for label, items in (("missing tensors", missing), ("unexpected tensors", unexpected), ("shapes differ", shapes)):
        if items:
            out.append(f"{label} ({len(items)}): " + "; ".join(items[:4]) + (" ..." if len(items) > 4 else ""))
    return out


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", verify: bool = True,
                    expect_family: str | None = None) -> tuple[Supernet, dict]:
    """Build the network of the family the metadata names and load the weights (eval mode).

    ``expect_family`` (the model config's ``family``) must match the weights' family."""
    path = Path(path)
    meta = read_meta(path)
    meta_path = path.with_suffix(".json")
    if verify and sha256_of(path) != meta["sha256"]:
        raise WeightsMismatch(f"{path}: sha256 does not match {meta_path} (weights replaced without their metadata?)")
    family = meta.get("family", DEFAULT_FAMILY)
    if expect_family and family != expect_family:
        raise WeightsMismatch(f"{path}: weights of family {family!r} (per {meta_path.name}), but the model config "
                              f"names family {expect_family!r}")
    try:
        model = build(family, meta["arch"])
        model.set_calibrated(meta.get("calibrated", []))
    except UnknownFamily as e:
        raise WeightsMismatch(f"{meta_path}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsMismatch(f"{meta_path}: architecture {meta['arch']} does not fit family {family!r}: "
                              f"{type(e).__name__}: {e}") from None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise WeightsMismatch(f"{path}: not a readable torch state dict ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise WeightsMismatch(f"{path}: holds a {type(state).__name__}, not a state dict")
    diffs = state_dict_differences(model, state)
    if diffs:
        raise WeightsMismatch(f"{path}: does not fit family {family!r} with the architecture in {meta_path.name}: "
                              + " | ".join(diffs))
    model.load_state_dict(state)
    for key, spec in (("input", model.input_spec), ("output", model.output_spec)):
        if key in meta and TensorSpec.from_json(meta[key]).dims != spec.dims:
            raise WeightsMismatch(f"{meta_path}: {key} dims {meta[key]['dims']} differ from the family's "
                                  f"{list(spec.dims)} for this architecture")
    meta.setdefault("family", family)
    meta.setdefault("input", model.input_spec.to_json())
    meta.setdefault("output", model.output_spec.to_json())
    return model.to(device).eval(), meta
