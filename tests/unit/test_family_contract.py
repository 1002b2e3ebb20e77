"""The plug-in contract, the same tests for every supernet family (supernet/family.py): actuation equals
a standalone network built from the weights and statistics, switching subnet moves no weights, names
round-trip, calibration is deterministic, specs and costs are consistent, and checkpoints load back
into the same function. Random weights (affine parameters randomised so slicing them matters).

The ofa-mobilenetv3 family runs when the optional ``ofa`` package is installed (``pip install
'.[ofa]'``, which scripts/setup.sh does); otherwise it is skipped, saying so."""
from __future__ import annotations

import importlib.util
import json
import random

import numpy as np
import pytest
import torch

from superserve.supernet.checkpoint import WeightsMismatch, load_checkpoint, save_checkpoint
from superserve.supernet.families import FAMILIES, family_class
from superserve.supernet.serving import SupernetRunner

HAVE_OFA = importlib.util.find_spec("ofa") is not None
OFA_SKIP = pytest.mark.skipif(not HAVE_OFA, reason="the optional 'ofa' package is not installed "
                              "(pip install 'superserve-triton[ofa]'); the OFA adapter cannot be tested")
# Small shapes: the OFA MobileNetV3 at 32x32 pixels and 10 classes.
SMALL = {"elastic-cnn": {}, "elastic-vit": {},
         "ofa-mobilenetv3": {"resolution": 32, "num_classes": 10}}
PARAMS = [pytest.param("elastic-cnn"), pytest.param("elastic-vit"),
          pytest.param("ofa-mobilenetv3", marks=[OFA_SKIP, pytest.mark.slow])]
"""The OFA MobileNetV3 builds a network of OFA's own per test (a third of `make unit`'s time): it runs in
`make test`, not in the quick loop."""


def test_every_registered_family_is_tested():
    assert set(FAMILIES) == {p.values[0] for p in PARAMS}


def build(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = family_class(family)(**SMALL[family])
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:  # norms' affine parameters and biases
                p.uniform_(0.5, 1.5)
    return model


def pick_subnets(model, n_random: int = 2):
    sp, rng = model.space, random.Random(7)
    subs = [sp.largest, sp.smallest] + [sp.sample(rng) for _ in range(n_random)]
    return list(dict.fromkeys(subs))


def images(model, n: int):
    return model.example_input(n, seed=1).numpy()


@pytest.fixture(scope="module", params=PARAMS)
def family(request):
    """(family name, calibrated eval-mode model, its subnets, the calibration images)."""
    name = request.param
    model = build(name)
    small = name == "ofa-mobilenetv3"  # ~1 s per forward on a loaded 2-core host: fewer subnets and images
    subs = pick_subnets(model, n_random=1 if small else 2)
    calib = images(model, 8 if small else 48)
    model.calibrate(subs, calib, batch_size=16)
    return name, model.eval(), subs, calib


def test_actuated_subnet_equals_a_standalone_network(family):
    name, model, subs, _ = family
    x = model.example_input(5, seed=2)
    outs = []
    for cfg in subs:
        standalone = model.extract(cfg)
        own = {t.data_ptr() for t in standalone.state_dict().values()}
        assert not own & {t.data_ptr() for t in model.state_dict().values()}, "standalone must not share storage"
        with torch.inference_mode():
            got, want = model(x, cfg), standalone(x)
        assert got.shape == (5, *model.output_spec.dims)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        outs.append(got)
    # The subnets are different functions (else the equality above would prove little).
    assert not torch.allclose(outs[0], outs[1], atol=1e-3)


def test_switching_subnets_moves_no_weights(family):
    _, model, subs, _ = family

    def storage():
        return {n: (t.data_ptr(), tuple(t.shape)) for n, t in model.state_dict(keep_vars=True).items()}

    before = storage()
    snapshot = {n: t.detach().clone() for n, t in model.state_dict().items()}
    x = model.example_input(2, seed=3)
    with torch.inference_mode():
        for cfg in subs * 2:
            model(x, cfg)
    assert storage() == before
    for n, t in model.state_dict().items():
        assert torch.equal(t, snapshot[n]), n


def test_names_round_trip_and_bad_names_are_named(family):
    _, model, subs, _ = family
    sp, rng = model.space, random.Random(3)
    for cfg in subs + [sp.sample(rng) for _ in range(20)] + model.candidates()[:10]:
        assert sp.parse(cfg.name) == cfg and sp.parse(cfg.name).name == cfg.name
    for bad in ["", "bogus", sp.largest.name + ".9", sp.largest.name.replace("-", "_")]:
        with pytest.raises(ValueError, match="subnet"):
            sp.parse(bad)
    assert sp.size() >= len(model.candidates()) >= 8


def test_calibration_is_deterministic(family):
    name, model, subs, calib = family
    again = type(model).from_arch(model.arch())
    again.set_calibrated(model.calibrated)
    again.load_state_dict(model.state_dict())
    again.calibrate(subs, calib, batch_size=16)  # the same images and subnets again, from the same weights
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert again.calibrated == [c.name for c in subs]


def test_subnets_have_their_own_statistics_where_the_family_uses_batch_norm(family):
    _, model, subs, _ = family
    if not model.uses_subnet_norm:
        # Every subnet is exact without statistics: an uncalibrated model gives the same outputs.
        fresh = type(model).from_arch(model.arch())
        fresh.load_state_dict(model.state_dict())  # no statistics to calibrate: nothing else to set
        x = model.example_input(2, seed=4)
        with torch.inference_mode():
            torch.testing.assert_close(fresh.eval()(x, subs[2]), model(x, subs[2]), atol=0, rtol=0)
        return
    with pytest.raises(KeyError, match="no calibrated statistics"):
        cands = [c for c in model.candidates() if c not in subs]
        model(model.example_input(1), cands[0])
    rows = [b for n, b in model.state_dict().items() if b.ndim == 2 and b.shape[0] == len(subs)
            and ("running_mean" in n or "norm_mean" in n)]
    assert rows and any(not torch.allclose(r[0], r[1]) for r in rows)


def test_specs_and_costs(family):
    _, model, subs, _ = family
    spec = model.input_spec
    x = model.example_input(3)
    assert tuple(x.shape) == (3, *spec.dims) and spec.dtype == "FP32" and spec.value_range == (0.0, 1.0)
    assert spec.preprocessing, "the input spec says what the model does to the values"
    sp = model.space
    assert model.macs(sp.largest) > model.macs(sp.smallest) > 0
    assert model.params(sp.largest) > model.params(sp.smallest) > 0
    assert model.params(sp.largest) <= sum(p.numel() for p in model.parameters())
    assert model.params(sp.largest) == sum(p.numel() for p in model.extract(sp.largest).parameters())


def test_checkpoint_round_trip_and_family_check(family, tmp_path):
    name, model, subs, _ = family
    path = tmp_path / "w.pt"
    meta = save_checkpoint(model, path, {"subnets": [], "pareto": []})
    assert meta["family"] == name and meta["input"]["dims"] == list(model.input_spec.dims)
    loaded, meta2 = load_checkpoint(path, expect_family=name)
    x = model.example_input(2, seed=5)
    with torch.inference_mode():
        for cfg in subs:
            torch.testing.assert_close(loaded(x, cfg), model(x, cfg), atol=0, rtol=0)
    other = next(f for f in FAMILIES if f != name)
    with pytest.raises(WeightsMismatch, match=rf"w\.pt.*{name}.*{other}"):
        load_checkpoint(path, expect_family=other)


def test_runner_serves_several_subnets_in_one_batch(family, tmp_path):
    """As the backend's execute(): requests for different subnets grouped, one forward per group,
    each group's rows equal to that subnet's standalone network."""
    name, model, subs, _ = family
    path = tmp_path / "w.pt"
    rows = [{"name": c.name, "val_accuracy": 0.5 + i / 100, "macs": model.macs(c), "params": model.params(c)}
            for i, c in enumerate(subs)]
    save_checkpoint(model, path, {"subnets": rows, "pareto": [c.name for c in subs]})
    runner = SupernetRunner(path, family=name)
    requests = [(subs[i % len(subs)].name, images(model, 1 + i % 3) + i / 100) for i in range(7)]
    groups = {}
    for sub, x in requests:
        groups.setdefault(sub, []).append(np.clip(x, 0, 1).astype(np.float32))
    for sub, xs in groups.items():
        cfg = runner.resolve(sub)
        got = runner.run(cfg, [runner.check_input(x) for x in xs]).logits
        with torch.inference_mode():
            want = model.extract(cfg)(torch.from_numpy(np.concatenate(xs))).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
        info = json.loads(runner.info_rows(cfg, got, 1.0, len(got))[0, 0])
        assert info["subnet"] == sub
    bad = np.zeros((1, *model.input_spec.dims[:-1], model.input_spec.dims[-1] + 1), np.float32)
    dims = ", ".join(map(str, model.input_spec.dims))
    with pytest.raises(ValueError, match=r"input 'INPUT' must be FP32 \[B, " + dims):
        runner.check_input(bad)
