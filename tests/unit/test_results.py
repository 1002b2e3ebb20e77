"""The one results writer (client/results.py): every results file opens with command, commit and hardware."""

from __future__ import annotations

import json

import pytest

from superserve.client import results


def test_a_result_is_written_whole_with_its_header_first(tmp_path):
    head = results.header("superserve bench --quick")
    assert list(head) == ["command", "commit", "hardware"]
    assert head["command"] == "superserve bench --quick" and len(head["commit"]) >= 7 and head["hardware"]
    path = results.write({**head, "slo_ms": 100}, results.named("x", tmp_path / "sub"))
    assert path == tmp_path / "sub" / "x.json" and path.read_text().endswith("}\n")
    assert list(json.loads(path.read_text())) == ["command", "commit", "hardware", "slo_ms"]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.json"]  # no temporary file left behind
    assert results.named("y") == results.default_dir() / "y.json"
    assert results.header()["command"].startswith("superserve ")


def test_a_result_without_the_header_is_refused(tmp_path):
    with pytest.raises(ValueError, match="commit, hardware"):
        results.write({"command": "c", "slo_ms": 100}, tmp_path / "x.json")
    assert not list(tmp_path.iterdir())
