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


def save_static(model, cfg, path, accuracy: float, supernet_sha256: str) -> None:
    """Write one subnet of any family as its own model file: only its sliced weights and statistics,
    with the family and architecture needed to rebuild its standalone network (``load_static``)."""
    static = model.extract(cfg)
    torch.save({"format": 2, "family": model.family, "arch": model.arch(), "subnet": cfg.name,
                "accuracy": accuracy, "supernet_sha256": supernet_sha256, "input": model.input_spec.to_json(),
                "output": model.output_spec.to_json(), "state_dict": static.state_dict()}, path)


def load_static(path, device="cpu") -> tuple[nn.Module, dict]:
    """Inverse of save_static; returns the eval-mode network and its metadata. Also reads the
    elastic-cnn's first export format (a block layout instead of family and architecture)."""
    blob = torch.load(path, map_location=device, weights_only=True)
    state = blob.pop("state_dict")
    if "layout" in blob:  # format 1: elastic-cnn only
        blocks = [StaticBlock(nn.Conv2d(i, o, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(o), r)
                  for i, o, s, r in blob["layout"]]
        static = StaticSubnet(blocks, nn.Linear(blob["layout"][-1][1], blob["num_classes"]))
        blob.setdefault("family", ElasticCNN.family)
    else:
        from .families import build
        supernet = build(blob["family"], blob["arch"])
        cfg = supernet.space.parse(blob["subnet"])
        supernet.set_calibrated([cfg.name])  # a statistics row to extract from; the file's replace it
        static = supernet.extract(cfg)
    static.load_state_dict(state)
    return static.to(device).eval(), blob
