"""Writing benchmark results: ``results/<name>.json``, each opening with the command that made it, the commit it
ran at and the machine it ran on (docs/design.md, results format), so that every number can be traced and re-run.

Every bench builds its result as ``{**header(command), ...its fields}`` and saves it with ``write``; the file is
written whole or not at all (a temporary file renamed into place), so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from superserve.scheduler import paths
from superserve.scheduler.provenance import command_line, git_commit, hardware_name

HEADER = ("command", "commit", "hardware")


def header(command: str | None = None) -> dict[str, str]:
    """{command, commit, hardware}: ``command`` (default: this process's ``superserve ...`` command line), the
    repository's commit (``-dirty`` with uncommitted changes) and the machine's hardware name."""
    return {
        "command": command if command is not None else command_line(),
        "commit": git_commit(paths.repo_root()),
        "hardware": hardware_name(),
    }


def default_dir() -> Path:
    """The repository's ``results/`` folder."""
    return paths.repo_root() / "results"


def named(name: str, out_dir: str | Path | None = None) -> Path:
    """``<out_dir>/<name>.json`` (default ``results/``)."""
    return Path(out_dir if out_dir is not None else default_dir()) / f"{name}.json"


def write(result: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``result`` (which must start from ``header()``) as indented JSON to ``path``; returns the path."""
    missing = [k for k in HEADER if k not in result]
    if missing:
        raise ValueError(f"results for {path} lack {', '.join(missing)}: build them from results.header()")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)
    return path
