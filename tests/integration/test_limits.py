"""scheduler/sidecar/limits.py on real loopback sockets (an in-process aiohttp app and grpc.aio server, no Triton):
the HTTP connection cap refuses cleanly with 503, slow heads and bodies are cut with 408, keep-alive
requests are re-timed, ordinary requests are untouched; the gRPC settings are accepted by grpc.aio."""
from __future__ import annotations

import asyncio
import time
from collections import Counter

import grpc
import pytest
from aiohttp import web

from superserve.scheduler.sidecar.limits import (ConnectionLimits, GrpcLimits, LimitedTCPSite, default_max_connections,
                                         grpc_server_kwargs, http_runner_kwargs)
from tests.conftest import free_ports


async def serve_app(limits: ConnectionLimits):
    async def ok(request):
        body = await request.read()
        return web.json_response({"bytes": len(body)})

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_post("/ok", ok)
    runner = web.AppRunner(app, access_log=None, **http_runner_kwargs(limits))
    await runner.setup()
    site = LimitedTCPSite(runner, "127.0.0.1", free_ports(1)[0], limits=limits)
    await site.start()
    return runner, site


async def connect(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


async def exchange(port: int, raw: bytes, reader_writer=None) -> bytes:
    reader, writer = reader_writer or await connect(port)
    writer.write(raw)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


GET = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"


async def closed_within(reader, seconds: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed."""
    t, data = time.monotonic(), b""
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), seconds)
        if not chunk:
            return data, time.monotonic() - t
        data += chunk


def test_connections_over_the_cap_get_503_and_the_others_are_served():
    async def go():
        runner, site = await serve_app(ConnectionLimits(max_connections=3))
        try:
            idle = [await connect(site.port) for _ in range(3)]
            await asyncio.sleep(0.05)
            assert site.guard.open == 3
            reader, writer = await connect(site.port)
            writer.write(GET)
            data, _ = await closed_within(reader, 5)
            assert data.startswith(b"HTTP/1.1 503") and b"too many connections (at most 3)" in data
            assert site.guard.refused == 1 and site.guard.refusals == {("http", "connections"): 1}
            idle[0][1].close()  # one frees up: a new connection is served as usual
            await asyncio.sleep(0.1)
            assert b'"bytes": 0' in await exchange(site.port, GET)
            for _, w in idle[1:]:
                w.close()
        finally:
            await runner.cleanup()

    asyncio.run(go())


def test_slow_heads_and_bodies_are_cut_with_408_while_normal_requests_pass():
    async def go():
        runner, site = await serve_app(ConnectionLimits(header_timeout_s=0.4, body_timeout_s=0.4))
        try:
            # Opened and silent; a half-sent head (the 150 s case); a head with a body that stalls.
            silent = await connect(site.port)
            half = await connect(site.port)
            half[1].write(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
            body = await connect(site.port)
            body[1].write(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
            # Meanwhile a slow but steady client: head in pieces within the timeout, then a full body.
            steady = await connect(site.port)
            for piece in (b"POST /ok HTTP/1.1\r\n", b"Host: x\r\nContent-", b"Length: 5\r\n\r\nab"):
                steady[1].write(piece)
                await asyncio.sleep(0.1)
            assert b'"bytes": 5' in await exchange(site.port, b"cde", steady)
            for (reader, _), what in ((silent, "head"), (half, "head"), (body, "body")):
                data, took = await closed_within(reader, 3)
                assert data.startswith(b"HTTP/1.1 408") and f"request {what} not complete".encode() in data
                assert took < 1.5
            assert site.guard.timed_out == 3
            assert site.guard.refusals == {("http", "head_timeout"): 2, ("http", "body_timeout"): 1}
            # Keep-alive: the steady connection is re-timed for its next request, and cut when it stalls.
            assert b'"bytes": 0' in await exchange(site.port, GET, steady)
            steady[1].write(b"GET /ok HTTP/1.1\r\n")
            data, took = await closed_within(steady[0], 3)
            assert data.startswith(b"HTTP/1.1 408") and took < 1.5
        finally:
            await runner.cleanup()

    asyncio.run(go())


def test_a_head_larger_than_the_cap_is_refused():
    async def go():
        runner, site = await serve_app(ConnectionLimits(max_head_bytes=1024))
        try:
            reader, writer = await connect(site.port)
            writer.write(b"GET /ok HTTP/1.1\r\nX-Pad: " + b"a" * 2000)
            data, _ = await closed_within(reader, 3)
            assert data.startswith(b"HTTP/1.1 431")
            assert site.guard.refusals == {("http", "head_too_large"): 1}
        finally:
            await runner.cleanup()

    asyncio.run(go())


def test_grpc_settings_are_accepted_by_a_real_server_and_limits_are_validated():
    async def go():
        kw = grpc_server_kwargs(ConnectionLimits(grpc_max_concurrent_rpcs=8),
                                [("grpc.max_receive_message_length", 1 << 20)])
        assert "maximum_concurrent_rpcs" not in kw  # GrpcLimits caps calls, and counts what it refuses
        assert ("grpc.max_receive_message_length", 1 << 20) in kw["options"]
        server = grpc.aio.server(**kw)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            await asyncio.wait_for(ch.channel_ready(), 5)
        await server.stop(0)

    asyncio.run(go())
    assert 16 <= default_max_connections() <= 4096
    with pytest.raises(ValueError):
        ConnectionLimits(header_timeout_s=0)
    with pytest.raises(ValueError):
        ConnectionLimits(max_connections=-1)


def test_the_guard_reads_the_decrypted_stream_under_tls(tmp_path):
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False

    async def go():
        async def ok(request):
            return web.json_response({"bytes": len(await request.read())})

        app = web.Application()
        app.router.add_post("/ok", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = LimitedTCPSite(runner, "127.0.0.1", free_ports(1)[0], limits=ConnectionLimits(header_timeout_s=0.4),
                              ssl_context=server_ctx)
        await site.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port, ssl=client_ctx)
            post = b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            assert b'"bytes": 3' in await exchange(site.port, post, (reader, writer))
            writer.write(b"POST /ok HTTP/1.1\r\n")
            data, took = await closed_within(reader, 3)
            assert data.startswith(b"HTTP/1.1 408") and took < 1.5
        finally:
            await runner.cleanup()

    asyncio.run(go())


def test_grpc_refusals_over_the_call_cap_and_the_message_size_are_counted():
    """GrpcLimits on a real grpc.aio server: a call over the cap gets RESOURCE_EXHAUSTED before its message is
    read, a message over gRPC's size limit too (refused by gRPC itself), both counted by reason; calls within the
    limits are served and not counted, and a client-streaming call with no message is no size refusal."""
    async def go():
        refusals, release, started = Counter(), asyncio.Event(), []

        async def slow(request, context):
            started.append(len(request))
            await release.wait()
            return request

        limits = ConnectionLimits(grpc_max_concurrent_rpcs=2)
        server = grpc.aio.server(interceptors=[GrpcLimits(limits, refusals)],
                                 **grpc_server_kwargs(limits, [("grpc.max_receive_message_length", 1 << 20)]))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "t.S", {"Slow": grpc.unary_unary_rpc_method_handler(slow)}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                                 options=[("grpc.max_send_message_length", 8 << 20)]) as ch:
                call = ch.unary_unary("/t.S/Slow")
                held = [asyncio.ensure_future(call(b"x" * 10, timeout=10)) for _ in range(2)]
                while len(started) < 2:
                    await asyncio.sleep(0.01)
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await call(b"y", timeout=10)
                assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "too many concurrent RPCs (at most 2)" in e.value.details()
                assert refusals == {("grpc", "concurrent_rpcs"): 1} and started == [10, 10]
                release.set()
                assert await asyncio.gather(*held) == [b"x" * 10] * 2
                assert await call(b"z" * 1000, timeout=10) == b"z" * 1000  # within the limits: served, not counted
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await call(b"w" * (2 << 20), timeout=10)
                assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                for _ in range(100):
                    if refusals[("grpc", "message_too_large")]:
                        break
                    await asyncio.sleep(0.01)
                assert refusals == {("grpc", "concurrent_rpcs"): 1, ("grpc", "message_too_large"): 1}
                stream = ch.stream_unary("/t.S/Slow")(timeout=10)  # no message at all: the client's mistake
                await stream.done_writing()
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stream
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert refusals == {("grpc", "concurrent_rpcs"): 1, ("grpc", "message_too_large"): 1}
                assert await call(b"ok", timeout=10) == b"ok"
        finally:
            await server.stop(0)

    asyncio.run(go())
