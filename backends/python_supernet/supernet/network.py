"""ElasticCNN: a 3-stage residual CNN built from the SubNetAct operators.

stem -> stage 1 (28x28) -> stage 2 (14x14) -> stage 3 (7x7) -> global pool -> linear.
Per stage, LayerSelect picks the depth and WeightSlice the width; every batch-norm is a
SubnetNorm. Inputs are pixels in [0, 1]; the model normalises them itself.
"""
from __future__ import annotations

import torch
from torch import nn

from .family import Supernet, TensorSpec
from .operators import LayerSelect, SubnetNorm, WeightSlice
from .subnets import SearchSpace, SubnetConfig

# Fashion-MNIST training-set pixel statistics (of values in [0, 1]).
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530


class ConvBlock(nn.Module):
    """conv3x3 -> SubnetNorm -> ReLU, residual when shape is kept."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, residual: bool):
        super().__init__()
        self.conv = WeightSlice(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False))
        self.norm = SubnetNorm(out_ch)
        self.residual = residual

    def forward(self, x: torch.Tensor, width: int, subnet_id: int | None) -> torch.Tensor:
        y = torch.relu(self.norm(self.conv(x, width), subnet_id))
        return x + y if self.residual else y


class ElasticCNN(Supernet):
    """The first family, ``elastic-cnn`` (family.py's contract)."""

    family = "elastic-cnn"
    uses_subnet_norm = True
    channels_last = True

    def __init__(self, stage_channels: tuple[int, ...] = (32, 64, 128), max_depth: int = 3,
                 num_classes: int = 10, space: SearchSpace | None = None):
        super().__init__()
        self.space = space or SearchSpace(depth_choices=tuple(range(1, max_depth + 1)), num_stages=len(stage_channels))
        if max(self.space.depth_choices) > max_depth or self.space.num_stages != len(stage_channels):
            raise ValueError("search space does not fit the network shape")
        self.stage_channels = tuple(stage_channels)
        self.num_classes = num_classes
        self.stem = ConvBlock(1, stage_channels[0], stride=1, residual=False)
        stages, in_ch = [], stage_channels[0]
        for i, ch in enumerate(stage_channels):
            stride = 1 if i == 0 else 2
            blocks = [ConvBlock(in_ch, ch, stride, residual=(stride == 1 and in_ch == ch))]
            blocks += [ConvBlock(ch, ch, 1, residual=True) for _ in range(max_depth - 1)]
            stages.append(LayerSelect(blocks))
            in_ch = ch
        self.stages = nn.ModuleList(stages)
        self.head = WeightSlice(nn.Linear(stage_channels[-1], num_classes))

    # -- the plug-in interface (family.py) ----------------------------------------------------
    def arch(self) -> dict:
        return {"stage_channels": list(self.stage_channels), "max_depth": len(self.stages[0].blocks),
                "num_classes": self.num_classes, "depth_choices": list(self.space.depth_choices),
                "width_choices": list(self.space.width_choices)}

    @classmethod
    def from_arch(cls, a: dict) -> "ElasticCNN":
        space = SearchSpace(tuple(a["depth_choices"]), tuple(a["width_choices"]), len(a["stage_channels"]))
        return cls(tuple(a["stage_channels"]), a["max_depth"], a["num_classes"], space)

    @property
    def input_spec(self) -> TensorSpec:
        return TensorSpec("INPUT", "FP32", (1, 28, 28), (0.0, 1.0),
                          f"(x - {PIXEL_MEAN}) / {PIXEL_STD} (Fashion-MNIST pixel mean and std)")

    @property
    def output_spec(self) -> TensorSpec:
        return TensorSpec("LOGITS", "FP32", (self.num_classes,))

    def candidates(self) -> list[SubnetConfig]:
        """Every depth combination at every uniform width (108 for the default space)."""
        from .calibrate import candidate_subnets
        return candidate_subnets(self, n_mixed=0)

    def extract(self, cfg: SubnetConfig) -> nn.Module:
        from .export import extract
        return extract(self, cfg)

    def calibrate(self, subnets: list[SubnetConfig], images, batch_size: int = 256) -> None:
        from .calibrate import calibrate
        calibrate(self, subnets, images, batch_size=batch_size)

    # -- subnets ---------------------------------------------------------------------------
    def channels(self, cfg: SubnetConfig) -> list[int]:
        """Channels each stage runs with for this subnet (width percent of the stage maximum)."""
        return [max(1, round(c * w / 100)) for c, w in zip(self.stage_channels, cfg.widths)]

    def norms(self) -> list[SubnetNorm]:
        return [m for m in self.modules() if isinstance(m, SubnetNorm)]

    def _resize_norms(self, n: int) -> None:
        """Resize every SubnetNorm to hold one statistics row per calibrated subnet."""
        for norm in self.norms():
            norm.set_num_subnets(n)

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cfg: SubnetConfig | None = None, batch_stats: bool = False) -> torch.Tensor:
        """Logits of subnet ``cfg`` (default: the largest). ``batch_stats`` normalises with the
        batch's own statistics (training, calibration) instead of the subnet's stored ones."""
        cfg = self.space.validate(cfg or self.space.largest)
        sid = None if (batch_stats or self.training) else self.row(cfg)
        widths = self.channels(cfg)
        x = (x - PIXEL_MEAN) / PIXEL_STD
        x = self.stem(x, widths[0], sid)
        for stage, depth, width in zip(self.stages, cfg.depths, widths):
            x = stage(x, depth, width, sid)
        x = x.mean(dim=(2, 3))
        return self.head(x, self.num_classes)

    def macs(self, cfg: SubnetConfig, image: int = 28) -> int:
        """Multiply-accumulates of one forward pass at batch 1 (convs and the linear head)."""
        widths, total, in_ch, res = self.channels(cfg), 0, 1, image
        total += res * res * 9 * in_ch * widths[0]
        in_ch = widths[0]
        for i, (d, w) in enumerate(zip(cfg.depths, widths)):
            if i > 0:
                res = (res + 1) // 2
            total += res * res * 9 * in_ch * w + (d - 1) * res * res * 9 * w * w
            in_ch = w
        return total + in_ch * self.num_classes

    def params(self, cfg: SubnetConfig) -> int:
        """Weights the subnet actually uses (sliced convs, norms' affine, head)."""
        widths, total, in_ch = self.channels(cfg), 0, 1
        total += 9 * in_ch * widths[0] + 2 * widths[0]
        in_ch = widths[0]
        for d, w in zip(cfg.depths, widths):
            total += 9 * in_ch * w + 2 * w + (d - 1) * (9 * w * w + 2 * w)
            in_ch = w
        return total + in_ch * self.num_classes + self.num_classes
