"""Triton workers as local processes (``serve --workers N``, and what the autoscaler adds on one host).

Worker ``i`` takes the base ports + 3*i, as ``serve --workers`` always did (0: free ports), with the lowest
index not in use, so a pool that shrinks and grows again reuses its ports. A process that dies is started again
on the same ports (as Ray restarts an actor); until it is ready the worker has no address. Worker ``i`` may run under a
command prefix of its own (``serve --local-worker-prefix``: a cgroup with a CPU quota, a core), kept across
restarts, so a pool's capacity per worker stays fixed as it grows and shrinks."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from .triton_launcher import TritonConfig, TritonProcess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    """Where a worker serves now. ``incarnation`` changes whenever its Triton was started again, even on the
    same address."""
    url: str
    incarnation: str


@dataclass(eq=False)
class LocalWorker:
    index: int
    cfg: TritonConfig
    proc: TritonProcess
    starts: int = 1
    restart: asyncio.Task | None = None


class LocalProcesses:
    """Start, watch and stop local tritonserver processes."""

    name = "local"

    def __init__(self, base: TritonConfig, prefixes: tuple[tuple[str, ...], ...] = ()):
        self.base = base
        self.prefixes = prefixes
        """Element i: the command that runs worker i (e.g. into its cgroup); it must exec Triton."""
        self._used: set[int] = set()
        self._procs: list[TritonProcess] = []
        """Every process started, so ``close`` stops one whose start was abandoned half-way."""

    def _config(self, i: int) -> TritonConfig:
        b = self.base
        http, grpc, metrics = (p + 3 * i if p else 0 for p in (b.http_port, b.grpc_port, b.metrics_port))
        return replace(b, http_port=http, grpc_port=grpc, metrics_port=metrics,
                       log_file=f"{b.log_file}.{i}" if b.log_file and i else b.log_file,
                       wrapper=self.prefixes[i] if i < len(self.prefixes) else b.wrapper)

    async def start(self) -> LocalWorker:
        """Start one Triton and return once it is ready."""
        i = min(set(range(len(self._used) + 1)) - self._used)
        self._used.add(i)
        proc = TritonProcess(self._config(i))  # resolves free ports now, kept for restarts
        self._procs.append(proc)
        try:
            await asyncio.to_thread(proc.start)
        except BaseException:
            self._used.discard(i)
            raise
        return LocalWorker(i, proc.cfg, proc)

    async def address(self, h: LocalWorker, timeout_s: float) -> Endpoint | None:
        """The worker's endpoint while its process runs; when it has died, start it again (None until ready)."""
        if h.restart is None and h.proc.alive():
            return Endpoint(h.cfg.grpc_url, f"{h.index}.{h.starts}")
        if h.restart is None or h.restart.done():
            if h.restart is None:
                log.warning("local Triton worker %s exited (code %s); starting it again", h.cfg.grpc_url,
                            h.proc.proc.returncode if h.proc.proc else None)
            h.restart = asyncio.get_running_loop().create_task(self._restart(h))
        return None

    async def _restart(self, h: LocalWorker) -> None:
        await asyncio.to_thread(h.proc.stop)  # what the dead one left: stubs, shared memory
        proc = h.proc = TritonProcess(h.cfg)  # stop() reaches it even while it starts
        self._procs = [p for p in self._procs if p.alive()] + [proc]
        try:
            await asyncio.to_thread(proc.start)
        except Exception as e:  # noqa: BLE001 - tried again at the next poll
            log.warning("restarting local Triton worker %s failed: %s", h.cfg.grpc_url, str(e)[:300])
            await asyncio.sleep(1.0)
            return
        h.proc, h.starts, h.restart = proc, h.starts + 1, None

    async def stop(self, h: LocalWorker) -> None:
        if h.restart is not None and not h.restart.done():
            h.restart.cancel()
            await asyncio.gather(h.restart, return_exceptions=True)
        await asyncio.to_thread(h.proc.stop)
        self._used.discard(h.index)

    def describe(self, h: LocalWorker) -> str:
        return f"local process {h.cfg.grpc_url}"

    async def close(self) -> None:
        left = [p for p in self._procs if p.proc is not None and p.proc.poll() is None]
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in left), return_exceptions=True)
        self._procs.clear()
