"""Does a Triton model config fit the supernet it loads? Checked at load, so a config whose dims were
written for other weights fails there, naming the weights file and what differs, instead of
serving requests Triton shapes one way and the network expects another.

``config`` is the model config as Triton hands it to the backend (JSON of ModelConfig: dims may be
strings, data types are ``TYPE_FP32`` ...).
"""
from __future__ import annotations

from .family import TensorSpec

INFO_OUTPUT = "INFO"
"""The backend's second output: one JSON row per input row (docs/design.md)."""


class ConfigMismatch(ValueError):
    pass


def _tensor(config: dict, kind: str, name: str) -> dict | None:
    return next((t for t in config.get(kind, []) if t.get("name") == name), None)


def _dims(t: dict) -> tuple[int, ...]:
    return tuple(int(d) for d in t.get("dims", []))


def differences(config: dict, input_spec: TensorSpec, output_spec: TensorSpec) -> list[str]:
    """What the config declares differently from the family's specs (empty when it fits)."""
    out = []
    for kind, spec in (("input", input_spec), ("output", output_spec)):
        t = _tensor(config, kind, spec.name)
        if t is None:
            names = [x.get("name") for x in config.get(kind, [])]
            out.append(f"no {kind} named {spec.name!r} (config has {names}); the family's {kind} is "
                       f"{spec.name} {spec.describe()}")
            continue
        if t.get("data_type") != f"TYPE_{spec.dtype}":
            out.append(f"{kind} {spec.name!r} data_type {t.get('data_type')} in the config, TYPE_{spec.dtype} "
                       "in the family's spec")
        if _dims(t) != spec.dims:
            out.append(f"{kind} {spec.name!r} dims {list(_dims(t))} in the config, {list(spec.dims)} in the "
                       "family's spec")
    if _tensor(config, "output", INFO_OUTPUT) is None:
        out.append(f"no output named {INFO_OUTPUT!r} (TYPE_STRING [1]), which the backend always returns")
    return out


def check_config(config: dict, input_spec: TensorSpec, output_spec: TensorSpec, weights) -> None:
    diffs = differences(config, input_spec, output_spec)
    if diffs:
        raise ConfigMismatch(f"model config {config.get('name', '?')!r} does not fit weights {weights}: "
                             + "; ".join(diffs) + ". 'superserve add-model' writes a config that fits.")
