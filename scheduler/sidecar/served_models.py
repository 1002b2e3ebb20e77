"""Which supernet models ``superserve serve`` serves, and what each one is: its repository entry, its weights'
metadata (family, sha256, input spec) and the profile it is planned with.

The sidecar serves the models named by ``serve --models`` (default: the one built-in ``supernet``), each under
its own name. A model's input shape comes from its family's spec (recorded in the weights' JSON), so admission
and the warm-up never assume 28x28 grey images. The default model's profile is ``profiles/<hardware>.json``
(or a quick one measured here, local_profile.py); another model's is ``profiles/<model>/<hardware>.json``,
written by ``superserve profile --model M`` (``--profile`` may name it per model: ``vit=FILE``)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..core.admission import InputSpec
from ..core.profile import ProfileError

DEFAULT_MODELS = ("supernet",)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ServedModelFiles:
    """A model of the repository, as the sidecar needs it before any Triton starts."""
    name: str
    family: str
    weights: Path
    sha256: str
    input: InputSpec

    def profile_path(self, explicit: str | None, measure: bool) -> Path:
        """The profile to plan this model with (see the module docstring)."""
        if self.name == "supernet":
            from .local_profile import find_profile

            return find_profile(explicit, measure)
        if explicit:
            return Path(explicit)
        from ..provenance import hardware_name

        path = paths.repo_root() / "profiles" / self.name / f"{hardware_name()}.json"
        if not path.exists():
            others = sorted(path.parent.glob("*.json"))
            if not others:
                raise ProfileError(f"model {self.name!r} has no profile at {path}; run 'superserve profile --model "
                                   f"{self.name}'")
            import logging

            logging.getLogger(__name__).warning("model %s: no profile for this hardware at %s; using %s (latency "
                                                "targets will be off until 'superserve profile --model %s' runs "
                                                "here)", self.name, path, others[0], self.name)
            return others[0]
        return path


def parse_models(text: str | None) -> tuple[str, ...]:
    """``serve --models supernet,vit`` -> ("supernet", "vit"); None or empty -> DEFAULT_MODELS."""
    if not text:
        return DEFAULT_MODELS
    names = tuple(n.strip() for n in text.split(","))
    for n in names:
        if not _NAME.fullmatch(n):
            raise ValueError(f"--models: {n!r} is not a model name (letters, digits, '.', '_', '-')")
    if len(set(names)) != len(names):
        raise ValueError(f"--models names a model twice: {text!r}")
    return names


def parse_profiles(text: str | None, models: tuple[str, ...]) -> dict[str, str]:
    """``--profile FILE`` (the first model's) or ``--profile supernet=A,vit=B`` -> {model: path}."""
    if not text:
        return {}
    if "=" not in text:
        return {models[0]: text}
    out = {}
    for part in text.split(","):
        name, _, path = part.partition("=")
        if name not in models or not path:
            raise ValueError(f"--profile: {part!r} must be MODEL=FILE with MODEL one of {list(models)}")
        out[name] = path
    return out


def model_files(name: str, repository: Path | None = None) -> ServedModelFiles:
    """The repository entry ``name`` and its weights' metadata; a clear error if either is missing."""
    from ..offline.model_config import model_weights

    repo = repository or paths.model_repository()
    config = repo / name / "config.pbtxt"
    if not config.exists():
        served = sorted(p.parent.name for p in repo.glob("*/config.pbtxt") if "fixed" not in p.parent.name)
        raise ValueError(f"no model {name!r} in {repo} (supernets there: {served}); 'superserve add-model' "
                         "writes one")
    text = config.read_text()
    weights = Path(model_weights(text) or paths.default_weights())
    weights = weights if weights.is_absolute() else paths.backend_dir() / weights
    meta_path = weights.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"model {name!r}: cannot read the weights' metadata {meta_path}: {e}") from None
    family = re.search(r'key: "family", value: \{ string_value: "([^"]*)"', text)
    return ServedModelFiles(name, family.group(1) if family else meta.get("family", "elastic-cnn"), weights,
                            meta["sha256"], input_spec(meta))


def input_spec(meta: dict) -> InputSpec:
    """The input spec of weights from their JSON (older JSON: built from the family, model_config.specs)."""
    if "input" in meta:
        i = meta["input"]
        return InputSpec(i["name"], i["dtype"], tuple(int(d) for d in i["dims"]))
    from ..offline.model_config import specs

    inp, _ = specs(meta)
    return InputSpec(inp.name, inp.dtype, tuple(inp.dims))
