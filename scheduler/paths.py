"""Where the repository's data lives (model repository, backend, weights, profiles)."""
from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The checkout this package runs from (editable install), or $SUPERSERVE_HOME."""
    env = os.environ.get("SUPERSERVE_HOME")
    return Path(env) if env else Path(__file__).resolve().parent.parent


def model_repository() -> Path:
    return repo_root() / "model_repository"


def backend_dir() -> Path:
    return repo_root() / "backends" / "python_supernet"


def default_weights() -> Path:
    return backend_dir() / "weights" / "supernet.pt"
