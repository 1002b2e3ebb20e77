"""Type-check the project with mypy (`make lint`), under the import names the code uses.

The code imports itself as ``superserve.scheduler``, ``superserve.client`` and ``superserve.supernet``, which the
editable install maps onto ``scheduler/``, ``client/`` and ``backends/python_supernet/supernet/`` with an import
hook that mypy does not run. So this script lays the same map as symbolic links under ``.venv/typecheck/``, runs
mypy there with pyproject.toml's ``[tool.mypy]`` (which modules, and which of them strictly), and prints mypy's
report with the repository's own paths.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"scheduler": "scheduler", "client": "client", "supernet": "backends/python_supernet/supernet"}


def link_tree(base: Path) -> None:
    """``base/superserve/<name>`` -> the folder of each package."""
    root = base / "superserve"
    root.mkdir(parents=True, exist_ok=True)
    for name, folder in PACKAGES.items():
        link, target = root / name, ROOT / folder
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)


def main() -> int:
    base = ROOT / ".venv" / "typecheck"
    link_tree(base)
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    cmd += ["--python-executable", sys.executable, "--cache-dir", str(ROOT / ".mypy_cache")]
    out = subprocess.run(cmd, cwd=base, capture_output=True, text=True, check=False)
    text = out.stdout
    for name, folder in PACKAGES.items():  # report the files where they are, not where the links are
        text = text.replace(f"superserve/{name}/", f"{folder}/")
    sys.stdout.write(text)
    sys.stderr.write(out.stderr)
    return out.returncode


if __name__ == "__main__":
    sys.exit(main())
