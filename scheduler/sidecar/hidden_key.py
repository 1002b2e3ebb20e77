"""Keep Triton's control key off its command line (issue 12).

Triton 2.51 takes the secret of its restricted APIs only as a flag (``--http-restricted-api=<apis>:<header>=<key>``,
``--grpc-restricted-protocol=...``): no config file, no environment variable, and the comparison is exact, so the
key itself must reach ``TritonParser`` through ``argv``. But ``/proc/<pid>/cmdline`` is readable by every local
user, so anyone on the host could read the key and load code into the Python backend (explicit model control) or
use the shared-memory, trace and logging APIs.

What this does instead: the launcher writes ``PLACEHOLDER`` where the key goes and passes the key in the
environment (``/proc/<pid>/environ`` is readable only by the process's owner), with ``LD_PRELOAD`` naming a tiny
shared library built here from ``SOURCE`` by the system's C compiler (once, cached). Its constructor runs in
``tritonserver`` before ``main``: it points each argv entry holding the placeholder at a heap copy with the key
filled in (the argument strings ``/proc`` shows are left as they are), overwrites the key in the environment block
with ``*``, and removes both variables, so Triton's children (the Python backend stubs) inherit neither. It acts
only in a process named ``tritonserver``: a wrapper in front of it (``taskset``) passes everything on untouched.

Without a C compiler (``cc``/``gcc`` on PATH) this is not possible and ``build()`` returns None: the launcher then
puts the key on the command line as before and says so once. Mitigations then: model control off (the default of
``serve``: the key unlocks nothing that loads code), a host or container whose other users you trust, or
``hidepid=2`` on ``/proc``."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

log = logging.getLogger(__name__)

PLACEHOLDER = "@SUPERSERVE_CONTROL_KEY@"
KEY_VAR = "SUPERSERVE_TRITON_ARGV_KEY"
"""Environment variable that carries the key to the library (removed by it before ``main``)."""

SOURCE = r"""
/* superserve: fill the Triton control key into argv from the environment, before main() (hidden_key.py). */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#define PLACEHOLDER "%(placeholder)s"
#define KEY_VAR "%(key_var)s"
#define SELF "%(self)s"

__attribute__((constructor))
static void superserve_fill_key(int argc, char **argv, char **envp) {
    (void)envp;
    if (argc < 1 || !argv || !argv[0]) return;
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    if (strcmp(base, "tritonserver") != 0) return;  /* a wrapper (taskset ...): leave it all to the server */
    char *key = getenv(KEY_VAR);
    if (!key) return;
    size_t plen = strlen(PLACEHOLDER), klen = strlen(key);
    for (int i = 1; i < argc; i++) {
        char *at = argv[i] ? strstr(argv[i], PLACEHOLDER) : NULL;
        if (!at) continue;
        size_t pre = (size_t)(at - argv[i]), rest = strlen(at + plen);
        char *s = malloc(pre + klen + rest + 1);
        if (!s) abort();
        memcpy(s, argv[i], pre);
        memcpy(s + pre, key, klen);
        memcpy(s + pre + klen, at + plen, rest + 1);
        argv[i] = s;
    }
    memset(key, '*', klen);  /* the environment block that /proc/<pid>/environ shows */
    unsetenv(KEY_VAR);
    const char *pre = getenv("LD_PRELOAD");  /* drop ourselves, keep any preload the user had */
    size_t slen = strlen(SELF);
    if (pre && strncmp(pre, SELF, slen) == 0 && (pre[slen] == ':' || pre[slen] == ' ') && pre[slen + 1])
        setenv("LD_PRELOAD", pre + slen + 1, 1);
    else
        unsetenv("LD_PRELOAD");
}
"""

_lock = threading.Lock()
_built: dict[str, Path | None] = {}


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "superserve"


def build() -> Path | None:
    """The shared library (built once per source version and cached), or None without a C compiler."""
    with _lock:
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            return _once(None, "no C compiler (cc or gcc) on PATH")
        digest = hashlib.sha1(SOURCE.encode()).hexdigest()[:12]
        if digest in _built:
            return _built[digest]
        path = _cache_dir() / f"fill-key-{digest}.so"
        if any(c in str(path) for c in ": \t\n"):  # LD_PRELOAD splits on these
            return _once(None, f"its path {path} holds a character LD_PRELOAD cannot carry")
        if not path.exists():
            src = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.c")
            tmp = src.with_suffix(".so")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                src.write_text(SOURCE % {"placeholder": PLACEHOLDER, "key_var": KEY_VAR, "self": str(path)})
                r = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(src)], capture_output=True,
                                   text=True, timeout=60)
                if r.returncode != 0:
                    return _once(None, f"{cc} failed: {r.stderr.strip()[-300:]}")
                tmp.replace(path)  # atomic: parallel starts never load a half-written file
            except (OSError, subprocess.TimeoutExpired) as e:
                return _once(None, f"building it with {cc} failed: {e}")
            finally:
                src.unlink(missing_ok=True)
                tmp.unlink(missing_ok=True)
        _built[digest] = path
        return path


def _once(value, why: str):
    if "warned" not in _built:
        _built["warned"] = None
        log.warning("Triton's control key goes on its command line, readable by local users in /proc: cannot "
                    "build the library that hides it (%s)", why)
    return value


def environment(env: dict[str, str], key: str, library: Path) -> dict[str, str]:
    """``env`` with the key and the preload the library needs."""
    out = dict(env)
    out[KEY_VAR] = key
    out["LD_PRELOAD"] = str(library) + (":" + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
    return out
