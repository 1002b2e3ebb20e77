"""Shared test helpers: free loopback ports, the committed weights and profile, small synthetic profiles and a
validation record with known answers, and the markers every test gets from where it lives.

Test modules take what they share from here (``from tests.conftest import ...`` or the fixtures) or from
``tests/fakes.py`` (stand-in workers), never from each other, so that a test module can be changed or removed on
its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from superserve.scheduler import paths
from superserve.scheduler.core.edf_queue import Pending
from superserve.scheduler.ports import free_ports  # noqa: F401  (re-exported for tests)
from superserve.scheduler.core.profile import Profile

INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ is ``integration``; ``gpu`` tests are skipped without CUDA."""
    cuda = None
    for item in items:
        if Path(item.path).resolve().is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("gpu") is not None:
            if cuda is None:
                import torch

                cuda = torch.cuda.is_available()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)"))


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


def committed_profile() -> Profile:
    """The profile committed under profiles/ (the one `superserve serve` falls back to)."""
    files = sorted((paths.repo_root() / "profiles").glob("*.json"))
    assert files, "no committed profile in profiles/"
    return Profile.load(files[0])


SIZES = (1, 2, 4, 8, 16, 32)

TOY_PROFILE = Profile.from_dict(
    {
        "hardware": "test",
        "supernet": "abc",
        "batch_sizes": list(SIZES),
        "subnets": [
            {
                "name": name,
                "accuracy": acc,
                "latency_ms": {str(b): {"mean": m0 + m1 * b, "p99": p0 + p1 * b} for b in SIZES},
            }
            for name, acc, m0, m1, p0, p1 in (
                ("small", 0.85, 1, 0.1, 2, 0.2),
                ("mid", 0.89, 3, 0.5, 4, 0.6),
                ("big", 0.93, 10, 2.0, 12, 2.5),
            )
        ],
    }
)
"""Three subnets, small (1 + 0.1 b ms) < mid (3 + 0.5 b) < big (10 + 2 b), p99 a little above the mean."""


def pending_queue(n: int, now: float = 0.0, slo: float = 100.0, **kw: Any) -> tuple[Pending, ...]:
    """``n`` requests arrived at ``now`` with deadlines ``slo`` ms later, 0.01 ms apart (a policy's queue, EDF)."""
    return tuple(Pending(i, now, now + slo + i * 0.01, **kw) for i in range(n))


CASCADE_PROFILE = Profile.from_dict(
    {
        "hardware": "test",
        "supernet": "abc",
        "batch_sizes": list(SIZES),
        "subnets": [
            {
                "name": name,
                "accuracy": acc,
                "latency_ms": {str(b): {"mean": t0 + t1 * b, "p99": t0 + t1 * b} for b in SIZES},
            }
            for name, acc, t0, t1 in (("small", 0.80, 1, 0.1), ("mid", 0.88, 3, 0.5), ("big", 0.93, 10, 2.0))
        ],
    }
)
"""The subnets of ``cascade_record``, accuracies as recorded there, one latency per batch size (mean = p99)."""


def cascade_record(n: int = 1000):
    """A validation record with a known best cascade: small is right on 80% of images and sure (0.95) exactly
    then (0.4 on the images it gets wrong); mid is right on 90% and always 0.7 sure; big is right on all."""
    from superserve.supernet.validation import ValidationRecord

    labels = np.zeros(n, dtype=np.int64)
    i = np.arange(n)
    preds = np.stack([np.where(i % 5 == 0, 1, 0), np.where(i % 10 == 0, 1, 0), np.zeros(n)]).astype(np.int16)
    conf = np.stack([np.where(i % 5 == 0, 0.4, 0.95), np.full(n, 0.7), np.full(n, 0.99)]).astype(np.float32)
    return ValidationRecord("abc", ("small", "mid", "big"), labels, preds, conf, conf / 2)
