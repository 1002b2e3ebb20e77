"""SubNetAct supernet: plain PyTorch, no Triton import.

This package is self-contained (relative imports only) so the Triton backend directory
`backends/python_supernet/` can be copied as-is into any Triton installation.
"""
from .subnets import SubnetConfig, SearchSpace
from .network import ElasticCNN
from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["SubnetConfig", "SearchSpace", "ElasticCNN", "load_checkpoint", "save_checkpoint"]
