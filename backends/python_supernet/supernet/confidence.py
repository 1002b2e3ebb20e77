"""How sure a subnet is of its answer, from its logits: the signal a cascade escalates on.

Two measures per row, both in [0, 1]: ``max_softmax`` (probability of the top class) and
``margin`` (top-1 minus top-2 probability). The backend reports both in INFO; the recorder
(supernet/validation.py) stores them on the validation split for the cascade planner.
Plain numpy so the backend, the scheduler and the planner compute exactly the same numbers.
"""
from __future__ import annotations

import numpy as np

MEASURES = ("max_softmax", "margin")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits (the max is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def confidence(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max_softmax, margin) per row of ``logits`` [N, classes]; needs at least two classes."""
    p = softmax(logits)
    if p.shape[-1] < 2:
        raise ValueError(f"confidence needs at least 2 classes, got logits of shape {list(p.shape)}")
    top2 = np.partition(p, -2, axis=-1)[..., -2:]
    return top2[..., 1], top2[..., 1] - top2[..., 0]
