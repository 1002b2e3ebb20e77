"""Run the ``tritonserver`` binary shipped in the nvidia-pytriton wheel on our model repository.

The wheel's binary needs: the wheel's bundled shared libraries on LD_LIBRARY_PATH; a backend
directory holding ``python/`` (libtriton_python.so, triton_python_backend_utils.py and the stub
built for *this* Python) beside our ``python_supernet/``; and this venv's ``bin/`` first on PATH,
because the stub finds its interpreter and site-packages through ``python3`` on PATH.

The door is closed (issue 12): the launcher binds Triton to loopback unless told otherwise, restricts
Triton's model-repository, shared-memory, trace and logging APIs on both protocols to requests that
carry a per-start secret header (``TritonProcess.control_headers``), and when only some models are
wanted without ``explicit`` control it runs Triton with model control off (``none``) over a
repository of links to just those models, so no request can load or unload anything. The Python
backend's shared-memory regions carry a prefix of their own (``shm_regions.py``); regions left by a
Triton killed hard are removed at the next start and when the launcher stops it. The key never appears on
Triton's command line (``hidden_key.py``), and Triton dies with the process that launched it, even one killed
with SIGKILL (``PR_SET_PDEATHSIG``, see ``_spawn``).
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import paths
from . import hidden_key, shm_regions

log = logging.getLogger(__name__)


class TritonStartError(RuntimeError):
    pass


CONTROL_HEADER = "superserve-control"
"""Header (HTTP) that unlocks Triton's restricted APIs; gRPC clients send it as metadata named
``triton-grpc-protocol-superserve-control`` (Triton 2.51 prefixes the key it checks on gRPC)."""
RESTRICTED = ("model-repository", "shared-memory", "trace", "logging")
"""Triton API groups only the launcher's owner may call. Health, metadata, model-config, inference and
statistics stay open (the sidecar, the benchmarks' direct Triton clients and the tests use them)."""


@dataclass(frozen=True)
class TritonConfig:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model_repository: str | None = None
    """Default: the repository's model_repository/."""
    models: tuple[str, ...] = ()
    """Load only these models; model control is then off (Triton's ``none`` mode over a repository of
    links to these models) unless ``explicit``. Empty: every model in the repository."""
    explicit: bool = False
    """Explicit model control: ``models`` are loaded at start and the holder of ``control_key`` may load
    and unload others (INFaaS variants)."""
    control_key: str | None = None
    """Secret for Triton's restricted APIs (model repository, shared memory, trace, logging); default: a
    fresh random one per start. It is on Triton's command line (readable by local users through /proc):
    where that matters, run without ``explicit`` (nothing to unlock) or in a container."""
    log_file: str | None = None
    ready_timeout_s: float = 120.0
    exit_timeout_s: int = 2
    """Triton's --exit-timeout-secs; its default of 30 makes every SIGTERM slow."""
    extra_args: tuple[str, ...] = field(default=())
    wrapper: tuple[str, ...] = ()
    """A command that runs the server, e.g. ("taskset", "-c", "1") to pin it (and its backend stubs,
    which inherit the affinity) to core 1; it must exec the server, so the process stays ours to stop."""
    instances: int | None = None
    """Model instances per loaded model (its ``instance_group`` count), written into the linked repository's
    copy of each model's config (core/instance_count.py chooses it for ``serve``); None: the committed configs'."""

    def __post_init__(self):
        if self.instances is not None and not 1 <= self.instances <= 64:
            raise ValueError(f"instances must be in 1..64, got {self.instances}")
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 <= port < 65536:
                raise ValueError(f"{name} must be in 0..65535 (0: a free port), got {port}")

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"


def wheel_dir() -> Path:
    try:
        import pytriton
    except ImportError as e:
        raise TritonStartError("nvidia-pytriton is not installed; run the README's set-up command") from e
    d = Path(pytriton.__file__).parent / "tritonserver"
    if not (d / "bin" / "tritonserver").exists():
        raise TritonStartError(f"no tritonserver binary in {d}")
    return d


def libs_dir() -> Path:
    return wheel_dir().parent.parent / "nvidia_pytriton.libs"


def backend_directory() -> Path:
    """Build (once, idempotently) the backend directory Triton is pointed at."""
    src = wheel_dir()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / py / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonStartError(f"the nvidia-pytriton wheel has no Python backend stub for Python {py}")
    target = paths.backend_dir().resolve()
    # One folder per checkout, so two checkouts never re-point each other's python_supernet link.
    key = hashlib.sha1(str(target).encode()).hexdigest()[:10]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "superserve" / f"backends-py{py}-{key}"
    py_dir = root / "python"
    py_dir.mkdir(parents=True, exist_ok=True)
    for f in [src / "backends/python/libtriton_python.so", src / "backends/python/triton_python_backend_utils.py",
              stub]:
        dst = py_dir / f.name
        if not dst.exists() or dst.stat().st_size != f.stat().st_size:
            tmp = dst.with_name(f"{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # parallel starts
            shutil.copy2(f, tmp)
            tmp.replace(dst)
    link = root / "python_supernet"
    if link.is_symlink() and link.resolve() != target:
        link.unlink()
    if not link.exists():
        link.symlink_to(target, target_is_directory=True)
    return root


def environment() -> dict[str, str]:
    env = dict(os.environ)
    libs = str(libs_dir())
    env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def control_headers(key: str, protocol: str) -> dict[str, str]:
    """Headers (``protocol`` "http") or gRPC metadata ("grpc") that unlock the restricted APIs."""
    if protocol not in ("http", "grpc"):
        raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
    return {("triton-grpc-protocol-" if protocol == "grpc" else "") + CONTROL_HEADER: key}


_INSTANCE_GROUP = re.compile(r"(instance_group\s*\[\s*\{[^}]*?count\s*:\s*)(\d+)")


def with_instance_count(config_text: str, count: int, where: str = "config.pbtxt") -> str:
    """``config_text`` with its (single) instance group's count set to ``count``."""
    found = _INSTANCE_GROUP.findall(config_text)
    if len(found) != 1:
        raise TritonStartError(f"{where}: expected one instance_group with a count to set to {count}, found "
                               f"{len(found)}")
    return _INSTANCE_GROUP.sub(lambda m: f"{m.group(1)}{count}", config_text)


def linked_repository(source: Path, models: tuple[str, ...], instances: int | None = None) -> Path:
    """A temporary model repository of symlinks to just ``models`` of ``source`` (the caller removes it).
    With ``instances``, each model is a folder of its own holding a copy of its config with that instance
    count and links to everything else (the committed repository is never edited)."""
    missing = [m for m in models if not (source / m / "config.pbtxt").is_file()]
    if missing:
        raise TritonStartError(f"model(s) {missing} not found in {source}")
    root = Path(tempfile.mkdtemp(prefix="superserve-repo-"))
    try:
        for m in models:
            src = (source / m).resolve()
            if instances is None:
                (root / m).symlink_to(src, target_is_directory=True)
                continue
            (root / m).mkdir()
            config = src / "config.pbtxt"
            (root / m / "config.pbtxt").write_text(with_instance_count(config.read_text(), instances, str(config)))
            for item in src.iterdir():
                if item.name != "config.pbtxt":
                    (root / m / item.name).symlink_to(item.resolve(), target_is_directory=item.is_dir())
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return root


def repository_models(source: Path) -> tuple[str, ...]:
    """Every model folder (one with a config.pbtxt) of a repository."""
    return tuple(sorted(d.name for d in source.iterdir() if (d / "config.pbtxt").is_file()))


def command(cfg: TritonConfig, backends: Path, repo: str | None = None, control_key: str | None = None,
            shm_prefix: str | None = None) -> list[str]:
    """The server's command line. ``repo`` overrides the configured repository (the linked one);
    ``control_key`` locks the restricted APIs; ``shm_prefix`` names the Python backend's regions."""
    repo = repo or cfg.model_repository or str(paths.model_repository())
    cmd = [str(wheel_dir() / "bin" / "tritonserver"), f"--model-repository={repo}",
           f"--backend-directory={backends}", f"--http-address={cfg.host}", f"--http-port={cfg.http_port}",
           f"--grpc-address={cfg.host}", f"--grpc-port={cfg.grpc_port}", f"--metrics-address={cfg.host}",
           f"--metrics-port={cfg.metrics_port}", f"--exit-timeout-secs={cfg.exit_timeout_s}",
           "--allow-gpu-metrics=false", "--log-verbose=0", "--allow-sagemaker=false", "--allow-vertex-ai=false"]
    if control_key is not None:
        if not control_key or any(c in control_key for c in ",:= \n"):
            raise ValueError("the Triton control key must be non-empty, without ',', ':', '=' or spaces")
        cmd += [f"--http-restricted-api={','.join(RESTRICTED)}:{CONTROL_HEADER}={control_key}",
                f"--grpc-restricted-protocol={','.join(RESTRICTED)}:{CONTROL_HEADER}={control_key}"]
    if shm_prefix is not None:
        cmd.append(f"--backend-config=python,shm-region-prefix-name={shm_prefix}")
    if cfg.explicit:
        cmd.append("--model-control-mode=explicit")
        cmd += [f"--load-model={m}" for m in cfg.models]
    else:
        cmd.append("--model-control-mode=none")
    cmd += list(cfg.extra_args)
    return [*cfg.wrapper, *cmd]


class TritonProcess:
    """One running tritonserver. Use as a context manager, or start()/stop()."""

    def __init__(self, cfg: TritonConfig):
        if 0 in (cfg.http_port, cfg.grpc_port, cfg.metrics_port):  # 0: any free port, chosen now
            from ..ports import free_ports

            free = iter(free_ports(3, cfg.host))
            cfg = replace(cfg, **{k: getattr(cfg, k) or next(free) for k in ("http_port", "grpc_port", "metrics_port")})
        self.cfg = cfg
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(cfg.log_file or tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        self.control_key = cfg.control_key or secrets.token_urlsafe(24)
        self.shm_prefix = shm_regions.new_prefix()
        self._linked: Path | None = None

    def control_headers(self, protocol: str = "grpc") -> dict[str, str]:
        """Headers (gRPC metadata) for this server's restricted APIs: model load/unload/index and the rest
        of ``RESTRICTED``. Pass them as ``headers=`` to tritonclient's calls."""
        return control_headers(self.control_key, protocol)

    def start(self) -> "TritonProcess":
        backends = backend_directory()
        shm_regions.remove_stale()
        repo = None
        if (self.cfg.models and not self.cfg.explicit) or self.cfg.instances is not None:
            source = Path(self.cfg.model_repository or paths.model_repository())
            models = self.cfg.models if self.cfg.models and not self.cfg.explicit else repository_models(source)
            self._linked = linked_repository(source, models, self.cfg.instances)
            repo = str(self._linked)
        env, library = environment(), hidden_key.build()
        if library is not None:  # the key travels in the environment, only its placeholder on the command line
            env = hidden_key.environment(env, self.control_key, library)
        cmd = command(self.cfg, backends, repo, self.control_key if library is None else hidden_key.PLACEHOLDER,
                      self.shm_prefix)
        log.info("starting tritonserver (log %s)", self.log_path)
        log.debug("%s", " ".join(cmd).replace(self.control_key, "***"))
        self._log = open(self.log_path, "ab")
        try:
            self.proc = _spawn(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
        except OSError:
            self._log.close()
            if self._linked is not None:
                shutil.rmtree(self._linked, ignore_errors=True)
            raise
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("tritonserver ready: http %s grpc %s metrics %s:%d", self.cfg.http_url, self.cfg.grpc_url,
                 self.cfg.host, self.cfg.metrics_port)
        return self

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self) -> None:
        url = f"http://{self.cfg.http_url}/v2/health/ready"
        deadline = time.monotonic() + self.cfg.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TritonStartError(f"tritonserver exited with {self.proc.returncode}; log {self.log_path}:\n"
                                       + self.log_tail())
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TritonStartError(f"tritonserver not ready after {self.cfg.ready_timeout_s:.0f} s; log "
                               f"{self.log_path}:\n" + self.log_tail())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout_s``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not stop in %.0f s; killing it", timeout_s)
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        try:  # stubs left behind (e.g. the server was SIGKILLed) share the process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._cleanup()
        return self.proc.returncode

    def _cleanup(self) -> None:
        """After the whole group is gone: its shared-memory regions (a clean exit leaves none; a killed
        server leaves one per model instance), the linked repository, the log handle."""
        if not _owner_gone(self.shm_prefix):
            log.warning("processes of tritonserver %d still run after SIGKILL; leaving its shared memory",
                        self.proc.pid)
        else:
            removed = shm_regions.remove(self.shm_prefix)
            if removed:
                log.info("removed %d shared-memory region(s) of the stopped tritonserver", len(removed))
        if self._linked is not None:
            shutil.rmtree(self._linked, ignore_errors=True)
            self._linked = None
        self._log.close()

    def __enter__(self) -> "TritonProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- dying with the launcher ---------------------------------------------------------------------------
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_spawner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="triton-spawner")
"""Every Triton is forked from this one thread, which lives as long as the process: the kernel sends the
parent-death signal when the *thread* that forked the child ends, so a Triton started from a short-lived
thread (``asyncio.to_thread``, a benchmark's helper thread) would otherwise be killed when that thread ends."""


def _die_with_parent(parent_pid: int):
    """``preexec_fn``: in the child, before exec, ask for SIGKILL when the launcher goes (a SIGKILLed launcher
    runs no clean-up, and Triton, in a session of its own, would otherwise run on as an orphan holding its
    ports). The setting survives exec; if the launcher died before it was made, exit at once."""
    def preexec() -> None:
        if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent_pid:
            os._exit(1)
    return preexec


def _spawn(cmd: list[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` from the spawner thread, with the parent-death signal set."""
    return _spawner.submit(subprocess.Popen, cmd, preexec_fn=_die_with_parent(os.getpid()), **kwargs).result()


def _owner_gone(shm_prefix: str, timeout_s: float = 5.0) -> bool:
    """Wait until no live process carries ``shm_prefix`` (server and stubs; SIGKILLed stubs take a
    moment to go, and zombies, which have no command line, count as gone)."""
    deadline = time.monotonic() + timeout_s
    while shm_regions.owner_alive(shm_prefix):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def run_forever(cfg: TritonConfig) -> int:
    """``superserve triton``: start, print the URLs, stop cleanly on SIGINT/SIGTERM."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    triton = TritonProcess(cfg).start()
    print(f"Triton ready  HTTP http://{cfg.http_url}  gRPC {cfg.grpc_url}  "
          f"metrics http://{cfg.host}:{cfg.metrics_port}/metrics  log {triton.log_path}", flush=True)
    try:
        while not stop and triton.alive():
            time.sleep(0.2)
    finally:
        code = triton.stop()
    if not stop:
        print(f"tritonserver exited on its own with {code}; log {triton.log_path}", file=sys.stderr)
        return 1
    return 0
