"""Real tritonserver processes on free loopback ports."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from superserve.client.fuzz_cases import set_param  # noqa: F401  (re-exported for tests)
from superserve.scheduler import paths
from superserve.scheduler.sidecar.server import serve_subprocess
from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess
from tests.conftest import free_ports


def write_repository(root: Path, max_queue_delay_us: int) -> Path:
    """A copy of our supernet model config with another batching delay."""
    text = (paths.model_repository() / "supernet" / "config.pbtxt").read_text()
    new = text.replace("max_queue_delay_microseconds: 200", f"max_queue_delay_microseconds: {max_queue_delay_us}")
    assert new != text, "config.pbtxt no longer holds the delay this fixture rewrites"
    (root / "supernet" / "1").mkdir(parents=True)
    (root / "supernet" / "config.pbtxt").write_text(new)
    return root


def run_triton(tmp: Path, repo: str | None, models: tuple[str, ...] = ()):
    """A TritonProcess on free ports; ``models``: load only these (default: the whole repository)."""
    http, grpc, metrics = free_ports(3)
    proc = TritonProcess(TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, models=models,
                                      model_repository=repo, log_file=str(tmp / "triton.log")))
    with proc:
        yield proc
    assert not proc.alive()


@pytest.fixture(scope="module")
def triton(tmp_path_factory, weights_path):
    """Triton whose batcher waits 0.5 s, so requests sent together land in one execute()."""
    tmp = tmp_path_factory.mktemp("triton")
    yield from run_triton(tmp, str(write_repository(tmp / "repo", 500_000)))


@pytest.fixture(scope="session")
def triton_plain(tmp_path_factory, weights_path):
    """Triton on the repository's own model_repository/ (supernet and the triton-fixed baselines), as
    `superserve triton` runs it; shared by the modules that need a plain worker."""
    yield from run_triton(tmp_path_factory.mktemp("triton"), None)


@pytest.fixture(scope="module")
def sidecar(triton_plain, tmp_path_factory):
    """`superserve serve --worker <triton>` as a subprocess; yields (http_url, grpc_url)."""
    tmp = tmp_path_factory.mktemp("sidecar")
    http, grpc = free_ports(2)
    profile_file = sorted((paths.repo_root() / "profiles").glob("*.json"))[0]
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--worker", triton_plain.cfg.grpc_url,
            "--profile", str(profile_file)]
    with serve_subprocess(args, str(tmp / "serve.log")) as proc:
        yield f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, (tmp / "serve.log").read_text()


def tritonserver_pids(grpc_port: int) -> list[int]:
    """tritonserver processes listening on ``grpc_port`` (from their command lines)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"tritonserver") and f"--grpc-port={grpc_port}".encode() in cmd:
                out.append(int(d.name))
    return out


def profile_file(model: str):
    """The committed profile of served model ``model`` (the one the sidecar plans with here)."""
    folder = paths.repo_root() / "profiles" / ("" if model == "supernet" else model)
    return sorted(folder.glob("*.json"))[0]


def models_in_process(models) -> dict:
    """{model: (network, profile)}: the weights each model's config names, and the profile the sidecar plans with."""
    from superserve.scheduler.core.profile import Profile
    from superserve.scheduler.offline.model_config import model_weights
    from superserve.supernet.checkpoint import load_checkpoint

    out = {}
    for m in models:
        text = (paths.model_repository() / m / "config.pbtxt").read_text()
        out[m] = (load_checkpoint(paths.backend_dir() / model_weights(text))[0], Profile.load(profile_file(m)))
    return out
