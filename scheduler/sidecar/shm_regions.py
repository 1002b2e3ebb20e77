"""Shared-memory regions of the Python backend: named so their owner is known, removed when it is dead.

Triton's Python backend (and every Python-based backend, ``python_supernet`` included) creates one
``/dev/shm`` file per model instance and unlinks it when the model unloads. A Triton killed hard
never unloads, so its regions stay until reboot (1 MiB each here, more under load). The launcher
names the regions of every Triton it starts with a prefix of its own
(``--backend-config=python,shm-region-prefix-name=<prefix>``):

    superserve_shm_<pid namespace inode>_<16 hex digits>_<uuid appended by the backend>

The prefix is on the owning server's command line, and on its backend stubs' command lines (they
are started with the region's name). A region is stale when no process of this pid namespace has
the prefix on its command line: the server and its stubs are all gone. ``remove_stale`` unlinks
exactly those, and never a file that does not match the pattern (other Tritons on the machine use
the backend's default ``triton_python_..._shm_region_`` prefix and are left alone), nor one whose
namespace is not ours (its owner's processes are invisible from here)."""
from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path

log = logging.getLogger(__name__)
SHM_DIR = Path("/dev/shm")
_PATTERN = re.compile(r"(superserve_shm_(\d+)_[0-9a-f]{16}_)")


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def new_prefix() -> str:
    """A fresh region prefix for one Triton start (unique per start, tagged with our pid namespace)."""
    return f"superserve_shm_{_pid_namespace()}_{secrets.token_hex(8)}_"


def owner_alive(prefix: str, proc: Path = Path("/proc")) -> bool:
    """Whether any process visible here has ``prefix`` on its command line. A process that vanishes
    or cannot be read while we look is skipped; if /proc cannot be listed at all, assume alive."""
    needle = prefix.encode()
    try:
        entries = [e for e in os.listdir(proc) if e.isdigit()]
    except OSError:
        return True
    for pid in entries:
        try:
            if needle in (proc / pid / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def regions(prefix: str, shm_dir: Path = SHM_DIR) -> list[Path]:
    """The region files of one prefix (one Triton start)."""
    try:
        return sorted(p for p in shm_dir.iterdir() if p.name.startswith(prefix))
    except OSError:
        return []


def remove(prefix: str, shm_dir: Path = SHM_DIR) -> list[str]:
    """Unlink the regions of ``prefix`` (its owner is known to be dead: the launcher just stopped it)."""
    removed = []
    for p in regions(prefix, shm_dir):
        try:
            p.unlink()
            removed.append(p.name)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove shared-memory region %s: %s", p, e)
    return removed


def remove_stale(shm_dir: Path = SHM_DIR, proc: Path = Path("/proc")) -> list[str]:
    """Unlink the regions named by this launcher whose owner has no live process left; returns their names."""
    ns = _pid_namespace()
    prefixes = {}
    try:
        names = [p.name for p in shm_dir.iterdir()]
    except OSError:
        return []
    for name in names:
        m = _PATTERN.match(name)
        if m and m.group(2) == ns:
            prefixes.setdefault(m.group(1), []).append(name)
    removed = []
    for prefix in prefixes:
        if not owner_alive(prefix, proc):
            removed += remove(prefix, shm_dir)
    if removed:
        log.info("removed %d stale shared-memory region(s) of dead Triton servers: %s", len(removed),
                 ", ".join(removed))
    return removed
