"""Which profile serve and bench plan with (local_profile.py), on a throw-away repository and cache
folder: the committed one only if it matches hardware and weights, else this machine's cached quick
profile; measuring is refused here (``measure=False``), so no Triton starts."""
from __future__ import annotations

import json
import logging

import pytest

from superserve.scheduler.sidecar import local_profile
from superserve.scheduler.core.profile import ProfileError


@pytest.fixture
def home(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "profiles").mkdir(parents=True)
    weights = root / "backends" / "python_supernet" / "weights"
    weights.mkdir(parents=True)
    (weights / "supernet.json").write_text(json.dumps({"sha256": "a" * 64}))
    monkeypatch.setenv("SUPERSERVE_HOME", str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(local_profile, "hardware_name", lambda: "cpu-test-2c")
    return root


def write(path, supernet):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"hardware": "x", "supernet": supernet, "batch_sizes": [1], "subnets": []}))
    return path


def test_explicit_profile_wins(home, tmp_path):
    assert local_profile.find_profile(str(tmp_path / "mine.json")) == tmp_path / "mine.json"


def test_committed_profile_of_this_hardware_and_weights_is_used(home):
    own = write(home / "profiles" / "cpu-test-2c.json", "a" * 64)
    assert local_profile.find_profile(None, measure=False) == own


def test_other_hardware_or_weights_use_this_machines_cached_quick_profile(home, caplog):
    write(home / "profiles" / "cpu-other-8c.json", "a" * 64)
    write(home / "profiles" / "cpu-test-2c.json", "b" * 64)  # this hardware, but other weights
    cached = write(local_profile.cached_path("cpu-test-2c", "a" * 64), "a" * 64)
    assert cached.parent == home.parent / "cache" / "superserve" / "profiles"
    with caplog.at_level(logging.WARNING):
        assert local_profile.find_profile(None) == cached  # found: nothing measured
    assert "other weights" in caplog.text and "quick profile" in caplog.text


def test_without_a_match_or_measuring_it_falls_back_with_a_warning(home, caplog):
    other = write(home / "profiles" / "cpu-other-8c.json", "a" * 64)
    with caplog.at_level(logging.WARNING):
        assert local_profile.find_profile(None, measure=False) == other
    assert "no committed profile for this hardware (cpu-test-2c)" in caplog.text
    other.unlink()
    with pytest.raises(ProfileError, match="superserve profile"):
        local_profile.find_profile(None, measure=False)
