"""The registry of supernet families: name -> class, imported only when asked for (the OFA adapter
needs the optional ``ofa`` package; nothing else should pay for it).

A model config names its family (``parameters { key: "family" ... }``) and so does the weights' JSON;
``checkpoint.load_checkpoint`` builds the network through this registry.
"""
from __future__ import annotations

import importlib

from .family import FamilyInfo, Supernet

DEFAULT_FAMILY = "elastic-cnn"
"""The family of weights whose JSON names none (written before families existed)."""

FAMILIES: dict[str, FamilyInfo] = {f.name: f for f in (
    FamilyInfo("elastic-cnn", "network", "ElasticCNN",
               "residual CNN for 28x28 grey images: elastic depth and width per stage, SubnetNorm"),
    FamilyInfo("elastic-vit", "vit", "ElasticViT",
               "vision transformer for 28x28 grey images: elastic depth, heads and MLP width per layer"),
    FamilyInfo("ofa-mobilenetv3", "ofa_adapter", "OFAMobileNetV3Supernet",
               "Once-for-All MobileNetV3 (the 'ofa' package): elastic depth, kernel size and expand ratio, "
               "SubnetNorm store of per-subnet BN statistics", requires=("ofa",)),
)}


class UnknownFamily(ValueError):
    pass


def family_class(name: str) -> type[Supernet]:
    """The class of family ``name``; ValueError listing the known ones, ImportError naming a missing package."""
    info = FAMILIES.get(name)
    if info is None:
        raise UnknownFamily(f"unknown supernet family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    module = importlib.import_module(f".{info.module}", __package__)
    return getattr(module, info.cls)


def build(name: str, arch: dict) -> Supernet:
    return family_class(name).from_arch(arch)
