"""Who may call the scheduler (issue 12, item 5): an optional shared bearer token and TLS for both front ends.

- The token is checked on every inference and metadata route of both protocols: HTTP
  ``Authorization: Bearer <token>``, gRPC metadata ``authorization: Bearer <token>``, compared in constant
  time. Health (``/v2/health/*``, gRPC ServerLive/ServerReady) and ``/metrics`` stay open unless
  ``AuthConfig.protect_health``. A missing or wrong token gets HTTP 401 (``WWW-Authenticate: Bearer``) or
  gRPC UNAUTHENTICATED before any handler runs (no body or message is parsed, nothing reaches the engine), and is
  counted (``sched_auth_failures_total{protocol,reason}``).
- The token comes from a file (``--token-file``) or the environment (``SUPERSERVE_TOKEN``), never from a flag:
  anyone on the host can read a process's command line in ``/proc``.
- TLS for both protocols from PEM files; with a client CA, clients must present a certificate it signed (mTLS).

Like ``drain.py`` it sits in front of the front ends: an aiohttp middleware and a grpc.aio server interceptor,
installed outside the drain's (so the drain stays closest to the handlers).
"""
from __future__ import annotations

import hmac
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc
from aiohttp import web

log = logging.getLogger(__name__)

HTTP_OPEN = ("/v2/health/live", "/v2/health/ready", "/metrics")
GRPC_OPEN = ("/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady")
MIN_TOKEN_CHARS = 16
CHALLENGE = 'Bearer realm="superserve"'


class AuthError(ValueError):
    """A token or certificate setting that cannot be used (quoted, never the token itself)."""


@dataclass(frozen=True)
class AuthConfig:
    token: str | None = field(default=None, repr=False)
    """The shared bearer token; None: no authentication. Never logged or shown in repr."""
    protect_health: bool = False
    """Require the token on health routes and /metrics too (default: open, for probes and Prometheus)."""

    def __post_init__(self):
        if self.token is not None:
            check_token(self.token)


def check_token(token: str) -> None:
    if len(token) < MIN_TOKEN_CHARS:
        raise AuthError(f"the token has {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
                        "(e.g. `openssl rand -hex 32`)")
    if not all("!" <= c <= "~" for c in token):
        raise AuthError("the token must be printable ASCII without spaces (it travels in a header)")


def load_token(token_file: str | None, env_value: str | None) -> str | None:
    """The token from ``token_file`` (surrounding whitespace stripped) or from the environment variable's
    value; both given is an error (which one would win is a guess). Empty env value: no token."""
    if token_file and env_value:
        raise AuthError("the token is given twice (--token-file and SUPERSERVE_TOKEN); give one")
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise AuthError(f"--token-file {token_file}: {e.strerror or e}") from None
        if not token:
            raise AuthError(f"--token-file {token_file} is empty")
        check_token(token)
        return token
    if env_value and env_value.strip():
        check_token(env_value.strip())
        return env_value.strip()
    return None


@dataclass(frozen=True)
class TlsConfig:
    cert: str | None = None
    """PEM certificate chain of the server (both protocols)."""
    key: str | None = None
    """PEM private key of ``cert``."""
    client_ca: str | None = None
    """PEM CA bundle; given: every client must present a certificate it signed (mutual TLS)."""

    def __post_init__(self):
        if bool(self.cert) != bool(self.key):
            raise AuthError(f"TLS needs both --tls-cert and --tls-key (got cert {self.cert!r}, key {self.key!r})")
        if self.client_ca and not self.cert:
            raise AuthError("--tls-client-ca needs --tls-cert and --tls-key")

    @property
    def enabled(self) -> bool:
        return bool(self.cert)

    def _read(self, what: str, path: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as e:
            raise AuthError(f"{what} {path}: {e.strerror or e}") from None

    def http_context(self) -> ssl.SSLContext | None:
        if not self.enabled:
            return None
        for what, path in (("--tls-cert", self.cert), ("--tls-key", self.key), ("--tls-client-ca", self.client_ca)):
            if path:
                self._read(what, path)  # a clear error for a missing file
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert, self.key)
            if self.client_ca:
                ctx.load_verify_locations(cafile=self.client_ca)
                ctx.verify_mode = ssl.CERT_REQUIRED
        except ssl.SSLError as e:
            raise AuthError(f"TLS files {self.cert}, {self.key}, {self.client_ca}: {e}") from None
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def grpc_credentials(self) -> grpc.ServerCredentials | None:
        if not self.enabled:
            return None
        ca = self._read("--tls-client-ca", self.client_ca) if self.client_ca else None
        return grpc.ssl_server_credentials([(self._read("--tls-key", self.key), self._read("--tls-cert", self.cert))],
                                           root_certificates=ca, require_client_auth=ca is not None)


class Auth:
    """The token check shared by both front ends; ``on_refused(protocol, reason)`` counts refusals."""

    def __init__(self, cfg: AuthConfig, on_refused: Callable[[str, str], None] | None = None):
        self.cfg = cfg
        self.on_refused = on_refused
        self._expected = cfg.token.encode() if cfg.token else b""
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return bool(self._expected)

    def reason(self, header: str | None) -> str | None:
        """None if ``header`` (an Authorization value) carries the token; else why not: missing or invalid."""
        if not header:
            return "missing"
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return "invalid"
        # compare_digest on bytes: constant time in the token's content (only its length may show).
        return None if hmac.compare_digest(given.strip().encode("utf-8", "replace"), self._expected) else "invalid"

    def _refuse(self, protocol: str, reason: str, peer: str, route: str) -> None:
        self.refused += 1
        if self.on_refused is not None:
            self.on_refused(protocol, reason)
        log.warning("unauthenticated %s request from %s to %s: token %s", protocol, peer, route, reason)

    # -- HTTP ---------------------------------------------------------------------------------
    def http_middleware(self):
        open_paths = () if self.cfg.protect_health else HTTP_OPEN

        @web.middleware
        async def auth_middleware(request: web.Request, handler):
            if request.path in open_paths:
                return await handler(request)
            why = self.reason(request.headers.get("Authorization"))
            if why is None:
                return await handler(request)
            self._refuse("http", why, request.remote or "?", request.path[:100])
            return web.json_response({"error": f"unauthenticated: bearer token {why}"}, status=401,
                                     headers={"WWW-Authenticate": CHALLENGE})

        return auth_middleware

    # -- gRPC ---------------------------------------------------------------------------------
    def grpc_interceptor(self) -> grpc.aio.ServerInterceptor:
        return _GrpcAuth(self)


class _GrpcAuth(grpc.aio.ServerInterceptor):
    def __init__(self, auth: Auth):
        self.auth = auth
        self.open = () if auth.cfg.protect_health else GRPC_OPEN

    async def intercept_service(self, continuation, details):
        method = details.method
        if method in self.open:
            return await continuation(details)
        header = next((v for k, v in details.invocation_metadata or () if k == "authorization"), None)
        if isinstance(header, bytes):
            header = header.decode("utf-8", "replace")
        why = self.auth.reason(header)
        if why is None:
            return await continuation(details)
        # Refuse without looking up or running the real handler; the request message is never deserialized.
        auth = self.auth

        async def refuse(request_or_iterator, context):
            peer = context.peer() or "?"
            auth._refuse("grpc", why, peer, method[:100])
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"unauthenticated: bearer token {why}")

        handler = await continuation(details)
        if handler is None:
            return None
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(refuse)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)


# -- the command line (superserve serve) ----------------------------------------------------------
def add_arguments(parser) -> None:
    g = parser.add_argument_group("authentication and TLS (token from a file or SUPERSERVE_TOKEN, never a flag)")
    g.add_argument("--token-file", metavar="PATH",
                   help="require 'Authorization: Bearer <token>' (gRPC metadata 'authorization') on inference and "
                   "metadata routes; the token is this file's content (or env SUPERSERVE_TOKEN)")
    g.add_argument("--protect-health", action="store_true",
                   help="require the token on /v2/health/*, gRPC ServerLive/ServerReady and /metrics too")
    g.add_argument("--insecure-public", action="store_true",
                   help="allow a non-loopback --host without a token or --tls-client-ca "
                        "(only behind a trusted network)")
    g.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS and gRPC over TLS with this certificate chain")
    g.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    g.add_argument("--tls-client-ca", metavar="PEM",
                   help="mutual TLS: every client must present a certificate signed by this CA")


def from_args(args, env_token: str | None) -> AuthConfig:
    return AuthConfig(token=load_token(args.token_file, env_token), protect_health=args.protect_health)


def tls_from_args(args) -> TlsConfig:
    """The TLS settings, checked now (files readable, key matching the certificate), not at bind time."""
    tls = TlsConfig(cert=args.tls_cert, key=args.tls_key, client_ca=args.tls_client_ca)
    tls.http_context()
    return tls
