"""Supernet training: the largest subnet alone first, then the sandwich rule with in-place
distillation (as in Once-for-All / BigNAS, which SuperServe's supernets come from).

Each sandwich step trains the largest subnet on the labels, and the smallest plus ``n_random``
sampled subnets on the largest's soft predictions; gradients add up, then one optimiser step.
Training the largest alone first gives the shared weights a strong teacher early, which is
what keeps the top subnet's accuracy high on a CPU-sized budget.
"""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .family import Supernet
from .progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs_largest: int = 5
    """Epochs training only the largest subnet."""
    epochs_sandwich: int = 3
    """Epochs of sandwich rule + in-place distillation."""
    batch_size: int = 128
    lr: float = 0.1
    """Peak SGD learning rate (cosine decay over all epochs, short linear warm-up)."""
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    """On the largest subnet's loss against the labels (the others learn from its soft output)."""
    n_random: int = 1
    """Random subnets per sandwich step, besides the largest and the smallest."""
    optimizer: str = "sgd"
    """``sgd`` (Nesterov momentum 0.9; the CNN) or ``adamw`` (transformers train poorly with SGD)."""
    seed: int = 0
    limit: int | None = None
    """Train on the first ``limit`` images only (smoke tests)."""

    def __post_init__(self):
        if self.epochs_largest < 0 or self.epochs_sandwich < 0 or self.epochs_largest + self.epochs_sandwich == 0:
            raise ValueError(f"need a positive number of epochs, got {self.epochs_largest}+{self.epochs_sandwich}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (batch norm), got {self.batch_size}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be sgd or adamw, not {self.optimizer!r}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 2 pixels (pad-and-crop)."""
    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    h, w = x.shape[-2:]
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()
    return padded[:, :, dy:dy + h, dx:dx + w]


def _param_groups(model: Supernet, weight_decay: float):
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _optimizer(model: Supernet, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)


def train(model: Supernet, images: np.ndarray, labels: np.ndarray, cfg: TrainConfig,
          device: torch.device) -> list[dict]:
    """Train in place; returns one summary dict per epoch (losses, seconds)."""
    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    if cfg.limit:
        images, labels = images[:cfg.limit], labels[:cfg.limit]
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    steps_per_epoch = len(x_all) // cfg.batch_size
    epochs = cfg.epochs_largest + cfg.epochs_sandwich
    total_steps, warmup = steps_per_epoch * epochs, max(1, steps_per_epoch // 4)
    opt = _optimizer(model, cfg)
    space, history, step = model.space, [], 0
    # channels_last is ~10% faster for the CNN's convolutions on CPU; weights are saved contiguous.
    fmt = torch.channels_last if model.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt).train()
    for epoch in range(epochs):
        sandwich = epoch >= cfg.epochs_largest
        phase = "sandwich" if sandwich else "largest"
        bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{epochs} ({phase})")
        perm = torch.randperm(len(x_all), generator=gen)
        t0, loss_sum = time.monotonic(), 0.0
        for i in range(steps_per_epoch):
            lr = cfg.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total_steps))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            x = augment(x_all[idx], gen).to(device, memory_format=fmt)
            y = y_all[idx].to(device)
            opt.zero_grad(set_to_none=True)
            logits = model(x, space.largest)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            loss.backward()
            if sandwich:
                soft = F.softmax(logits.detach(), dim=1)
                for sub in [space.smallest] + [space.sample(rng) for _ in range(cfg.n_random)]:
                    kd = F.cross_entropy(model(x, sub), soft)
                    kd.backward()
            opt.step()
            loss_sum += loss.item()
            step += 1
            bar.update(1, f"loss {loss_sum / (i + 1):.3f} lr {lr:.4f}")
        history.append({"epoch": epoch + 1, "phase": phase, "loss_largest": loss_sum / steps_per_epoch,
                        "seconds": round(time.monotonic() - t0, 1)})
        log.info("epoch %d/%d (%s): loss %.4f in %.0f s", epoch + 1, epochs, phase,
                 history[-1]["loss_largest"], history[-1]["seconds"])
    model.to(memory_format=torch.contiguous_format)
    return history


def loss_on(model: Supernet, images: np.ndarray, labels: np.ndarray, cfg_subnet, device) -> float:
    """Mean cross-entropy of one subnet with batch statistics (used by the smoke test)."""
    with torch.no_grad():
        x, y = torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)
        return F.cross_entropy(model(x, cfg_subnet, batch_stats=True), y).item()
