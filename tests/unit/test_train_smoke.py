"""A few real training steps on a small slice of Fashion-MNIST lower the loss."""
import pytest
import torch

from superserve.supernet.data import load_split
from superserve.supernet.network import ElasticCNN
from superserve.supernet.train import TrainConfig, loss_on, train

pytestmark = pytest.mark.slow  # real training steps (~30 s alone, minutes on a busy machine) and the whole data set

def test_a_few_sandwich_steps_lower_the_loss():
    torch.manual_seed(0)
    x, y = load_split("train")
    x, y = x[:512], y[:512]
    model = ElasticCNN()
    sp = model.space
    before = {c: loss_on(model, x, y, c, "cpu") for c in (sp.largest, sp.smallest)}
    cfg = TrainConfig(epochs_largest=1, epochs_sandwich=2, batch_size=64, lr=0.05)
    history = train(model, x, y, cfg, torch.device("cpu"))
    assert [h["phase"] for h in history] == ["largest", "sandwich", "sandwich"]
    model.eval()
    after = {c: loss_on(model, x, y, c, "cpu") for c in (sp.largest, sp.smallest)}
    for c in before:
        assert after[c] < before[c] - 0.2, (c.name, before[c], after[c])


def test_splits_are_disjoint_and_sized():
    xtr, ytr = load_split("train")
    xv, yv = load_split("val")
    xte, yte = load_split("test")
    assert (len(ytr), len(yv), len(yte)) == (55000, 5000, 10000)
    assert xtr.dtype == xv.dtype == xte.dtype
    assert xtr.shape[1:] == (1, 28, 28) and 0.0 <= xtr.min() and xtr.max() <= 1.0
    # No validation image is a training image (Fashion-MNIST itself holds a handful of duplicates).
    def keys(x):
        return {img.tobytes() for img in (x * 255).round().astype("uint8")}
    assert len(keys(xv) & keys(xtr)) < 10


def test_the_transformer_family_trains_with_its_recipe():
    """superserve train --family elastic-vit's recipe (AdamW), a few steps on 512 images."""
    import dataclasses

    from superserve.supernet.pipeline import TRAIN_DEFAULTS
    from superserve.supernet.vit import ElasticViT

    torch.manual_seed(0)
    x, y = load_split("train")
    x, y = x[:512], y[:512]
    model = ElasticViT()
    sp = model.space
    before = {c: loss_on(model, x, y, c, "cpu") for c in (sp.largest, sp.smallest)}
    cfg = dataclasses.replace(TRAIN_DEFAULTS["elastic-vit"], epochs_largest=1, epochs_sandwich=2, batch_size=64)
    assert cfg.optimizer == "adamw"
    history = train(model, x, y, cfg, torch.device("cpu"))
    assert [h["phase"] for h in history] == ["largest", "sandwich", "sandwich"]
    model.eval()
    after = {c: loss_on(model, x, y, c, "cpu") for c in (sp.largest, sp.smallest)}
    for c in before:
        assert after[c] < before[c] - 0.2, (c.name, before[c], after[c])
