"""ElasticViT (family ``elastic-vit``): a small vision transformer for 28x28 grey images whose
subnets differ in depth, attention heads and MLP width, all on one set of weights.

patches 7x7 (16 tokens; 4x4 patches were 3x the training time on 2 CPU cores) -> linear embedding
+ learned positions -> up to ``max_depth`` pre-norm transformer layers -> LayerNorm -> mean over
tokens -> linear head.

- **Elastic depth** (LayerSelect): the first ``depth`` layers run; every layer is residual and keeps
  the token shape, so skipping the rest is exact.
- **Elastic heads** (WeightSlice): a layer with ``h`` heads uses the first ``h * head_dim`` rows of its
  query, key and value projections and the same columns of the output projection.
- **Elastic MLP width** (WeightSlice): the first ``pct``% hidden units of the MLP.
- **Normalisation**: LayerNorm over the embedding, which is not elastic; it normalises each token by
  its own statistics and keeps no running ones, so every subnet is exact without per-subnet
  statistics (no SubnetNorm, no calibration: ``uses_subnet_norm = False``).

A subnet's name lists its depth and, per layer run, its heads and MLP width percent:
``d4-h4.4.2.2-m100.100.50.50``.
"""
from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .family import Supernet, TensorSpec
from .network import PIXEL_MEAN, PIXEL_STD
from .operators import LayerSelect, WeightSlice

_NAME = re.compile(r"^d(\d+)-h(\d+(?:\.\d+)*)-m(\d+(?:\.\d+)*)$")


@dataclass(frozen=True, order=True)
class ViTSubnet:
    """Layers run, and heads and MLP width percent of each layer run."""

    depth: int
    heads: tuple[int, ...]
    mlp: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"d{self.depth}-h{'.'.join(map(str, self.heads))}-m{'.'.join(map(str, self.mlp))}"

    @classmethod
    def parse(cls, name: str) -> "ViTSubnet":
        m = _NAME.match(name.strip()) if isinstance(name, str) else None
        if not m:
            raise ValueError(f"subnet name {name!r} is not of the form d<depth>-h<heads per layer>-m<mlp % per "
                             "layer>, e.g. d2-h4.2-m100.50")
        depth = int(m.group(1))
        heads = tuple(int(v) for v in m.group(2).split("."))
        mlp = tuple(int(v) for v in m.group(3).split("."))
        if not len(heads) == len(mlp) == depth:
            raise ValueError(f"subnet name {name!r}: depth {depth} needs {depth} heads and {depth} mlp widths, "
                             f"got {len(heads)} and {len(mlp)}")
        return cls(depth, heads, mlp)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ViTSpace:
    depth_choices: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    head_choices: tuple[int, ...] = (1, 2, 3, 4)
    mlp_choices: tuple[int, ...] = (25, 50, 75, 100)

    def parse(self, name: str) -> ViTSubnet:
        return self.validate(ViTSubnet.parse(name))

    def validate(self, cfg: ViTSubnet) -> ViTSubnet:
        if cfg.depth not in self.depth_choices:
            raise ValueError(f"subnet {cfg.name!r}: depth {cfg.depth} not in {self.depth_choices}")
        if len(cfg.heads) != cfg.depth or len(cfg.mlp) != cfg.depth:
            raise ValueError(f"subnet {cfg.name!r}: needs one heads and one mlp value per layer run ({cfg.depth})")
        for h in cfg.heads:
            if h not in self.head_choices:
                raise ValueError(f"subnet {cfg.name!r}: heads {h} not in {self.head_choices}")
        for m in cfg.mlp:
            if m not in self.mlp_choices:
                raise ValueError(f"subnet {cfg.name!r}: mlp width {m} not in {self.mlp_choices}")
        return cfg

    def uniform(self, depth: int, heads: int, mlp: int) -> ViTSubnet:
        return ViTSubnet(depth, (heads,) * depth, (mlp,) * depth)

    @property
    def largest(self) -> ViTSubnet:
        return self.uniform(max(self.depth_choices), max(self.head_choices), max(self.mlp_choices))

    @property
    def smallest(self) -> ViTSubnet:
        return self.uniform(min(self.depth_choices), min(self.head_choices), min(self.mlp_choices))

    def sample(self, rng: random.Random) -> ViTSubnet:
        d = rng.choice(self.depth_choices)
        return ViTSubnet(d, tuple(rng.choice(self.head_choices) for _ in range(d)),
                         tuple(rng.choice(self.mlp_choices) for _ in range(d)))

    def size(self) -> int:
        per_layer = len(self.head_choices) * len(self.mlp_choices)
        return sum(per_layer ** d for d in self.depth_choices)


class ElasticLayer(nn.Module):
    """Pre-norm transformer layer with elastic heads (q, k, v, output projection) and MLP width."""

    def __init__(self, dim: int, max_heads: int, mlp_hidden: int):
        super().__init__()
        self.head_dim = dim // max_heads
        self.norm1 = nn.LayerNorm(dim)
        self.q = WeightSlice(nn.Linear(dim, dim))
        self.k = WeightSlice(nn.Linear(dim, dim))
        self.v = WeightSlice(nn.Linear(dim, dim))
        self.proj = WeightSlice(nn.Linear(dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = WeightSlice(nn.Linear(dim, mlp_hidden))
        self.fc2 = WeightSlice(nn.Linear(mlp_hidden, dim))
        self.dim, self.mlp_hidden = dim, mlp_hidden

    def hidden(self, pct: int) -> int:
        return max(1, round(self.mlp_hidden * pct / 100))

    def forward(self, x: torch.Tensor, heads: int, mlp_pct: int) -> torch.Tensor:
        b, t, _ = x.shape
        inner = heads * self.head_dim
        h = self.norm1(x)
        q, k, v = (proj(h, inner).view(b, t, heads, self.head_dim).transpose(1, 2) for proj in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, inner)
        x = x + self.proj(a, self.dim)
        h = F.gelu(self.fc1(self.norm2(x), self.hidden(mlp_pct)))
        return x + self.fc2(h, self.dim)


class ElasticViT(Supernet):
    family = "elastic-vit"
    uses_subnet_norm = False
    channels_last = False

    def __init__(self, image: int = 28, patch: int = 7, dim: int = 64, max_depth: int = 6, max_heads: int = 4,
                 mlp_hidden: int = 128, num_classes: int = 10, space: ViTSpace | None = None):
        super().__init__()
        if image % patch or dim % max_heads:
            raise ValueError(f"image {image} must be a multiple of patch {patch}, dim {dim} of max_heads {max_heads}")
        self.space = space or ViTSpace(depth_choices=tuple(range(1, max_depth + 1)),
                                       head_choices=tuple(range(1, max_heads + 1)))
        if max(self.space.depth_choices) > max_depth or max(self.space.head_choices) > max_heads:
            raise ValueError("search space does not fit the network shape")
        self.image, self.patch, self.dim, self.num_classes = image, patch, dim, num_classes
        self.max_heads = max_heads
        self.tokens = (image // patch) ** 2
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, self.tokens, dim) * 0.02)
        self.layers = LayerSelect([ElasticLayer(dim, max_heads, mlp_hidden) for _ in range(max_depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    # -- the plug-in interface (family.py) ----------------------------------------------------
    def arch(self) -> dict:
        sp = self.space
        return {"image": self.image, "patch": self.patch, "dim": self.dim, "max_depth": len(self.layers.blocks),
                "max_heads": self.max_heads, "mlp_hidden": self.layers.blocks[0].mlp_hidden,
                "num_classes": self.num_classes, "depth_choices": list(sp.depth_choices),
                "head_choices": list(sp.head_choices), "mlp_choices": list(sp.mlp_choices)}

    @classmethod
    def from_arch(cls, a: dict) -> "ElasticViT":
        space = ViTSpace(tuple(a["depth_choices"]), tuple(a["head_choices"]), tuple(a["mlp_choices"]))
        return cls(a["image"], a["patch"], a["dim"], a["max_depth"], a["max_heads"], a["mlp_hidden"],
                   a["num_classes"], space)

    @property
    def input_spec(self) -> TensorSpec:
        return TensorSpec("INPUT", "FP32", (1, self.image, self.image), (0.0, 1.0),
                          f"(x - {PIXEL_MEAN}) / {PIXEL_STD} (Fashion-MNIST pixel mean and std)")

    @property
    def output_spec(self) -> TensorSpec:
        return TensorSpec("LOGITS", "FP32", (self.num_classes,))

    def candidates(self) -> list[ViTSubnet]:
        """Every depth at every uniform (heads, MLP width): 96 for the default space."""
        sp = self.space
        out = [sp.uniform(d, h, m) for d, h, m in
               itertools.product(sp.depth_choices, sp.head_choices, sp.mlp_choices)]
        return sorted(out, key=lambda c: (self.macs(c), c.name))

    def forward(self, x: torch.Tensor, cfg: ViTSubnet | None = None, batch_stats: bool = False) -> torch.Tensor:
        cfg = self.space.validate(cfg or self.space.largest)
        x = self.embed((x - PIXEL_MEAN) / PIXEL_STD).flatten(2).transpose(1, 2) + self.pos
        for layer, heads, mlp in zip(self.layers.select(cfg.depth), cfg.heads, cfg.mlp):
            x = layer(x, heads, mlp)
        return self.head(self.norm(x).mean(dim=1))

    def macs(self, cfg: ViTSubnet) -> int:
        t, e = self.tokens, self.dim
        total = t * self.patch * self.patch * e
        for layer, heads, mlp in zip(self.layers.blocks, cfg.heads, cfg.mlp):
            a, m = heads * layer.head_dim, layer.hidden(mlp)
            total += 3 * t * e * a + 2 * t * t * a + t * a * e + 2 * t * e * m
        return total + e * self.num_classes

    def params(self, cfg: ViTSubnet) -> int:
        e = self.dim
        total = self.embed.weight.numel() + e + self.pos.numel()
        for layer, heads, mlp in zip(self.layers.blocks, cfg.heads, cfg.mlp):
            a, m = heads * layer.head_dim, layer.hidden(mlp)
            total += 4 * e + 3 * (e * a + a) + (a * e + e) + (e * m + m) + (m * e + e)
        return total + 2 * e + e * self.num_classes + self.num_classes

    def extract(self, cfg: ViTSubnet) -> nn.Module:
        return extract_vit(self, self.space.validate(cfg))


# -- standalone subnets ----------------------------------------------------------------------------
class StaticLayer(nn.Module):
    """A plain transformer layer with its own (copied) weights; attention written out by hand, so it
    is an independent implementation of what the elastic layer computes."""

    def __init__(self, dim: int, heads: int, head_dim: int, hidden: int):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v = nn.Linear(dim, inner), nn.Linear(dim, inner), nn.Linear(dim, inner)
        self.proj = nn.Linear(inner, dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        b, t, _ = x.shape
        h = self.norm1(x)
        q, k, v = (m(h).view(b, t, self.heads, self.head_dim).transpose(1, 2) for m in (self.q, self.k, self.v))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, -1))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class StaticViT(nn.Module):
    def __init__(self, patch: int, dim: int, tokens: int, layers: list[StaticLayer], num_classes: int):
        super().__init__()
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, tokens, dim))
        self.layers = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.embed((x - PIXEL_MEAN) / PIXEL_STD).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.layers(x)).mean(dim=1))


def _copy_linear(dst: nn.Linear, src: WeightSlice, in_ch: int, out_ch: int) -> None:
    w, b = src.sliced(in_ch, out_ch)
    dst.weight.copy_(w)
    dst.bias.copy_(b)


@torch.no_grad()
def extract_vit(model: ElasticViT, cfg: ViTSubnet) -> StaticViT:
    layers = []
    for src, heads, mlp in zip(model.layers.blocks, cfg.heads, cfg.mlp):
        inner, hidden = heads * src.head_dim, src.hidden(mlp)
        dst = StaticLayer(model.dim, heads, src.head_dim, hidden)
        for name in ("norm1", "norm2"):
            getattr(dst, name).load_state_dict(getattr(src, name).state_dict())
        for name in ("q", "k", "v"):
            _copy_linear(getattr(dst, name), getattr(src, name), model.dim, inner)
        _copy_linear(dst.proj, src.proj, inner, model.dim)
        _copy_linear(dst.fc1, src.fc1, model.dim, hidden)
        _copy_linear(dst.fc2, src.fc2, hidden, model.dim)
        layers.append(dst)
    static = StaticViT(model.patch, model.dim, model.tokens, layers, model.num_classes)
    static.embed.load_state_dict(model.embed.state_dict())
    static.pos.copy_(model.pos)
    static.norm.load_state_dict(model.norm.state_dict())
    static.head.load_state_dict(model.head.state_dict())
    return static.eval()
