"""Graceful shutdown of ``superserve serve`` (issue 12, item 7): on SIGTERM or SIGINT the sidecar stops
admitting (new inference requests get 503 / UNAVAILABLE and readiness turns false), answers every request
already admitted (served, or the engine's own explicit error), and only then closes its ports and stops
Triton. Nothing is lost: a request still unanswered when the drain timeout ends gets an explicit
503 / UNAVAILABLE ("shutting down") instead of a closed connection.

It sits in front of the front ends, not inside them: an aiohttp middleware and a grpc.aio server
interceptor, both around the inference routes, which count the requests in flight (one asyncio task each
on both servers) and refuse new ones while draining."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import grpc
from aiohttp import web

from ..core.errors import Overloaded

log = logging.getLogger(__name__)
GRPC_GATED = ("/ModelInfer", "/ModelStreamInfer")
GRPC_READY = ("/ServerReady", "/ModelReady")


class Drain:
    """Requests in flight at the front doors, and the switch that stops admitting them."""

    def __init__(self, on_refused: Callable[[Overloaded], None] | None = None):
        self.draining = False
        self.on_refused = on_refused
        """Called with the error of every refused or cut-off request (the engine counts it in /metrics)."""
        self._active: set[asyncio.Task] = set()
        self._expired: set[asyncio.Task] = set()
        self._idle: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None
        self.refused = 0
        """Requests answered 503 because they arrived while draining."""
        self.cut_off = 0
        """Requests in flight still unanswered when the drain ended, answered 503."""

    @property
    def inflight(self) -> int:
        return len(self._active)

    def _refuse(self, why: str) -> Overloaded:
        err = Overloaded(why)
        if self.on_refused is not None:
            self.on_refused(err)
        return err

    def _enter(self) -> asyncio.Task:
        task = asyncio.current_task()
        self._active.add(task)
        return task

    def _leave(self, task: asyncio.Task) -> None:
        self._active.discard(task)
        self._expired.discard(task)
        if not self._active and self._idle is not None:
            self._idle.set()

    def _was_cut_off(self, task: asyncio.Task) -> bool:
        """Our own cancellation (drain timeout), not the client's or the server's: swallow it."""
        if task not in self._expired:
            return False
        if hasattr(task, "uncancel"):  # 3.11+: the task goes on to send the answer
            task.uncancel()
        return True

    def hurry(self) -> None:
        """A second signal: end the drain now (what is still in flight is answered 503)."""
        if self._hurry is not None:
            self._hurry.set()

    async def drain(self, timeout_s: float) -> int:
        """Stop admitting, wait up to ``timeout_s`` for the requests in flight, answer the rest 503.
        Returns how many were still in flight at the timeout."""
        self.draining = True
        self._idle, self._hurry = asyncio.Event(), asyncio.Event()
        t0, n0 = time.monotonic(), len(self._active)
        log.info("draining: admitting no new requests; %d in flight (timeout %.1f s)", n0, timeout_s)
        if self._active:
            waits = [asyncio.ensure_future(self._idle.wait()), asyncio.ensure_future(self._hurry.wait())]
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
        left = list(self._active)
        if left:
            log.warning("drain: %d request(s) still in flight after %.1f s; answering them 503", len(left),
                        time.monotonic() - t0)
            self._expired.update(left)
            for task in left:
                task.cancel()
            self.cut_off += len(left)
            self._idle.clear()
            if self._active:
                await asyncio.wait_for(self._idle.wait(), 5.0)
        log.info("drained in %.2f s: %d answered, %d cut off, %d refused while draining",
                 time.monotonic() - t0, n0 - len(left), len(left), self.refused)
        return len(left)

    # -- HTTP ---------------------------------------------------------------------------------
    def http_middleware(self):
        @web.middleware
        async def drain_middleware(request: web.Request, handler):
            path = request.path
            if request.method == "GET" and path.endswith("/ready") and self.draining:
                return web.Response(status=503, text="draining")
            if request.method != "POST" or not path.endswith("/infer"):
                return await handler(request)
            if self.draining:
                self.refused += 1
                err = self._refuse("server shutting down: not admitting new requests")
                return web.json_response({"error": str(err)}, status=err.http_status)
            task = self._enter()
            try:
                return await handler(request)
            except asyncio.CancelledError:
                if not self._was_cut_off(task):
                    raise
                err = self._refuse("server shutting down: the request was not answered before the drain timeout")
                return web.json_response({"error": str(err)}, status=err.http_status)
            finally:
                self._leave(task)

        return drain_middleware

    # -- gRPC ---------------------------------------------------------------------------------
    def grpc_interceptor(self) -> grpc.aio.ServerInterceptor:
        return _GrpcDrain(self)


class _GrpcDrain(grpc.aio.ServerInterceptor):
    def __init__(self, drain: Drain):
        self.drain = drain
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        method = details.method
        if handler is None or handler.unary_unary is None or not method.endswith(GRPC_GATED + GRPC_READY):
            return handler  # streaming RPCs are not served by this sidecar (they fail as before)
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            make = self._gate if method.endswith(GRPC_GATED) else self._readiness
            wrapped = grpc.unary_unary_rpc_method_handler(make(handler.unary_unary),
                                                          request_deserializer=handler.request_deserializer,
                                                          response_serializer=handler.response_serializer)
            self._wrapped[method] = wrapped
        return wrapped

    def _gate(self, inner):
        drain = self.drain

        async def gated(request, context):
            if drain.draining:
                drain.refused += 1
                err = drain._refuse("server shutting down: not admitting new requests")
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
            task = drain._enter()
            try:
                return await inner(request, context)
            except asyncio.CancelledError:
                if not drain._was_cut_off(task):
                    raise
                err = drain._refuse("server shutting down: the request was not answered before the drain timeout")
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
            finally:
                drain._leave(task)

        return gated

    def _readiness(self, inner):
        drain = self.drain

        async def readiness(request, context):
            resp = await inner(request, context)
            if drain.draining and resp is not None:
                resp = type(resp)(ready=False)
            return resp

        return readiness
