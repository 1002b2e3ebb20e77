"""The one SLO-class grammar (client/slo_classes.py), as the load generator and Locust's users read it."""

from __future__ import annotations

import pytest

from superserve.client import loadgen, slo_classes
from superserve.client.slo_classes import SloClass


def test_classes_with_weights_floors_and_the_servers_default():
    assert slo_classes.parse("100") == (SloClass(100.0, 1.0),)
    assert slo_classes.parse(" 50:0.5 , 200:0.5:0.9,none:1") == (
        SloClass(50.0, 0.5),
        SloClass(200.0, 0.5, 0.9),
        SloClass(None, 1.0),
    )
    c = slo_classes.parse("200:1:0.9")[0]
    assert c.name("supernet") == "supernet slo=200ms acc>=0.9"
    assert c.parameters(send_slo=True) == {"slo_ms": 200.0, "min_accuracy": 0.9}
    assert c.parameters(send_slo=False) == {"min_accuracy": 0.9}
    assert SloClass(None, 1.0).name("m") == "m slo=default" and SloClass(None, 1.0).parameters(True) == {}


@pytest.mark.parametrize(
    "spec, field",
    [
        ("", "no classes"),
        ("abc", "slo_ms 'abc' is not a number"),
        ("50:x", "weight 'x' is not a number"),
        ("50:0", "weight must be > 0"),
        ("0", "slo_ms must be > 0"),
        ("-5:1", "slo_ms must be > 0"),
        ("50:1:1.5", "min_accuracy must be in"),
        ("50:1:0.9:3", "4 fields"),
        ("50:1:high", "min_accuracy 'high'"),
    ],
)
def test_every_mistake_names_the_class_and_the_field(spec, field):
    with pytest.raises(ValueError, match=field):
        slo_classes.parse(spec)


def test_the_load_generator_reads_the_same_grammar():
    assert loadgen.slo_classes("50:3,200:1") == [(50.0, 0.75), (200.0, 0.25)]
    assert loadgen.slo_classes("100") == [(100.0, 1.0)]
    with pytest.raises(ValueError, match="needs a number"):
        loadgen.slo_classes("none:1")  # an open-loop trace needs a latency target for every request
    with pytest.raises(ValueError, match="--min-accuracy"):
        loadgen.slo_classes("200:1:0.9")  # bench draws floors on their own
    with pytest.raises(ValueError, match="weight must be > 0"):
        loadgen.slo_classes("50:0")


def test_accuracy_floor_classes_put_the_floor_first():
    assert loadgen.slo_classes("0:0.6,0.92:0.4", allow_zero=True) == slo_classes.floor_classes("0:0.6,0.92:0.4")
    assert slo_classes.floor_classes("0:0.6,0.92:0.4") == [(0.0, 0.6), (0.92, 0.4)]
    with pytest.raises(ValueError, match="min_accuracy must be in"):
        slo_classes.floor_classes("1.2")
    with pytest.raises(ValueError, match="3 fields"):
        slo_classes.floor_classes("0.9:1:2")
