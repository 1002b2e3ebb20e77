"""scheduler/sidecar/hidden_key.py without Triton: the library builds with the system's C compiler and, run in
front of a stand-in program named tritonserver, fills the key into argv from the environment and removes both
variables; with no compiler it reports None (the launcher then falls back to the command line)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from superserve.scheduler.sidecar import hidden_key


def test_no_compiler_means_no_library(monkeypatch):
    monkeypatch.setattr(hidden_key.shutil, "which", lambda name: None)
    assert hidden_key.build() is None


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_the_library_fills_the_key_only_in_a_program_named_tritonserver(tmp_path):
    lib = hidden_key.build()
    assert lib is not None and lib.exists()
    # A stand-in "tritonserver": the Python interpreter under that name (argv[0]), printing what it was given.
    fake = tmp_path / "tritonserver"
    fake.symlink_to(sys.executable)
    code = ("import os, sys; print(repr(sys.argv[1:])); print(os.environ.get('%s')); "
            "print(os.environ.get('LD_PRELOAD'))" % hidden_key.KEY_VAR)
    env = hidden_key.environment(dict(os.environ), "s3cret", lib)
    arg = f"--http-restricted-api=model-repository:superserve-control={hidden_key.PLACEHOLDER}"
    out = subprocess.run([str(fake), "-c", code, arg], env=env, capture_output=True, text=True, timeout=60)
    # CPython copies argv before main sees it, after the constructor ran: the key is filled in, the variables gone.
    lines = out.stdout.splitlines()
    assert "superserve-control=s3cret" in lines[0], out
    assert lines[1] == "None" and lines[2] in ("None", os.environ.get("LD_PRELOAD", "None")), out
    # Any other program (a wrapper such as taskset) is left untouched.
    other = tmp_path / "python-other"
    other.symlink_to(sys.executable)
    out = subprocess.run([str(other), "-c", code, arg], env=env, capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert hidden_key.PLACEHOLDER in lines[0] and lines[1] == "s3cret", out
