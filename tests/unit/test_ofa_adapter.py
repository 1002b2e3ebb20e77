"""The Once-for-All adapter beyond the family contract (tests/unit/test_family_contract.py): a checkpoint
in OFA's published form (a ``state_dict`` of OFA's own ``OFAMobileNetV3``) imports and serves, several
subnets in one batch equal the static subnets OFA's own API extracts with the same BN statistics, and
those statistics matter. Random weights at 32x32 pixels; nothing is downloaded."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("ofa") is None,
                                 reason="the optional 'ofa' package is not installed (pip install "
                                 "'superserve-triton[ofa]'); the OFA adapter cannot be tested"),
              pytest.mark.slow]  # OFA's own networks are built per test: in `make test`, not the quick loop

RES, CLASSES = 32, 10


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A random OFA MobileNetV3 saved as OFA publishes its checkpoints: {"state_dict": ...} of its own class,
    with non-trivial BN statistics."""
    from superserve.supernet.ofa_adapter import ofa_modules

    OFAMobileNetV3, _ = ofa_modules()
    torch.manual_seed(0)
    net = OFAMobileNetV3(n_classes=CLASSES, dropout_rate=0.0, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                         depth_list=[2, 3, 4])
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("ofa") / "ofa_mbv3_random.pth"
    torch.save({"state_dict": net.state_dict()}, path)
    return path, net


def test_a_published_checkpoint_imports_and_serves_several_subnets_in_one_batch(published, tmp_path):
    from superserve.supernet.checkpoint import load_checkpoint
    from superserve.supernet.ofa_adapter import import_checkpoint
    from superserve.supernet.serving import SupernetRunner

    from superserve.supernet.ofa_adapter import OFASpace

    src, net = published
    out = tmp_path / "ofa.pt"
    sp = OFASpace()
    # Three of the 27 candidates (every uniform kernel, ratio and depth): the import's MAC counting runs a
    # forward per subnet, seconds each on a loaded 2-core host.
    chosen = [sp.uniform(7, 6, 4).name, sp.smallest.name, sp.uniform(5, 4, 3).name]
    meta = import_checkpoint(src, out, resolution=RES, num_classes=CLASSES, subnets=chosen)
    assert meta["family"] == "ofa-mobilenetv3" and set(meta["calibrated"]) == set(chosen)
    assert meta["input"]["dims"] == [3, RES, RES] and "shared statistics" in meta["calibration"]
    model, _ = load_checkpoint(out, expect_family="ofa-mobilenetv3")
    assert len(model.candidates()) == 27
    runner = SupernetRunner(out, family="ofa-mobilenetv3")
    names = meta["pareto"]
    assert names == [sp.smallest.name, sp.uniform(5, 4, 3).name, sp.uniform(7, 6, 4).name]  # by MACs
    x = np.random.default_rng(0).random((6, 3, RES, RES), dtype=np.float32)
    # One execute(): rows 0-1 on the smallest, 2-3 on a middle, 4-5 on the largest subnet.
    for i, name in enumerate(names):
        cfg = runner.resolve(name)
        got = runner.run(cfg, [x[2 * i:2 * i + 1], x[2 * i + 1:2 * i + 2]]).logits
        # OFA's own static subnet of the original network, with the same (shared) statistics.
        net.set_active_subnet(ks=list(cfg.ks), e=list(cfg.e), d=list(cfg.d))
        static = net.get_active_subnet(preserve_weight=True).eval()
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        with torch.inference_mode():
            want = static((torch.from_numpy(x[2 * i:2 * i + 2]) - mean) / std).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_per_subnet_statistics_are_used_and_differ_from_the_shared_ones(published, tmp_path):
    from superserve.supernet.ofa_adapter import import_checkpoint
    from superserve.supernet.checkpoint import load_checkpoint

    from superserve.supernet.ofa_adapter import OFASpace

    src, net = published
    images = np.random.default_rng(1).random((8, 3, RES, RES), dtype=np.float32)
    out = tmp_path / "ofa.pt"
    sp = OFASpace()
    names = [sp.smallest.name, sp.uniform(5, 4, 3).name, sp.largest.name]
    import_checkpoint(src, out, resolution=RES, num_classes=CLASSES, images=images, subnets=names)
    model, meta = load_checkpoint(out)
    assert meta["calibrated"] == names and "per-subnet statistics over 8 images" in meta["calibration"]
    cfg = model.space.parse(names[1])
    x = torch.from_numpy(images[:2])
    with torch.inference_mode():
        ours, reference = model(x, cfg), model.extract(cfg)(x)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    # OFA's extraction with its own shared statistics is another function: the store is what serves.
    net.set_active_subnet(ks=list(cfg.ks), e=list(cfg.e), d=list(cfg.d))
    shared = net.get_active_subnet(preserve_weight=True).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        assert not torch.allclose(shared((x - mean) / std), ours, atol=1e-3)


def test_a_checkpoint_of_another_shape_is_refused_naming_the_file(published, tmp_path):
    from superserve.supernet.checkpoint import WeightsMismatch
    from superserve.supernet.ofa_adapter import import_checkpoint

    src, _ = published
    with pytest.raises(WeightsMismatch, match=r"ofa_mbv3_random\.pth: does not fit an OFA MobileNetV3 with .*"
                                              r"'num_classes': 1000"):
        import_checkpoint(src, tmp_path / "x.pt", resolution=RES, num_classes=1000)


def test_import_ofa_command(published, tmp_path, capsys):
    from superserve.scheduler.cli import main
    from superserve.supernet.ofa_adapter import OFASpace

    src, _ = published
    sp = OFASpace()
    out = tmp_path / "ofa.pt"
    args = ["import-ofa", "--checkpoint", str(src), "--out", str(out), "--resolution", str(RES),
            "--num-classes", str(CLASSES), "--subnets", f"{sp.smallest.name},{sp.largest.name}"]
    assert main(args) == 0 and out.exists() and out.with_suffix(".json").exists()
    assert "add-model --family ofa-mobilenetv3" in capsys.readouterr().out
    assert main(args[:-1] + ["k3-e3-d2"]) == 2
    assert "20 values of kernel size needed" in capsys.readouterr().err
    assert main(["add-model", "--family", "ofa-mobilenetv3", "--weights", str(out), "--repository",
                 str(tmp_path / "repo")]) == 0
    assert f"dims: [ 3, {RES}, {RES} ]" in (tmp_path / "repo" / "ofa" / "config.pbtxt").read_text()
