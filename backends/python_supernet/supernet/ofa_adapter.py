"""Once-for-All adapter (family ``ofa-mobilenetv3``): serve an OFA MobileNetV3 supernet from the ``ofa``
package (MIT, pip install ofa; an optional extra of this project) through the plug-in interface.

- **Actuation.** OFA's dynamic modules read the active kernel size, expand ratio and depth from
  attributes (``set_active_subnet``); ``forward(x, subnet)`` sets them and runs the shared weights
  under a lock. Setting an attribute copies no weight: kernels smaller than the largest are OFA's
  centre crop (times its kernel-transform matrices), sliced on the fly like any WeightSlice.
- **SubnetNorm store.** OFA recalibrates batch-norm statistics for each subnet it extracts; SubNetAct
  keeps them per subnet instead. Every BatchNorm2d of the network has a ``[subnets, channels]`` store of
  means and variances here; a forward points the BN's running buffers at its subnet's row (a view:
  nothing is copied) and puts OFA's own buffers back after, so the state dict never changes.
- **Reference.** ``extract`` is OFA's own ``get_active_subnet`` (a static MobileNetV3 with copied
  weights), run with the subnet's stored statistics, behind the same preprocessing.
- **Input.** RGB ``[3, R, R]`` in [0, 1]; the model normalises with the ImageNet mean and std itself
  (OFA's published checkpoints expect normalised input).

Subnet names list the kernel size and expand ratio of each of the 20 elastic blocks and the depth of
each of the 5 stages: ``k3.3...-e4.4...-d2.3.4.2.3`` (blocks a stage's depth skips keep their values).
Nothing is downloaded: weights come from a file the user passes.
"""
from __future__ import annotations

import importlib
import itertools
import random
import re
import sys
import threading
import types
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .family import Supernet, TensorSpec

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
N_BLOCKS, N_STAGES = 20, 5
_NAME = re.compile(r"^k(\d+(?:\.\d+)*)-e(\d+(?:\.\d+)*)-d(\d+(?:\.\d+)*)$")


def _placeholder_torchvision() -> None:
    """``ofa.utils`` imports torchvision for its ImageNet data loader, which serving never uses. torch
    is pinned here and no torchvision wheel matching it is installed, so when torchvision cannot be
    imported an empty stand-in lets the network modules import (any use of it fails loudly)."""
    try:
        import torchvision  # noqa: F401
        return
    except Exception:  # noqa: BLE001 - missing, or built for another torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]

    class _Unavailable:
        def __init__(self, *a, **k):
            raise ImportError("torchvision is not installed; OFA's data loaders are not available here")

    tv, tr, fn = (types.ModuleType(n) for n in ("torchvision", "torchvision.transforms",
                                                "torchvision.transforms.functional"))
    tr.RandomResizedCrop = tr.RandomCrop = _Unavailable
    tr.functional, tv.transforms = fn, tr
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn})


def ofa_modules():
    """(OFAMobileNetV3, DynamicBatchNorm2d) from the ``ofa`` package; ImportError saying how to get it."""
    try:
        importlib.import_module("ofa")
    except ImportError:
        raise ImportError("family ofa-mobilenetv3 needs the 'ofa' package: pip install 'superserve-triton[ofa]' "
                          "(or pip install ofa)") from None
    _placeholder_torchvision()
    from ofa.imagenet_classification.elastic_nn.modules.dynamic_op import DynamicBatchNorm2d
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3
    return OFAMobileNetV3, DynamicBatchNorm2d


@dataclass(frozen=True, order=True)
class OFASubnet:
    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]

    @property
    def name(self) -> str:
        return "-".join(f"{p}{'.'.join(map(str, v))}" for p, v in (("k", self.ks), ("e", self.e), ("d", self.d)))

    @classmethod
    def parse(cls, name: str) -> "OFASubnet":
        m = _NAME.match(name.strip()) if isinstance(name, str) else None
        if not m:
            raise ValueError(f"subnet name {name!r} is not of the form k<kernel per block>-e<expand per block>-"
                             f"d<depth per stage>")
        return cls(*(tuple(int(v) for v in m.group(i).split(".")) for i in (1, 2, 3)))

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class OFASpace:
    ks_choices: tuple[int, ...] = (3, 5, 7)
    e_choices: tuple[int, ...] = (3, 4, 6)
    d_choices: tuple[int, ...] = (2, 3, 4)

    def parse(self, name: str) -> OFASubnet:
        return self.validate(OFASubnet.parse(name))

    def validate(self, cfg: OFASubnet) -> OFASubnet:
        for label, values, n, choices in (("kernel size", cfg.ks, N_BLOCKS, self.ks_choices),
                                          ("expand ratio", cfg.e, N_BLOCKS, self.e_choices),
                                          ("depth", cfg.d, N_STAGES, self.d_choices)):
            if len(values) != n:
                raise ValueError(f"subnet {cfg.name!r}: {n} values of {label} needed, got {len(values)}")
            for v in values:
                if v not in choices:
                    raise ValueError(f"subnet {cfg.name!r}: {label} {v} not in {choices}")
        return cfg

    def uniform(self, k: int, e: int, d: int) -> OFASubnet:
        return OFASubnet((k,) * N_BLOCKS, (e,) * N_BLOCKS, (d,) * N_STAGES)

    @property
    def largest(self) -> OFASubnet:
        return self.uniform(max(self.ks_choices), max(self.e_choices), max(self.d_choices))

    @property
    def smallest(self) -> OFASubnet:
        return self.uniform(min(self.ks_choices), min(self.e_choices), min(self.d_choices))

    def sample(self, rng: random.Random) -> OFASubnet:
        return OFASubnet(tuple(rng.choice(self.ks_choices) for _ in range(N_BLOCKS)),
                         tuple(rng.choice(self.e_choices) for _ in range(N_BLOCKS)),
                         tuple(rng.choice(self.d_choices) for _ in range(N_STAGES)))

    def size(self) -> int:
        return (len(self.ks_choices) * len(self.e_choices)) ** N_BLOCKS * len(self.d_choices) ** N_STAGES


class _Normalised(nn.Module):
    """A static network behind this family's preprocessing (ImageNet mean and std)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


class OFAMobileNetV3Supernet(Supernet):
    family = "ofa-mobilenetv3"
    uses_subnet_norm = True
    channels_last = False

    def __init__(self, resolution: int = 224, num_classes: int = 1000, width_mult: float = 1.0,
                 ks_choices=(3, 5, 7), e_choices=(3, 4, 6), d_choices=(2, 3, 4)):
        super().__init__()
        OFAMobileNetV3, self._dynamic_bn = ofa_modules()
        self.resolution, self.num_classes, self.width_mult = resolution, num_classes, width_mult
        self.space = OFASpace(tuple(sorted(ks_choices)), tuple(sorted(e_choices)), tuple(sorted(d_choices)))
        # dropout 0: serving is eval mode, and the static subnet OFA extracts is compared in eval mode too.
        self.net = OFAMobileNetV3(n_classes=num_classes, dropout_rate=0.0, width_mult=width_mult,
                                  ks_list=list(ks_choices), expand_ratio_list=list(e_choices),
                                  depth_list=list(d_choices))
        self._bns = [m for m in self.net.modules() if isinstance(m, nn.BatchNorm2d)]
        for i, bn in enumerate(self._bns):
            self.register_buffer(f"norm_mean_{i}", torch.zeros(0, bn.num_features))
            self.register_buffer(f"norm_var_{i}", torch.ones(0, bn.num_features))
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._lock = threading.RLock()

    # -- the plug-in interface (family.py) ----------------------------------------------------
    def arch(self) -> dict:
        sp = self.space
        return {"resolution": self.resolution, "num_classes": self.num_classes, "width_mult": self.width_mult,
                "ks_choices": list(sp.ks_choices), "e_choices": list(sp.e_choices), "d_choices": list(sp.d_choices)}

    @classmethod
    def from_arch(cls, a: dict) -> "OFAMobileNetV3Supernet":
        return cls(a["resolution"], a["num_classes"], a["width_mult"], tuple(a["ks_choices"]),
                   tuple(a["e_choices"]), tuple(a["d_choices"]))

    @property
    def input_spec(self) -> TensorSpec:
        return TensorSpec("INPUT", "FP32", (3, self.resolution, self.resolution), (0.0, 1.0),
                          f"(x - {list(IMAGENET_MEAN)}) / {list(IMAGENET_STD)} per channel (ImageNet)")

    @property
    def output_spec(self) -> TensorSpec:
        return TensorSpec("LOGITS", "FP32", (self.num_classes,))

    def candidates(self) -> list[OFASubnet]:
        sp = self.space
        return [sp.uniform(k, e, d) for d, e, k in itertools.product(sp.d_choices, sp.e_choices, sp.ks_choices)]

    def _resize_norms(self, n: int) -> None:
        for i, bn in enumerate(self._bns):
            dev = bn.weight.device
            setattr(self, f"norm_mean_{i}", torch.zeros(n, bn.num_features, device=dev))
            setattr(self, f"norm_var_{i}", torch.ones(n, bn.num_features, device=dev))

    def _store(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"norm_mean_{i}"), getattr(self, f"norm_var_{i}")

    @contextmanager
    def _statistics(self, row: int | None):
        """Point every BN's running buffers at subnet ``row``'s store (views), or at scratch tensors
        for batch statistics (``None``: OFA's training-mode BN would otherwise update its buffers);
        OFA's own buffers are put back afterwards."""
        saved = [dict(bn._buffers) for bn in self._bns]
        try:
            for i, bn in enumerate(self._bns):
                if row is None:
                    bn._buffers.update(running_mean=bn.running_mean.clone(), running_var=bn.running_var.clone(),
                                       num_batches_tracked=bn.num_batches_tracked.clone())
                else:
                    mean, var = self._store(i)
                    bn._buffers.update(running_mean=mean[row], running_var=var[row])
            yield
        finally:
            for bn, buffers in zip(self._bns, saved):
                bn._buffers.update(buffers)

    def _activate(self, cfg: OFASubnet) -> None:
        self.net.set_active_subnet(ks=list(cfg.ks), e=list(cfg.e), d=list(cfg.d))

    def forward(self, x: torch.Tensor, cfg: OFASubnet | None = None, batch_stats: bool = False) -> torch.Tensor:
        cfg = self.space.validate(cfg or self.space.largest)
        batch = batch_stats or self.training
        row = None if batch else self.row(cfg)
        with self._lock:
            self._activate(cfg)
            self.net.train(batch)
            with self._statistics(row):
                return self.net((x - self.pixel_mean) / self.pixel_std)

    @torch.no_grad()
    def calibrate(self, subnets: list[OFASubnet], images, batch_size: int = 256) -> None:
        """Exact per-subnet BN means and variances over ``images`` (deterministic; OFA itself
        re-estimates them with a running average before extracting a subnet)."""
        self.eval()
        self.set_calibrated([c.name for c in subnets])
        x_all = torch.as_tensor(images)
        # Each BN's input is seen by its DynamicBatchNorm2d wrapper (OFA calls F.batch_norm directly
        # for narrowed channels, bypassing the inner BatchNorm2d's hooks) or by the BatchNorm2d itself.
        owner = {}
        for m in self.net.modules():
            if isinstance(m, self._dynamic_bn):
                owner[m] = self._bns.index(m.bn)
        for i, bn in enumerate(self._bns):
            if not any(idx == i for idx in owner.values()):
                owner[bn] = i
        for row, cfg in enumerate(subnets):
            sums: dict[int, list] = {}

            def hook(mod, args, sums=sums):  # bound now: one dict per subnet
                x = args[0].double()
                s = sums.setdefault(owner[mod], [0.0, 0.0, 0])
                s[0] = s[0] + x.sum(dim=(0, 2, 3))
                s[1] = s[1] + (x * x).sum(dim=(0, 2, 3))
                s[2] += x.numel() // x.shape[1]

            handles = [m.register_forward_pre_hook(hook) for m in owner]
            try:
                for j in range(0, len(x_all), batch_size):
                    self(x_all[j:j + batch_size], cfg, batch_stats=True)
            finally:
                for h in handles:
                    h.remove()
            for i, (s1, s2, n) in sums.items():
                mean = s1 / n
                c = mean.shape[0]
                store_mean, store_var = self._store(i)
                store_mean[row, :c] = mean.float()
                store_var[row, :c] = (s2 / n - mean * mean).clamp_min(0).float()
        self.eval()

    @torch.no_grad()
    def extract(self, cfg: OFASubnet) -> nn.Module:
        """OFA's own static subnet (``get_active_subnet``), extracted while the BNs hold this subnet's
        stored statistics, so its copies carry them."""
        cfg = self.space.validate(cfg)
        with self._lock:
            self._activate(cfg)
            with self._statistics(self.row(cfg)):
                static = self.net.get_active_subnet(preserve_weight=True)
        return _Normalised(static).eval()

    def macs(self, cfg: OFASubnet) -> int:
        return _count_macs(self._static_shape(cfg), self.resolution)

    def params(self, cfg: OFASubnet) -> int:
        return sum(p.numel() for p in self._static_shape(cfg).parameters())

    def _static_shape(self, cfg: OFASubnet) -> nn.Module:
        with self._lock:
            self._activate(self.space.validate(cfg))
            return self.net.get_active_subnet(preserve_weight=False)


def _count_macs(net: nn.Module, resolution: int) -> int:
    total = [0]

    def conv(m, args, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, args, out):
        total[0] += out.numel() * m.in_features

    handles = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
               for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, resolution, resolution))
    finally:
        for h in handles:
            h.remove()
    return total[0]


def import_checkpoint(src, out, resolution: int = 224, num_classes: int = 1000, width_mult: float = 1.0,
                      ks_choices=(3, 5, 7), e_choices=(3, 4, 6), d_choices=(2, 3, 4), images=None,
                      subnets: list[str] | None = None, command: str = "") -> dict:
    """Turn a published OFA MobileNetV3 checkpoint (a file the user has; nothing is downloaded) into
    this project's weights (``out`` .pt + .json) for the family's candidate subnets (or the named ``subnets``).

    With ``images`` (float32 [N, 3, R, R] in [0, 1] from the user's data) every candidate gets its own
    SubnetNorm statistics; without, every candidate starts from the checkpoint's shared statistics (what
    OFA serves before its own per-subnet recalibration), recorded as such in the JSON. Accuracy is
    unknown here (no data set): the table lists MACs and parameters, accuracy null."""
    from .checkpoint import WeightsMismatch, save_checkpoint

    model = OFAMobileNetV3Supernet(resolution, num_classes, width_mult, ks_choices, e_choices, d_choices)
    try:
        blob = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise WeightsMismatch(f"{src}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    try:
        model.net.load_state_dict(state)  # OFA's own loader, which also renames its older key names
    except (AssertionError, KeyError, RuntimeError, ValueError) as e:
        raise WeightsMismatch(f"{src}: does not fit an OFA MobileNetV3 with {model.arch()}: "
                              f"{type(e).__name__}: {str(e)[:500]}") from None
    cands = [model.space.parse(n) for n in subnets] if subnets else model.candidates()
    macs = {c: model.macs(c) for c in cands}
    cands = sorted(cands, key=macs.get)
    if images is not None:
        model.calibrate(cands, images)
        how = f"per-subnet statistics over {len(images)} images given at import"
    else:
        model.set_calibrated([c.name for c in cands])
        with torch.no_grad():
            for i, bn in enumerate(model._bns):
                mean, var = model._store(i)
                mean.copy_(bn.running_mean.expand_as(mean))
                var.copy_(bn.running_var.expand_as(var))
        how = "the checkpoint's shared statistics for every subnet (not recalibrated: pass images to calibrate)"
    rows = [{"name": c.name, "val_accuracy": None, "macs": macs[c], "params": model.params(c)} for c in cands]
    meta = {"command": command, "source": str(src), "calibration": how, "subnets": rows,
            "pareto": [c.name for c in cands], "largest": model.space.largest.name,
            "smallest": model.space.smallest.name}
    return save_checkpoint(model.eval(), out, meta)
