"""Triton's reserved request parameters, by Triton 2.51's rules (measured; see triton_params.py)."""
import pytest

from superserve.scheduler.sidecar.dataplane import check_outputs
from superserve.scheduler.core.errors import InvalidInput
from superserve.scheduler.core.triton_params import split_reserved

OK = [("priority", 0), ("priority", 7), ("timeout", 100), ("sequence_id", 3), ("sequence_id", "c-1"),
      ("sequence_start", True), ("sequence_end", False), ("binary_data_output", True), ("headers", "x")]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_reserved_names_are_checked_and_removed(protocol):
    raw = dict(OK) | {"slo_ms": 5, "colour": "blue"}
    assert split_reserved(raw, protocol) == {"slo_ms": 5, "colour": "blue"}  # admission names 'colour'


@pytest.mark.parametrize("name,value,protocol", [
    ("priority", -1, "http"), ("priority", "1", "grpc"), ("priority", True, "http"), ("priority", 1.5, "grpc"),
    ("timeout", -5, "http"), ("timeout", "x", "grpc"), ("sequence_id", 1.5, "http"), ("sequence_id", True, "grpc"),
    ("sequence_start", 1, "http"), ("sequence_end", "x", "grpc"), ("binary_data_output", 1, "http"),
    ("headers", {"a": "b"}, "http"), ("triton_enable_empty_final_response", True, "http"),
    ("triton_foo", True, "grpc"), ("triton_enable_empty_final_response", "x", "grpc")])
def test_what_triton_refuses_is_refused_naming_it(name, value, protocol):
    with pytest.raises(InvalidInput, match=name):
        split_reserved({name: value}, protocol)


def test_what_only_grpc_allows():
    assert split_reserved({"triton_enable_empty_final_response": True, "timeout": -5, "binary_data_output": "y",
                           "headers": {"a": 1}}, "grpc") == {}


def test_outputs_in_model_order_and_unknown_named():
    assert check_outputs(None) == ["LOGITS", "INFO"]
    assert check_outputs(["INFO", "LOGITS"]) == ["LOGITS", "INFO"]
    assert check_outputs(["INFO"]) == ["INFO"]
    with pytest.raises(InvalidInput, match="PROBS"):
        check_outputs(["PROBS"])
