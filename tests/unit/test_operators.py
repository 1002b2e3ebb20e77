"""SubNetAct operators: actuation equals an independent standalone network, skipping is exact,
and switching subnet moves no weights."""
import numpy as np
import pytest
import torch

from superserve.supernet.calibrate import calibrate
from superserve.supernet.export import extract
from superserve.supernet.network import ElasticCNN
from superserve.supernet.operators import LayerSelect, SubnetNorm, WeightSlice
from superserve.supernet.subnets import SubnetConfig

SUBNETS = [SubnetConfig((3, 3, 3), (100, 100, 100)), SubnetConfig((1, 1, 1), (25, 25, 25)),
           SubnetConfig((2, 3, 1), (50, 75, 100)), SubnetConfig((1, 2, 3), (100, 25, 75))]


@pytest.fixture(scope="module")
def calibrated():
    torch.manual_seed(0)
    model = ElasticCNN()
    for p in model.parameters():  # non-trivial affine parameters, so slicing them matters
        if p.ndim == 1:
            p.data.uniform_(0.5, 1.5)
    images = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    calibrate(model, SUBNETS, images, batch_size=32)
    return model.eval()


@pytest.mark.parametrize("cfg", SUBNETS, ids=lambda c: c.name)
def test_actuated_subnet_equals_standalone_network(calibrated, cfg):
    x = torch.rand(5, 1, 28, 28)
    standalone = extract(calibrated, cfg)
    own = {p.data_ptr() for p in standalone.parameters()}
    assert not own & {p.data_ptr() for p in calibrated.parameters()}, "standalone must not share storage"
    with torch.inference_mode():
        torch.testing.assert_close(calibrated(x, cfg), standalone(x), atol=1e-5, rtol=1e-5)


def test_subnets_have_their_own_norm_statistics(calibrated):
    a, b = calibrated.row(SUBNETS[0]), calibrated.row(SUBNETS[2])
    # The stem sees the same input in every subnet; the last stage sees different features.
    norm = calibrated.stages[2].blocks[0].norm
    assert not torch.allclose(norm.running_mean[a, :32], norm.running_mean[b, :32])


def test_uncalibrated_subnet_is_refused(calibrated):
    with pytest.raises(KeyError, match="no calibrated statistics"):
        calibrated(torch.rand(1, 1, 28, 28), SubnetConfig((2, 2, 2), (50, 50, 50)))


def test_layer_select_skips_blocks():
    torch.manual_seed(0)
    calls = []

    class Probe(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x, width, sid):
            calls.append(self.k)
            return x + self.k

    sel = LayerSelect([Probe(1), Probe(10), Probe(100)])
    assert sel(torch.zeros(1), 2, 8, None).item() == 11 and calls == [1, 10]
    with pytest.raises(ValueError):
        sel(torch.zeros(1), 4, 8, None)


def test_skipped_blocks_do_not_affect_the_output(calibrated):
    cfg = SUBNETS[1]  # depth 1 everywhere: blocks 1 and 2 of each stage are skipped
    x = torch.rand(3, 1, 28, 28)
    with torch.inference_mode():
        before = calibrated(x, cfg).clone()
    saved = {n: p.detach().clone() for n, p in calibrated.named_parameters()}
    try:
        with torch.no_grad():
            for stage in calibrated.stages:
                for block in stage.blocks[1:]:
                    block.conv.layer.weight.fill_(1e3)
        with torch.inference_mode():
            torch.testing.assert_close(calibrated(x, cfg), before, atol=0, rtol=0)
    finally:
        with torch.no_grad():
            for n, p in calibrated.named_parameters():
                p.copy_(saved[n])


def test_weight_slice_is_a_view_of_the_full_weight():
    ws = WeightSlice(torch.nn.Conv2d(8, 16, 3, padding=1))
    w, b = ws.sliced(4, 6)
    assert w.shape == (6, 4, 3, 3) and b.shape == (6,)
    assert w.data_ptr() == ws.layer.weight.data_ptr()
    assert ws(torch.rand(2, 4, 5, 5), 6).shape == (2, 6, 5, 5)


def test_switching_subnets_moves_no_weights(calibrated):
    def storage():
        return {n: (t.data_ptr(), t.shape) for n, t in calibrated.state_dict(keep_vars=True).items()}

    before = storage()
    snapshot = {n: t.detach().clone() for n, t in calibrated.state_dict().items()}
    x = torch.rand(2, 1, 28, 28)
    with torch.inference_mode():
        for cfg in SUBNETS * 2:
            calibrated(x, cfg)
    assert storage() == before
    for n, t in calibrated.state_dict().items():
        assert torch.equal(t, snapshot[n]), n


def test_subnet_norm_uses_batch_statistics_without_a_subnet():
    norm = SubnetNorm(4)
    x = torch.randn(8, 4, 3, 3) * 5 + 2
    y = norm(x, None)
    assert y.mean().abs() < 1e-5 and (y.var(unbiased=False) - 1).abs() < 1e-3
