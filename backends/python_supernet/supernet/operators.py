"""The three SubNetAct control-flow operators.

Each is a small module whose forward takes the control value as an argument, so actuating a
subnet is choosing arguments: no weights are copied, moved or re-allocated.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WeightSlice(nn.Module):
    """Elastic width: a conv or linear layer that uses its first ``k`` output channels and as many
    input channels as the incoming tensor has (a conv's dim 1, a linear's last dim). The slice is a
    view of the full weight."""

    def __init__(self, layer: nn.Conv2d | nn.Linear):
        super().__init__()
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise TypeError(f"WeightSlice wraps Conv2d or Linear, not {type(layer).__name__}")
        self.layer = layer

    @property
    def max_out(self) -> int:
        return self.layer.weight.shape[0]

    def sliced(self, in_ch: int, out_ch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = self.layer.weight[:out_ch, :in_ch]
        b = None if self.layer.bias is None else self.layer.bias[:out_ch]
        return w, b

    def forward(self, x: torch.Tensor, out_ch: int | None = None) -> torch.Tensor:
        out_ch = self.max_out if out_ch is None else out_ch
        if isinstance(self.layer, nn.Linear):
            w, b = self.sliced(x.shape[-1], out_ch)
            return F.linear(x, w, b)
        w, b = self.sliced(x.shape[1], out_ch)
        c = self.layer
        return F.conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups)


class SubnetNorm(nn.Module):
    """Per-subnet batch normalisation.

    The affine weights are shared and sliced like any other weight. The running statistics are
    not: a slice of shared statistics is wrong for every subnet but the one that produced them,
    so after training each served subnet gets its own mean/var row, computed once by calibration
    and selected by subnet id at inference. In training mode it normalises with batch statistics.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        # One row per calibrated subnet; resized by set_num_subnets() before calibration/loading.
        self.register_buffer("running_mean", torch.zeros(0, channels))
        self.register_buffer("running_var", torch.ones(0, channels))

    @property
    def channels(self) -> int:
        return self.weight.shape[0]

    def set_num_subnets(self, n: int) -> None:
        self.running_mean = torch.zeros(n, self.channels, device=self.weight.device)
        self.running_var = torch.ones(n, self.channels, device=self.weight.device)

    def forward(self, x: torch.Tensor, subnet_id: int | None) -> torch.Tensor:
        c = x.shape[1]
        w, b = self.weight[:c], self.bias[:c]
        if subnet_id is None:  # training or calibration: batch statistics
            return F.batch_norm(x, None, None, w, b, training=True, eps=self.eps)
        mean, var = self.running_mean[subnet_id, :c], self.running_var[subnet_id, :c]
        return F.batch_norm(x, mean, var, w, b, training=False, eps=self.eps)


class LayerSelect(nn.Module):
    """Elastic depth: runs the first ``depth`` blocks of a stage and skips the rest.

    Block 0 changes resolution/channels and always runs; later blocks are residual and keep the
    shape, so skipping one is exact."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def select(self, depth: int) -> list[nn.Module]:
        """The first ``depth`` blocks (for families whose blocks take per-block controls)."""
        if not 1 <= depth <= len(self.blocks):
            raise ValueError(f"depth {depth} outside 1..{len(self.blocks)}")
        return list(self.blocks[:depth])

    def forward(self, x: torch.Tensor, depth: int, width: int, subnet_id: int | None) -> torch.Tensor:
        for block in self.select(depth):
            x = block(x, width, subnet_id)
        return x
