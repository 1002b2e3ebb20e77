"""Confidence maths: max-softmax and top-1 minus top-2 margin, as the backend reports them."""
import json

import numpy as np
import pytest

from superserve.supernet.confidence import confidence, softmax


def test_uniform_logits_give_one_over_classes_and_zero_margin():
    c, m = confidence(np.zeros((2, 10)))
    assert c == pytest.approx([0.1, 0.1]) and m == pytest.approx([0.0, 0.0])


def test_known_two_class_values():
    # softmax([ln 3, 0]) = [0.75, 0.25]
    c, m = confidence(np.array([[np.log(3.0), 0.0]]))
    assert c[0] == pytest.approx(0.75) and m[0] == pytest.approx(0.5)


def test_margin_uses_the_second_largest_probability_not_the_last():
    p = np.array([[0.5, 0.3, 0.2]])
    c, m = confidence(np.log(p))
    assert c[0] == pytest.approx(0.5) and m[0] == pytest.approx(0.2)


def test_large_logits_are_stable_and_shift_invariant():
    z = np.array([[1000.0, 999.0, -1000.0]])
    c, m = confidence(z)
    c2, m2 = confidence(z - 1000.0)
    assert np.isfinite(c).all() and c == pytest.approx(c2) and m == pytest.approx(m2)
    assert softmax(z).sum() == pytest.approx(1.0)


def test_one_class_is_an_error():
    with pytest.raises(ValueError, match="at least 2 classes"):
        confidence(np.zeros((1, 1)))


def test_backend_info_carries_both_measures(weights_path):
    from superserve.supernet.serving import SupernetRunner

    runner = SupernetRunner(weights_path)
    cfg = runner.resolve(None)
    logits = np.array([[2.0, 1.0] + [0.0] * 8])
    row = json.loads(runner.info_rows(cfg, logits, 1.0, 1)[0, 0])
    c, m = confidence(logits)
    assert row["confidence"] == pytest.approx(c[0], abs=1e-6) and row["margin"] == pytest.approx(m[0], abs=1e-6)
    assert row["escalations"] == 0 and row["subnets"] == [cfg.name]
