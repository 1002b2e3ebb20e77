"""Where a profile, plan or result came from: the machine's short, stable hardware name (which keys profiles and
labels results), the git commit of the code that ran, and the command line that ran it."""
from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def hardware_name(device: str = "cpu") -> str:
    """e.g. ``cpu-intel-xeon-platinum-8375c-2c`` or ``gpu-nvidia-a100-sxm4-40gb``: a file-name-safe slug."""
    if device.startswith("cuda"):
        raw = "gpu " + (gpu_name() or "unknown")
    else:
        raw = f"cpu {cpu_model()} {len(os.sched_getaffinity(0))}c"
    raw = re.sub(r"\(r\)|\(tm\)|cpu @.*?(?= \d+c$)|@ [\d.]+ghz", "", raw.lower())
    return re.sub(r"[^a-z0-9]+", "-", raw).strip("-")


def git_commit(root: str | Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command_line() -> str:
    """The command that is running, as results files record it."""
    import shlex
    import sys

    return "superserve " + " ".join(shlex.quote(a) for a in sys.argv[1:])
