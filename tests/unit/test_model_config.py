"""Model configs name their family and weights (``superserve add-model``), and wrong or mismatched
weights fail at load with a message naming the file and what differs."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from superserve.scheduler import paths
from superserve.scheduler.offline import model_config
from superserve.scheduler.cli import main
from superserve.supernet.checkpoint import WeightsMismatch, load_checkpoint, save_checkpoint
from superserve.supernet.config_check import ConfigMismatch, check_config, differences
from superserve.supernet.network import ElasticCNN
from superserve.supernet.vit import ElasticViT


def small_weights(tmp_path, model, name="w"):
    cands = model.candidates()[:3]
    model.calibrate(cands, model.example_input(8).numpy(), batch_size=8)
    rows = [{"name": c.name, "val_accuracy": 0.5 + i / 10, "macs": model.macs(c), "params": model.params(c)}
            for i, c in enumerate(cands)]
    path = tmp_path / f"{name}.pt"
    save_checkpoint(model, path, {"subnets": rows, "pareto": [c.name for c in cands]})
    return path


def parsed(text: str) -> dict:
    """The parts of a config.pbtxt that check_config reads, as Triton hands them to the backend."""
    def tensors(block):
        body = re.search(block + r" \[\n(.*?)\n\]", text, re.S).group(1)
        return [{"name": n, "data_type": t, "dims": d.split(", ")} for n, t, d in
                re.findall(r'name: "(\w+)", data_type: (\w+), dims: \[ ([\d, ]+) \]', body)]
    return {"name": re.search(r'name: "([^"]+)"', text).group(1), "input": tensors("input"),
            "output": tensors("output")}


def test_the_committed_configs_fit_their_weights():
    root = paths.model_repository()
    for config in sorted(root.glob("*/config.pbtxt")):
        text = config.read_text()
        family = re.search(r'key: "family", value: \{ string_value: "([^"]+)"', text).group(1)
        weights = paths.backend_dir() / model_config.model_weights(text)
        meta = json.loads(weights.with_suffix(".json").read_text())
        assert meta["family"] == family, config
        inp, out = model_config.specs(meta)
        assert differences(parsed(text), inp, out) == [], config


def test_add_model_writes_a_config_with_the_family_dims_and_baselines(tmp_path):
    w = small_weights(tmp_path, ElasticViT())
    repo = tmp_path / "repo"
    assert main(["add-model", "--family", "elastic-vit", "--weights", str(w), "--name", "tiny-vit",
                 "--repository", str(repo), "--baselines"]) == 0
    text = (repo / "tiny-vit" / "config.pbtxt").read_text()
    assert 'key: "family", value: { string_value: "elastic-vit" }' in text
    assert f'key: "weights", value: {{ string_value: "{w.resolve()}" }}' in text
    model, meta = load_checkpoint(w)
    assert differences(parsed(text), model.input_spec, model.output_spec) == []
    assert "dims: [ 1, 28, 28 ]" in text and "dims: [ 10 ]" in text
    pinned = sorted(p.parent.name for p in repo.glob("tiny-vit-fixed-*/config.pbtxt"))
    assert pinned == sorted(f"tiny-vit-fixed-{s}" for s in model_config.baseline_subnets(meta))
    assert (repo / "tiny-vit" / "1" / "README").exists()
    # Not over an existing model unless --force.
    assert main(["add-model", "--family", "elastic-vit", "--weights", str(w), "--name", "tiny-vit",
                 "--repository", str(repo)]) == 2
    assert main(["add-model", "--family", "elastic-vit", "--weights", str(w), "--name", "tiny-vit",
                 "--repository", str(repo), "--force"]) == 0


def test_add_model_refuses_weights_of_another_family_naming_the_file(tmp_path, capsys):
    w = small_weights(tmp_path, ElasticViT(), "mine")
    assert main(["add-model", "--family", "elastic-cnn", "--weights", str(w), "--repository",
                 str(tmp_path / "repo")]) == 2
    err = capsys.readouterr().err
    assert "mine.pt" in err and "'elastic-vit'" in err and "'elastic-cnn'" in err
    assert not (tmp_path / "repo").exists()
    assert main(["add-model", "--family", "no-such", "--weights", str(w)]) == 2
    assert "unknown supernet family 'no-such'" in capsys.readouterr().err


def test_weights_that_do_not_fit_their_architecture_name_the_tensors(tmp_path):
    w = small_weights(tmp_path, ElasticCNN(), "cnn")
    meta_path = w.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["arch"]["stage_channels"] = [16, 64, 128]  # the JSON says another width than the tensors have
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(WeightsMismatch, match=r"cnn\.pt.*shapes differ.*stem\.conv\.layer\.weight: "
                                              r"file \[32, 1, 3, 3\] vs expected \[16, 1, 3, 3\]"):
        load_checkpoint(w)


def test_replaced_truncated_and_foreign_files_are_named(tmp_path):
    w = small_weights(tmp_path, ElasticCNN(), "cnn")
    other = small_weights(tmp_path, ElasticViT(), "vit")
    shutil.copy(other, w)  # weights swapped without their JSON
    with pytest.raises(WeightsMismatch, match=r"cnn\.pt: sha256 does not match"):
        load_checkpoint(w)
    with pytest.raises(WeightsMismatch, match=r"cnn\.pt: does not fit family 'elastic-cnn'.*missing tensors"):
        load_checkpoint(w, verify=False)
    w.write_bytes(b"not a torch file")
    with pytest.raises(WeightsMismatch, match=r"cnn\.pt: not a readable torch state dict"):
        load_checkpoint(w, verify=False)
    w.with_suffix(".json").write_text("{")
    with pytest.raises(WeightsMismatch, match=r"cnn\.json: not valid JSON"):
        load_checkpoint(w)
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")
    torch.save([1, 2], w)
    w.with_suffix(".json").write_text(json.dumps({"arch": {}, "sha256": "x", "family": "elastic-cnn"}))
    with pytest.raises(WeightsMismatch, match=r"cnn\.json: architecture \{\} does not fit family 'elastic-cnn'"):
        load_checkpoint(w, verify=False)


def test_a_config_with_other_dims_is_refused_naming_the_weights_and_the_dims():
    model = ElasticViT()
    config = {"name": "vit", "input": [{"name": "INPUT", "data_type": "TYPE_FP32", "dims": ["1", "32", "32"]}],
              "output": [{"name": "LOGITS", "data_type": "TYPE_FP32", "dims": ["10"]},
                         {"name": "INFO", "data_type": "TYPE_STRING", "dims": ["1"]}]}
    with pytest.raises(ConfigMismatch, match=r"'vit' does not fit weights weights/vit\.pt: input 'INPUT' dims "
                                             r"\[1, 32, 32\] in the config, \[1, 28, 28\] in the family's spec"):
        check_config(config, model.input_spec, model.output_spec, "weights/vit.pt")
    config["input"][0]["dims"] = ["1", "28", "28"]
    check_config(config, model.input_spec, model.output_spec, "weights/vit.pt")
    config["output"] = config["output"][:1]
    assert differences(config, model.input_spec, model.output_spec) == [
        "no output named 'INFO' (TYPE_STRING [1]), which the backend always returns"]


def test_weights_parameter_is_relative_inside_the_backend_folder(tmp_path):
    assert model_config.weights_parameter(paths.default_weights()) == "weights/supernet.pt"
    assert model_config.weights_parameter(tmp_path / "x.pt") == str((tmp_path / "x.pt").resolve())
    text = (paths.model_repository() / "supernet" / "config.pbtxt").read_text()
    assert model_config.model_weights(text) == "weights/supernet.pt"
    assert model_config.model_weights(model_config.with_weights(text, "/abs/w.pt")) == "/abs/w.pt"


def test_the_transformer_exports_as_separate_variant_models(tmp_path):
    """INFaaS-style variants of the vit model: one file per Pareto subnet, served by the exported path
    of the backend's runner exactly as the supernet serves that subnet."""
    import numpy as np

    from superserve.scheduler.offline.variants import EXPORTED_FILE, build_variant_repository
    from superserve.supernet.serving import SupernetRunner

    weights = paths.backend_dir() / "weights" / "vit.pt"
    variants = build_variant_repository(tmp_path, weights, config_model="vit")
    model, meta = load_checkpoint(weights)
    assert list(variants) == meta["pareto"]
    subnet, mname = list(variants.items())[len(variants) // 2]
    text = (tmp_path / mname / "config.pbtxt").read_text()
    assert f'name: "{mname}"' in text and 'string_value: "elastic-vit"' in text
    runner = SupernetRunner(exported=tmp_path / mname / "1" / EXPORTED_FILE, family="elastic-vit")
    assert runner.input_spec == model.input_spec and runner.pinned.name == subnet
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    with torch.inference_mode():
        want = model(torch.from_numpy(x), model.space.parse(subnet)).numpy()
    np.testing.assert_allclose(runner.run(runner.resolve(None), [x]).logits, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(WeightsMismatch, match=r"subnet\.pt: an exported subnet of family 'elastic-vit'"):
        SupernetRunner(exported=tmp_path / mname / "1" / EXPORTED_FILE, family="elastic-cnn")
