"""``superserve add-model``: a Triton model config for a supernet's weights, written from the weights'
own metadata so nobody edits dims by hand.

One model_repository entry per supernet: ``<repo>/<name>/config.pbtxt`` names the family and the weights
in its parameters and declares the family's input and output specs; several entries are served side
by side by one Triton (each its own Python backend process). With ``--baselines`` it also writes
fixed-subnet baselines (``<name>-fixed-<subnet>``: the same weights pinned to the smallest, a middle and
the largest Pareto subnet, batched by Triton's dynamic batcher). The weights are loaded and checked
first (``checkpoint.load_checkpoint``), so wrong or mismatched weights fail here, naming the file and
what differs, not later inside Triton.
"""
from __future__ import annotations

import re
from pathlib import Path

from .. import paths

DEFAULT_MAX_BATCH = 64
THREADS_NOTE = ("# One intra-op thread: on a small CPU host the scheduler and clients share the cores, and torch's\n"
                "# spinning worker threads starve them (bench: SLO attainment 0.887 -> 0.964). "
                "\"0\" = torch's default.\n")
WEIGHTS_PARAM = re.compile(r'parameters \{ key: "weights", value: \{ string_value: "([^"]*)" \} \}')


def weights_parameter(weights: str | Path) -> str:
    """How a config names weights: relative to the backend folder when inside it (the repository
    stays relocatable and works in NVIDIA's image, where the folder is copied), else absolute."""
    p = Path(weights).resolve()
    try:
        return str(p.relative_to(paths.backend_dir().resolve()))
    except ValueError:
        return str(p)


def specs(meta: dict):
    """(input, output) TensorSpecs of weights from their JSON (older JSON: built from the family)."""
    from superserve.supernet.family import TensorSpec

    if "input" in meta and "output" in meta:
        return TensorSpec.from_json(meta["input"]), TensorSpec.from_json(meta["output"])
    from superserve.supernet.families import DEFAULT_FAMILY, build
    model = build(meta.get("family", DEFAULT_FAMILY), meta["arch"])
    return model.input_spec, model.output_spec


def _dims(spec) -> str:
    return ", ".join(map(str, spec.dims))


def render(name: str, family: str, weights: str, input_spec, output_spec, *, comment: str,
           max_batch_size: int = DEFAULT_MAX_BATCH, subnet: str | None = None, batching: str | None = None,
           torch_threads: int = 1) -> str:
    """The config.pbtxt text (inputs and outputs from the specs; the backend checks them again at load)."""
    batching = batching or "dynamic_batching {\n  max_queue_delay_microseconds: 200\n}\n"
    text = (f"# {comment}\n"
            f'name: "{name}"\nbackend: "python_supernet"\nmax_batch_size: {max_batch_size}\n'
            f"input [\n  {{ name: \"{input_spec.name}\", data_type: TYPE_{input_spec.dtype}, "
            f"dims: [ {_dims(input_spec)} ] }}\n]\n"
            f"output [\n  {{ name: \"{output_spec.name}\", data_type: TYPE_{output_spec.dtype}, "
            f"dims: [ {_dims(output_spec)} ] }},\n"
            f"  {{ name: \"INFO\", data_type: TYPE_STRING, dims: [ 1 ] }}\n]\n"
            f"instance_group [ {{ kind: KIND_CPU, count: 1 }} ]\n"
            + batching +
            f'parameters {{ key: "family", value: {{ string_value: "{family}" }} }}\n'
            f"# Relative paths are taken from backends/python_supernet/.\n"
            f'parameters {{ key: "weights", value: {{ string_value: "{weights}" }} }}\n'
            + THREADS_NOTE +
            f'parameters {{ key: "torch_threads", value: {{ string_value: "{torch_threads}" }} }}\n')
    if subnet:
        text += f'parameters {{ key: "subnet", value: {{ string_value: "{subnet}" }} }}\n'
    return text


def _write(root: Path, name: str, text: str, force: bool) -> Path:
    d = root / name
    if (d / "config.pbtxt").exists() and not force:
        raise FileExistsError(f"{d / 'config.pbtxt'} exists; pass --force to overwrite it or --name for another model")
    (d / "1").mkdir(parents=True, exist_ok=True)
    (d / "config.pbtxt").write_text(text)
    readme = d / "1" / "README"
    if not readme.exists():
        readme.write_text("Python-based backend: the code lives in backends/python_supernet/; "
                          "this version folder is intentionally empty.\n")
    return d / "config.pbtxt"


def baseline_subnets(meta: dict) -> list[str]:
    """Smallest, middle and largest Pareto subnet (distinct, cheapest first)."""
    pareto = list(meta["pareto"])
    return list(dict.fromkeys([pareto[0], pareto[len(pareto) // 2], pareto[-1]]))


def add_model(family: str, weights: str | Path, name: str | None = None, repo: str | Path | None = None,
              baselines: bool = False, force: bool = False, max_batch_size: int = DEFAULT_MAX_BATCH) -> list[Path]:
    """Check the weights against ``family`` and write the model's config (and baselines); returns the
    files written. Raises FileNotFoundError / checkpoint.WeightsMismatch naming the file on bad weights."""
    from superserve.supernet.checkpoint import load_checkpoint
    from superserve.supernet.families import family_class

    family_class(family)  # an unknown family (or a missing optional package) is named before the weights
    weights = Path(weights)
    model, meta = load_checkpoint(weights, expect_family=family)  # full check: sha256, family, tensors, dims
    name = name or weights.stem
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (it is a folder and a URL part)")
    root = Path(repo) if repo else paths.model_repository()
    inp, out = model.input_spec, model.output_spec
    wparam = weights_parameter(weights)
    written = [_write(root, name, render(
        name, family, wparam, inp, out, max_batch_size=max_batch_size,
        comment=f"Supernet {family} ({len(meta['calibrated'])} servable subnets, request parameter \"subnet\"); "
                f"SubNetAct. Written by 'superserve add-model'."), force)]
    if baselines:
        for subnet in baseline_subnets(meta):
            written.append(_write(root, f"{name}-fixed-{subnet}", render(
                f"{name}-fixed-{subnet}", family, wparam, inp, out, max_batch_size=max_batch_size, subnet=subnet,
                comment=f"Baseline: {name} pinned to subnet {subnet}, Triton's dynamic batcher. Written by "
                        "'superserve add-model --baselines'."), force))
    return written


def model_weights(config_text: str) -> str:
    """The weights parameter of a config (\"\" if none)."""
    m = WEIGHTS_PARAM.search(config_text)
    return m.group(1) if m else ""


def with_weights(config_text: str, weights: str) -> str:
    """The config with its weights parameter set to ``weights``."""
    if not WEIGHTS_PARAM.search(config_text):
        raise ValueError("the model config has no 'weights' parameter to set")
    return WEIGHTS_PARAM.sub(f'parameters {{ key: "weights", value: {{ string_value: "{weights}" }} }}', config_text, 1)
