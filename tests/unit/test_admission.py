"""Request parameters and inputs per docs/design.md: accepted forms and errors that name the field."""
import numpy as np
import pytest

from superserve.scheduler.core.admission import check_input, parse_params
from superserve.scheduler.core.errors import InvalidInput


def test_defaults_and_numeric_forms():
    assert parse_params(None, 100).slo_ms == 100
    for v in (50, 50.0, "50", " 50.0 "):
        assert parse_params({"slo_ms": v}, 100).slo_ms == 50.0
    p = parse_params({"slo_ms": 20, "min_accuracy": "0.9", "subnet": "d1.1.1-w25.25.25", "priority": 1, "timeout": 5}, 100)
    assert (p.min_accuracy, p.subnet, p.min_confidence) == (0.9, "d1.1.1-w25.25.25", None)


@pytest.mark.parametrize("raw,field", [
    ({"slo_ms": 0}, "slo_ms"), ({"slo_ms": -1}, "slo_ms"), ({"slo_ms": "fast"}, "slo_ms"),
    ({"slo_ms": True}, "slo_ms"), ({"slo_ms": 1e13}, "slo_ms"), ({"slo_ms": 60_001}, "slo_ms"), ({"slo_ms": float("nan")}, "slo_ms"), ({"min_accuracy": 1.5}, "min_accuracy"),
    ({"min_accuracy": -0.1}, "min_accuracy"), ({"min_confidence": 2}, "min_confidence"), ({"subnet": ""}, "subnet"),
    ({"subnet": 3}, "subnet"), ({"sloms": 5}, "sloms"),
])
def test_bad_parameters_name_the_field(raw, field):
    with pytest.raises(InvalidInput, match=field):
        parse_params(raw, 100)


def test_slo_ms_bound_is_inclusive_and_configurable():
    assert parse_params({"slo_ms": 60_000}, 100).slo_ms == 60_000
    assert parse_params({"slo_ms": 5_000}, 100, max_slo_ms=5_000).slo_ms == 5_000
    with pytest.raises(InvalidInput, match="at most 5000"):
        parse_params({"slo_ms": 5_001}, 100, max_slo_ms=5_000)


def test_input_checks():
    x = np.zeros((2, 1, 28, 28), np.float32)
    assert check_input("INPUT", "FP32", [2, 1, 28, 28], x.ravel(), 64).shape == (2, 1, 28, 28)
    bad = [("IMAGE", "FP32", [1, 1, 28, 28], x[:1].ravel(), "IMAGE"),
           ("INPUT", "FP16", [1, 1, 28, 28], x[:1].ravel(), "FP32"),
           ("INPUT", "FP32", [1, 28, 28], x[:1].ravel(), "shape"),
           ("INPUT", "FP32", [65, 1, 28, 28], np.zeros(65 * 784, np.float32), "shape"),
           ("INPUT", "FP32", [2, 1, 28, 28], x[:1].ravel(), "values"),
           ("INPUT", "FP32", [1, 1, 28, 28], np.full(784, np.inf, np.float32), "NaN")]
    for name, dt, shape, arr, msg in bad:
        with pytest.raises(InvalidInput, match=msg):
            check_input(name, dt, shape, arr, 64)



def test_a_client_deadline_shortens_the_latency_target_only_when_it_ends_first():
    from superserve.scheduler.core.admission import within_deadline

    p = parse_params({"slo_ms": 100, "min_accuracy": 0.9}, 100.0)
    assert within_deadline(p, None, 5.0) is p
    assert within_deadline(p, 105.0, 5.0) is p and within_deadline(p, 500.0, 5.0) is p  # ends at or after the SLO
    short = within_deadline(p, 65.0, 5.0)
    assert short.slo_ms == 60.0 and short.min_accuracy == 0.9
    assert within_deadline(p, 4.0, 5.0).slo_ms == 1e-3  # already passed: no batch fits it
