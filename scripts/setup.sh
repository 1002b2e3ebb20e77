#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: the Fashion-MNIST files, .venv, the pinned packages.
# Re-running it does nothing when nothing changed (a stamp holds the hash of what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DATA_DIR=${SUPERSERVE_DATA_DIR:-/usr/share/datasets/fashion-mnist}

say() { echo "[setup] $*" >&2; }

if [ ! -f "$DATA_DIR/t10k-labels-idx1-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing Debian's dataset-fashion-mnist"
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  else
    say "Fashion-MNIST is missing from $DATA_DIR. Install it with (as root):"
    say "    apt-get install dataset-fashion-mnist"
    say "or put the four original IDX .gz files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,"
    say "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in a folder and export SUPERSERVE_DATA_DIR=<folder>."
    exit 1
  fi
fi

ver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$ver" in
  3.10|3.11|3.12|3.13) ;;
  *) say "Python $ver found; the Triton Python backend stubs in nvidia-pytriton need 3.10-3.13 (set PYTHON=...)"; exit 1 ;;
esac

[ -x .venv/bin/python ] || { say "creating .venv with $PYTHON ($ver)"; "$PYTHON" -m venv .venv; }
stamp=.venv/.superserve-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing packages into .venv (torch==2.13.0 CPU, numpy<2, nvidia-pytriton, tritonclient, the dev extra ...)"
  log=.venv/pip-install.log
  # The dev extra (pyproject.toml): Locust, matplotlib, pytest, hypothesis, ruff, mypy on top of what the server needs;
  # the ofa extra: the Once-for-All adapter's code, so its tests run.
  { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -c constraints.txt -e ".[dev,ofa]"; } \
    > "$log" 2>&1 || { tail -30 "$log" >&2; say "pip install failed (full log: $log)"; exit 1; }
  # Locust is only looked up, not imported: importing it monkey-patches the standard library (and warns so).
  .venv/bin/python -c "import importlib.util, torch, numpy, tritonclient.grpc, pytriton, pytest
assert numpy.__version__ < '2' and importlib.util.find_spec('locust')" \
    || { say "package check failed"; exit 1; }
  echo "$want" > "$stamp"
fi
say "ready: $(.venv/bin/python -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)')"
