"""Real tritonserver processes on free loopback ports."""
from __future__ import annotations

from pathlib import Path

import pytest

from superserve.scheduler import paths
from superserve.scheduler.triton_launcher import TritonConfig, TritonProcess
from tests.conftest import free_ports


def write_repository(root: Path, max_queue_delay_us: int) -> Path:
    """A copy of our supernet model config with another batching delay."""
    text = (paths.model_repository() / "supernet" / "config.pbtxt").read_text()
    new = text.replace("max_queue_delay_microseconds: 200", f"max_queue_delay_microseconds: {max_queue_delay_us}")
    assert new != text, "config.pbtxt no longer holds the delay this fixture rewrites"
    (root / "supernet" / "1").mkdir(parents=True)
    (root / "supernet" / "config.pbtxt").write_text(new)
    return root


def run_triton(tmp: Path, repo: str | None):
    http, grpc, metrics = free_ports(3)
    proc = TritonProcess(TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics,
                                      model_repository=repo, log_file=str(tmp / "triton.log")))
    with proc:
        yield proc
    assert not proc.alive()


@pytest.fixture(scope="module")
def triton(tmp_path_factory, weights_path):
    """Triton whose batcher waits 0.5 s, so requests sent together land in one execute()."""
    tmp = tmp_path_factory.mktemp("triton")
    yield from run_triton(tmp, str(write_repository(tmp / "repo", 500_000)))


@pytest.fixture(scope="module")
def triton_plain(tmp_path_factory, weights_path):
    """Triton on the repository's own model_repository/, as `superserve triton` runs it."""
    yield from run_triton(tmp_path_factory.mktemp("triton"), None)
