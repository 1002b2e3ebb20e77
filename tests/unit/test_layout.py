"""The folder layout's one rule (docs/design.md, Layout): the core and the policies it plugs in stay pure.

``scheduler/core/`` and the policies import no event loop, no sockets and no subprocess, and nothing of the sidecar,
the offline tools or the command line, so the simulator and the unit tests drive the same rules as the live engine
without an event loop. Checked twice: on the source (each import statement, with its line) and in a fresh
interpreter (what importing them actually loads, transitive imports included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from superserve.scheduler import paths

SCHEDULER = paths.repo_root() / "scheduler"
# I/O and concurrency the pure modules must not reach for.
FORBIDDEN_LIBRARIES = ("asyncio", "socket", "subprocess", "grpc", "aiohttp", "tritonclient", "ray")
# Folders of the scheduler the pure modules must not import from.
FORBIDDEN_FOLDERS = ("sidecar", "offline", "commands")
# The composition of policies with their workers (TritonWorker, VariantWorker): sidecar code kept beside them.
NOT_PURE = {"factories.py"}


def pure_files() -> list[Path]:
    core = sorted((SCHEDULER / "core").glob("*.py"))
    policies = sorted(p for p in (SCHEDULER / "policies").glob("*.py") if p.name not in NOT_PURE)
    return core + policies


def bad_imports(path: Path) -> list[str]:
    """Each import of ``path`` that breaks the rule, as ``file:line: statement``."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names = [node.module or ""]
            elif node.level == 1:  # a sibling in the same folder
                continue
            else:  # from ..<folder>... or from .. import <module>
                names = (
                    [f"superserve.scheduler.{node.module}"]
                    if node.module
                    else [f"superserve.scheduler.{a.name}" for a in node.names]
                )
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            folder = name.split(".")[2] if name.startswith("superserve.scheduler.") else None
            if top in FORBIDDEN_LIBRARIES or folder in FORBIDDEN_FOLDERS:
                bad.append(f"{path.relative_to(SCHEDULER.parent)}:{node.lineno}: {ast.unparse(node)}")
    return bad


def test_the_pure_files_are_found():
    names = {p.name for p in pure_files()}
    assert {"lifecycle.py", "admission.py", "stats.py", "slackfit.py", "base.py"} <= names
    assert "engine.py" not in names and "factories.py" not in names


def test_core_and_policies_import_no_io_and_nothing_of_the_sidecar_or_offline_tools():
    bad = [line for p in pure_files() for line in bad_imports(p)]
    assert not bad, "pure modules importing I/O, the sidecar or the offline tools:\n" + "\n".join(bad)


def test_importing_the_core_loads_no_event_loop_and_no_sidecar():
    modules = [
        f"superserve.scheduler.core.{p.stem}" for p in sorted((SCHEDULER / "core").glob("*.py")) if p.stem != "__init__"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "import superserve.scheduler.policies\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = set(out.stdout.split())
    assert "superserve.scheduler.core.lifecycle" in loaded  # the list above was imported
    unwanted = {"asyncio", "grpc", "aiohttp", "tritonclient", "ray"} | {
        f"superserve.scheduler.{folder}" for folder in FORBIDDEN_FOLDERS
    }
    assert not loaded & unwanted, f"importing the core loaded {sorted(loaded & unwanted)}"
