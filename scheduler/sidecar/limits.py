"""Slow and idle clients (issue 12, item 6): connection caps and read timeouts for the two front ends.

Before this, a half-sent HTTP header was still open after 150 s and 20,000 idle connections exhausted the
descriptor limit. Helpers only; the front ends wire them (see ``ConnectionLimits`` for the numbers):

- HTTP (aiohttp): ``LimitedTCPSite`` instead of ``web.TCPSite`` caps the connections open at once (one
  over the cap gets ``503`` and is closed at once, so its descriptor is freed) and closes a connection whose
  request head is not complete ``header_timeout_s`` after its first byte (or after the connection opened),
  or whose body (``Content-Length``) is not complete ``body_timeout_s`` after the head, with ``408``.
  ``http_runner_kwargs`` gives ``web.AppRunner`` an idle keep-alive timeout (aiohttp's default is an hour)
  and header size caps.
- gRPC (grpc.aio): ``grpc_server_kwargs`` caps streams per connection, closes idle connections, bounds the
  handshake and accepts client keep-alive pings; ``GrpcLimits`` (a server interceptor, outermost) caps the calls
  in progress (beyond: RESOURCE_EXHAUSTED at once) and counts the calls gRPC refused for a message over the size
  limit, which grpc.aio does before any Python code sees the call.

Every refusal is counted in one ``Counter`` by (protocol, reason) (``REFUSALS``), published at /metrics as
``sched_limit_refusals_total``, so a refused request is never invisible there.
"""
from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections import Counter
from dataclasses import dataclass

import grpc
from aiohttp import web

log = logging.getLogger(__name__)


REFUSALS = (("http", "connections"), ("http", "head_timeout"), ("http", "body_timeout"), ("http", "head_too_large"),
            ("http", "body_too_large"), ("grpc", "concurrent_rpcs"), ("grpc", "message_too_large"))
"""(protocol, reason) of every refusal the limits make: an HTTP connection over the cap (503), a head or a body
that came too slowly (408), a head too large (431), a body over the size limit (413, aiohttp's
``client_max_size``); a gRPC call over the concurrency cap, or whose message gRPC refused as too large
(RESOURCE_EXHAUSTED both)."""


def default_max_connections() -> int:
    """Half the descriptor limit (the rest for Triton channels, files, the gRPC server), at most 4096."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(4096, soft // 2)) if soft != resource.RLIM_INFINITY else 4096


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 0
    """HTTP connections open at once; one more gets 503 and is closed. 0: ``default_max_connections()``."""
    header_timeout_s: float = 10.0
    """A request head (request line and headers) must be complete this long after its first byte (for a
    new connection, after it opened); otherwise 408 and the connection is closed."""
    body_timeout_s: float = 30.0
    """A request body of known length must be complete this long after its head."""
    keepalive_timeout_s: float = 15.0
    """An idle keep-alive HTTP connection is closed after this (aiohttp's own timer)."""
    max_head_bytes: int = 64 << 10
    """A request head larger than this is refused (431) and the connection closed."""
    grpc_max_concurrent_rpcs: int = 4096
    """gRPC calls in progress at once, all connections together; beyond: RESOURCE_EXHAUSTED at once."""
    grpc_max_concurrent_streams: int = 256
    """gRPC calls at once on one connection (HTTP/2 streams)."""
    grpc_max_connection_idle_s: float = 300.0
    """A gRPC connection with no call for this long is closed (GOAWAY)."""
    grpc_handshake_timeout_s: float = 10.0
    """A gRPC connection must finish its HTTP/2 handshake within this."""

    def __post_init__(self):
        if self.max_connections < 0:
            raise ValueError(f"max_connections must be >= 0 (0: default), got {self.max_connections}")
        for name in ("header_timeout_s", "body_timeout_s", "keepalive_timeout_s", "grpc_max_connection_idle_s",
                     "grpc_handshake_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if min(self.max_head_bytes, self.grpc_max_concurrent_rpcs, self.grpc_max_concurrent_streams) < 1:
            raise ValueError("max_head_bytes, grpc_max_concurrent_rpcs and grpc_max_concurrent_streams must be >= 1")

    @property
    def connections(self) -> int:
        return self.max_connections or default_max_connections()


def http_runner_kwargs(limits: ConnectionLimits) -> dict:
    """Keyword arguments for ``web.AppRunner`` (passed on to aiohttp's request handler)."""
    return {"keepalive_timeout": limits.keepalive_timeout_s, "max_line_size": 8190, "max_field_size": 8190,
            "max_headers": 128}


def grpc_server_kwargs(limits: ConnectionLimits, options: list[tuple[str, object]] | tuple = ()) -> dict:
    """Keyword arguments for ``grpc.aio.server`` (``options`` are added to, e.g. message size limits). The cap on
    calls in progress is ``GrpcLimits``, not grpc's ``maximum_concurrent_rpcs``, whose refusals no code sees."""
    return {"options": [*options,
                        ("grpc.max_concurrent_streams", limits.grpc_max_concurrent_streams),
                        ("grpc.max_connection_idle_ms", int(limits.grpc_max_connection_idle_s * 1000)),
                        ("grpc.server_handshake_timeout_ms", int(limits.grpc_handshake_timeout_s * 1000)),
                        # Let clients keep a connection alive with pings (tritonclient's KeepAliveOptions),
                        # at most one every 5 s, without being sent GOAWAY "too_many_pings".
                        ("grpc.keepalive_permit_without_calls", 1),
                        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
                        ("grpc.http2.max_ping_strikes", 2)]}


def _canned(status: str, body: dict) -> bytes:
    raw = json.dumps(body).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
            f"Connection: close\r\n\r\n").encode() + raw


class _Refused(asyncio.Protocol):
    """A connection over the cap: 503, then half-close; what the client sends is discarded (closing with
    unread data would reset the connection before the client reads the 503), and the connection is closed
    when the client closes its side or after a second."""

    MAX_LINGERING = 256
    """Refused connections waiting for their client to close; beyond this they are closed at once."""

    def __init__(self, guard: "ConnectionGuard"):
        self.guard = guard
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.guard.lingering += 1
        limit = self.guard.limits.connections
        transport.write(_canned("503 Service Unavailable", {"error": f"too many connections (at most {limit}); "
                                                                       "retry later"}))
        if transport.can_write_eof() and self.guard.lingering <= self.MAX_LINGERING:
            transport.write_eof()
            asyncio.get_running_loop().call_later(1.0, transport.close)
        else:
            transport.close()

    def connection_lost(self, exc):
        self.guard.lingering -= 1

    def data_received(self, data):
        pass

    def eof_received(self):
        self.transport.close()


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind a watch on how long heads and bodies take to arrive.

    States: ``head`` (waiting for the end of a request head, timed from its first byte, or from the
    connection's opening for the first request), ``body`` (``remaining`` bytes of a Content-Length body,
    timed from the head), ``idle`` (between requests: aiohttp's keep-alive timer applies), ``off`` (a
    chunked body: its end is not tracked, so neither is anything after it on this connection), ``refused``
    (over the cap after all: see ``connection_made``)."""

    def __init__(self, inner, guard: "ConnectionGuard"):
        self.inner, self.guard = inner, guard
        self.transport = None
        self.state, self.head, self.remaining = "head", b"", 0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol, delegated --------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        if self.guard.open >= self.guard.limits.connections:
            # asyncio accepts a burst of connections (up to the backlog) before any of them is made, so the
            # factory's check saw too few open: refuse here, where the count is exact.
            self.guard.note_refusal()
            self.inner, self.state = _Refused(self.guard), "refused"
            self.inner.connection_made(transport)
            return
        self.guard.open += 1
        self._arm(self.guard.limits.header_timeout_s, "request head")
        self.inner.connection_made(transport)

    def connection_lost(self, exc):
        if self.state == "refused":
            self.inner.connection_lost(exc)
            return
        self.guard.open -= 1
        self._disarm()
        self.inner.connection_lost(exc)

    def pause_writing(self):
        self.inner.pause_writing()

    def resume_writing(self):
        self.inner.resume_writing()

    def eof_received(self):
        return self.inner.eof_received()

    def data_received(self, data: bytes):
        if self.state not in ("off", "refused") and not self._track(data):
            return
        self.inner.data_received(data)

    # -- the watch ------------------------------------------------------------------------------
    def _track(self, data: bytes) -> bool:
        """Follow the request boundaries in ``data``; False if the connection was closed for it."""
        limits, view = self.guard.limits, memoryview(data)
        while len(view) and self.state != "off":
            if self.state == "idle":
                self.state, self.head = "head", b""
                self._arm(limits.header_timeout_s, "request head")
            if self.state == "head":
                prev = len(self.head)
                buf = self.head + bytes(view[:limits.max_head_bytes + 4])
                end = buf.find(b"\r\n\r\n", max(0, prev - 3))
                if end < 0:
                    if len(buf) > limits.max_head_bytes:
                        return self._close("431 Request Header Fields Too Large", "request head too large")
                    self.head = buf
                    return True
                view, self.head = view[end + 4 - prev:], b""
                self._head_done(buf[:end])
            elif self.state == "body":
                take = min(self.remaining, len(view))
                self.remaining -= take
                view = view[take:]
                if self.remaining == 0:
                    self.state = "idle"
                    self._disarm()
        return True

    def _head_done(self, head: bytes) -> None:
        lines = head.split(b"\r\n")[1:]
        fields = {}
        for line in lines:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            self.state = "off"
            self._disarm()
            return
        try:
            length = int(fields.get(b"content-length", b"0"))
        except ValueError:
            length = 0  # aiohttp answers the malformed header itself
        if length > 0:
            self.state, self.remaining = "body", length
            self._arm(self.guard.limits.body_timeout_s, "request body")
        else:
            self.state = "idle"
            self._disarm()

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire, what, seconds)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, what: str, seconds: float) -> None:
        self._timer = None
        self.guard.timed_out += 1
        self.guard.refusals[("http", "head_timeout" if what == "request head" else "body_timeout")] += 1
        self._close("408 Request Timeout", f"{what} not complete {seconds:g} s after it started")

    def _close(self, status: str, why: str) -> bool:
        self.guard.closed += 1
        if status.startswith("431"):
            self.guard.refusals[("http", "head_too_large")] += 1
        log.warning("closing an HTTP connection from %s: %s", self._peer(), why)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_canned(status, {"error": why}))
            self.transport.close()
        return False

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return f"{peer[0]}:{peer[1]}" if peer else "?"


class ConnectionGuard:
    """A protocol factory around aiohttp's: counts connections, refuses those over the cap, watches the rest."""

    def __init__(self, factory, limits: ConnectionLimits, refusals: Counter | None = None):
        self.factory, self.limits = factory, limits
        self.refusals = Counter() if refusals is None else refusals
        """By (protocol, reason), REFUSALS: shared with the gRPC side and /metrics."""
        self.open = 0
        self.lingering = 0
        self.refused = 0
        self.timed_out = 0
        self.closed = 0

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.limits.connections:
            self.note_refusal()
            return _Refused(self)
        return _Guarded(self.factory(), self)

    def note_refusal(self) -> None:
        self.refused += 1
        self.refusals[("http", "connections")] += 1
        if self.refused == 1 or self.refused % 1000 == 0:
            log.warning("HTTP connection refused: %d open, the cap (%d connections refused so far)", self.open,
                        self.refused)


class LimitedTCPSite(web.TCPSite):
    """``web.TCPSite`` whose connections go through a ``ConnectionGuard`` (``site.guard``)."""

    def __init__(self, runner: web.BaseRunner, host: str | None = None, port: int | None = None, *,
                 limits: ConnectionLimits | None = None, refusals: Counter | None = None, **kwargs):
        super().__init__(runner, host, port, **kwargs)
        self.limits = limits or ConnectionLimits()
        self.refusals = refusals
        self.guard: ConnectionGuard | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)
        self.guard = ConnectionGuard(self._runner.server, self.limits, self.refusals)
        # With TLS the guard sees the decrypted stream (asyncio's SSL layer sits below it); the handshake
        # itself is bounded like a request head.
        tls = {"ssl_handshake_timeout": self.limits.header_timeout_s} if self._ssl_context else {}
        self._server = await asyncio.get_running_loop().create_server(
            self.guard, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port, **tls)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


def http_refusal_middleware(refusals: Counter):
    """aiohttp middleware counting the refusals aiohttp itself makes inside a handler: a body over
    ``client_max_size`` (413)."""
    @web.middleware
    async def count_refusals(request: web.Request, handler):
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            refusals[("http", "body_too_large")] += 1
            raise

    return count_refusals


class GrpcLimits(grpc.aio.ServerInterceptor):
    """The cap on gRPC calls in progress, and a count of the calls gRPC refuses before Python sees them.

    Install it first (outermost). Each unary method is served as client-streaming (the wire is the same), so its
    code runs as the call starts rather than once the request message is in: over the cap, the call is refused
    with RESOURCE_EXHAUSTED before its message is read (as grpc's own ``maximum_concurrent_rpcs`` would, but
    counted); otherwise it reads the one message and runs the method as before. A call whose message never
    arrives and that is then cancelled was refused by gRPC for a message over ``grpc.max_receive_message_length``
    (RESOURCE_EXHAUSTED, sent by gRPC itself) or cancelled by its client first: gRPC does not tell the two apart,
    so both count as ``message_too_large`` (a client cancelling before its message is sent is rare; one whose
    deadline passed, or was within ``DEADLINE_SLACK_S``, is not counted)."""

    NO_MESSAGE_WAIT_S = 0.05
    """After a call ended without a message: how long to wait for gRPC to cancel it (it does at once when it
    refused the message) before taking it for a client that sent none."""

    DEADLINE_SLACK_S = 0.25
    """A call cancelled within this of its deadline ended by its deadline, not by a refused message."""

    def __init__(self, limits: ConnectionLimits, refusals: Counter):
        self.cap, self.refusals = limits.grpc_max_concurrent_rpcs, refusals
        self.active = 0
        self._wrapped: dict[str, tuple] = {}

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = grpc.stream_unary_rpc_method_handler(self._unary(handler.unary_unary),
                                                       request_deserializer=handler.request_deserializer,
                                                       response_serializer=handler.response_serializer)
        self._wrapped[details.method] = (handler, wrapped)  # the same inner handler each call, but for refusals
        return wrapped

    def _unary(self, inner):
        async def limited(request_iterator, context):
            if self.active >= self.cap:
                self.refusals[("grpc", "concurrent_rpcs")] += 1
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"too many concurrent RPCs (at most {self.cap}); retry later")
            self.active += 1
            try:
                request = await context.read()
                if request is grpc.aio.EOF:
                    await self._no_message(context)
                return await inner(request, context)
            finally:
                self.active -= 1

        return limited

    async def _no_message(self, context) -> None:
        try:
            await asyncio.sleep(self.NO_MESSAGE_WAIT_S)
        except asyncio.CancelledError:
            left = context.time_remaining()  # a client's deadline cancels the call a moment before the server's
            if left is None or left > self.DEADLINE_SLACK_S:
                self.refusals[("grpc", "message_too_large")] += 1
            raise
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no request message: a unary call sends exactly one")


# -- the command line (superserve serve): flags from the dataclass, each default written once ---------------
def add_arguments(parser) -> None:
    d = ConnectionLimits
    g = parser.add_argument_group("front-end limits (slow and idle clients)")
    g.add_argument("--max-connections", type=int, default=d.max_connections,
                   help="HTTP connections open at once; one more gets 503 and is closed (0: half the descriptor "
                   f"limit, at most 4096; here {default_max_connections()})")
    g.add_argument("--header-timeout-s", type=float, default=d.header_timeout_s,
                   help="an HTTP request head must arrive within this (from its first byte, or from the "
                   "connection's opening), else 408 and close; also bounds the TLS handshake")
    g.add_argument("--body-timeout-s", type=float, default=d.body_timeout_s,
                   help="an HTTP request body must arrive within this after its head, else 408 and close")
    g.add_argument("--keepalive-timeout-s", type=float, default=d.keepalive_timeout_s,
                   help="an idle keep-alive HTTP connection is closed after this")
    g.add_argument("--grpc-max-concurrent-rpcs", type=int, default=d.grpc_max_concurrent_rpcs,
                   help="gRPC calls in progress at once; beyond: RESOURCE_EXHAUSTED at once")


def from_args(args) -> ConnectionLimits:
    return ConnectionLimits(max_connections=args.max_connections, header_timeout_s=args.header_timeout_s,
                            body_timeout_s=args.body_timeout_s, keepalive_timeout_s=args.keepalive_timeout_s,
                            grpc_max_concurrent_rpcs=args.grpc_max_concurrent_rpcs)
