"""Standalone networks for one subnet: plain Conv2d/BatchNorm2d/Linear with copied, sliced weights
and that subnet's statistics. Used to check actuation against an independent implementation, and
by baselines that serve each subnet as its own model (what SubNetAct saves them from)."""
from __future__ import annotations

import torch
from torch import nn

from .network import PIXEL_MEAN, PIXEL_STD, ConvBlock, ElasticCNN
from .subnets import SubnetConfig


class StaticBlock(nn.Module):
    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, residual: bool):
        super().__init__()
        self.conv, self.bn, self.residual = conv, bn, residual

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return x + y if self.residual else y


class StaticSubnet(nn.Module):
    def __init__(self, blocks: list[StaticBlock], head: nn.Linear):
        super().__init__()
        self.blocks, self.head = nn.Sequential(*blocks), head

    def forward(self, x):
        x = self.blocks((x - PIXEL_MEAN) / PIXEL_STD)
        return self.head(x.mean(dim=(2, 3)))


@torch.no_grad()
def _static_block(block: ConvBlock, in_ch: int, out_ch: int, row: int) -> StaticBlock:
    src = block.conv.layer
    conv = nn.Conv2d(in_ch, out_ch, 3, stride=src.stride, padding=src.padding, bias=False)
    w, _ = block.conv.sliced(in_ch, out_ch)
    conv.weight.copy_(w)
    bn = nn.BatchNorm2d(out_ch, eps=block.norm.eps)
    bn.weight.copy_(block.norm.weight[:out_ch])
    bn.bias.copy_(block.norm.bias[:out_ch])
    bn.running_mean.copy_(block.norm.running_mean[row, :out_ch])
    bn.running_var.copy_(block.norm.running_var[row, :out_ch])
    return StaticBlock(conv, bn, block.residual)


@torch.no_grad()
def extract(model: ElasticCNN, cfg: SubnetConfig) -> StaticSubnet:
    """A new, independent eval-mode network computing the same function as ``model(x, cfg)``."""
    row, widths = model.row(cfg), model.channels(cfg)
    blocks, in_ch = [_static_block(model.stem, 1, widths[0], row)], widths[0]
    for stage, depth, w in zip(model.stages, cfg.depths, widths):
        for block in stage.blocks[:depth]:
            blocks.append(_static_block(block, in_ch, w, row))
            in_ch = w
    head = nn.Linear(in_ch, model.num_classes)
    hw, hb = model.head.sliced(in_ch, model.num_classes)
    head.weight.copy_(hw)
    head.bias.copy_(hb)
    return StaticSubnet(blocks, head).eval()


def save_static(model: ElasticCNN, cfg: SubnetConfig, path, accuracy: float, supernet_sha256: str) -> None:
    """Write one subnet as its own model file: only its sliced weights and statistics."""
    static = extract(model, cfg)
    layout = [(b.conv.in_channels, b.conv.out_channels, b.conv.stride[0], b.residual) for b in static.blocks]
    torch.save({"subnet": cfg.name, "accuracy": accuracy, "supernet_sha256": supernet_sha256, "layout": layout,
                "num_classes": model.num_classes, "state_dict": static.state_dict()}, path)


def load_static(path, device="cpu") -> tuple[StaticSubnet, dict]:
    """Inverse of save_static; returns the eval-mode network and its metadata."""
    blob = torch.load(path, map_location=device, weights_only=True)
    blocks = [StaticBlock(nn.Conv2d(i, o, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(o), r)
              for i, o, s, r in blob["layout"]]
    static = StaticSubnet(blocks, nn.Linear(blob["layout"][-1][1], blob["num_classes"]))
    static.load_state_dict(blob.pop("state_dict"))
    return static.to(device).eval(), blob
