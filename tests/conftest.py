"""Shared test helpers: free loopback ports and the committed weights."""
from __future__ import annotations

import pytest

from superserve.scheduler import paths
from superserve.scheduler.ports import free_ports  # noqa: F401  (re-exported for tests)


@pytest.fixture(scope="session")
def weights_path():
    p = paths.default_weights()
    assert p.exists(), f"committed weights missing at {p}; run 'superserve train'"
    return p


@pytest.fixture(scope="session")
def supernet(weights_path):
    from superserve.supernet import load_checkpoint
    model, meta = load_checkpoint(weights_path)
    return model, meta
