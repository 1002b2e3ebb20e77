"""Issue 12 item 5, TLS: the real `superserve serve --tls-cert/--tls-key [--tls-client-ca]` in front of a real
Triton, with certificates made for the test by the openssl command (in a temporary folder; no key is committed).
Both protocols speak TLS only; with a client CA, a client without a certificate the CA signed is refused, and
mutual TLS lets serve bind a non-loopback host without a token."""
from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from superserve.scheduler import paths
from superserve.scheduler.sidecar.server import serve_subprocess
from tests.conftest import free_ports

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
PROFILE = str(sorted((paths.repo_root() / "profiles").glob("*.json"))[0])
TOKEN = "tls-test-token-" + "5b1e" * 8
HEADERS = {"authorization": f"Bearer {TOKEN}"}


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_certs(d) -> dict:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by the CA (P-256, 1 day)."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "1",
            "-subj", "/CN=superserve test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(ext)
        openssl("req", *key, "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
                "-subj", f"/CN=superserve test {name}")
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                "-CAcreateserial", "-out", str(d / f"{name}.pem"), "-days", "1", "-extfile", str(d / f"{name}.ext"))
    return {k: str(d / f"{k}.pem") for k in ("ca", "server", "client")} | {
        "server_key": str(d / "server.key"), "client_key": str(d / "client.key")}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def start(triton, tmp, certs, *extra):
    http, grpc_port = free_ports(2)
    args = ["--http-port", str(http), "--grpc-port", str(grpc_port), "--worker", triton.cfg.grpc_url,
            "--profile", PROFILE, "--tls-cert", certs["server"], "--tls-key", certs["server_key"], *extra]
    return serve_subprocess(args, str(tmp / "serve.log")), f"127.0.0.1:{http}", f"127.0.0.1:{grpc_port}"


def image() -> np.ndarray:
    return np.random.default_rng(1).random((1, 1, 28, 28), dtype=np.float32)


def http_infer(client, headers=None):
    x = httpclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
    x.set_data_from_numpy(image(), binary_data=True)
    return client.infer("supernet", [x], parameters={"slo_ms": 2000}, headers=dict(headers) if headers else None)


def grpc_infer(client, headers=None):
    x = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
    x.set_data_from_numpy(image())
    return client.infer("supernet", [x], parameters={"slo_ms": 2000}, headers=headers, client_timeout=20)


def test_tls_on_both_protocols_with_a_token(triton_plain, tmp_path, certs):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    ctx, http, grpc_url = start(triton_plain, tmp_path, certs, "--token-file", str(token_file),
                                "--header-timeout-s", "2")
    with ctx:
        # HTTPS with tritonclient, verifying the server against the test CA; the token still applies.
        client = httpclient.InferenceServerClient(http, ssl=True, ssl_options={"ca_certs": certs["ca"]},
                                                  network_timeout=20)
        assert client.is_server_ready()
        with pytest.raises(InferenceServerException) as e:
            http_infer(client)
        assert str(e.value.status()) == "401"
        assert http_infer(client, HEADERS).as_numpy("LOGITS").shape == (1, 10)
        # No plain HTTP on that port, and a client that does not trust the CA refuses the server.
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://{http}/v2/health/live", timeout=10).read()
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"https://{http}/v2/health/live", timeout=10)
        trusted = ssl.create_default_context(cafile=certs["ca"])
        with urllib.request.urlopen(f"https://{http}/v2/health/live", timeout=10, context=trusted) as r:
            assert r.status == 200
        # gRPC over TLS with tritonclient; an insecure channel gets nowhere.
        g = grpcclient.InferenceServerClient(grpc_url, ssl=True, root_certificates=certs["ca"])
        assert g.is_server_live()
        assert grpc_infer(g, HEADERS).as_numpy("LOGITS").shape == (1, 10)
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            grpcclient.InferenceServerClient(grpc_url).is_server_live(client_timeout=5)
        # A client that connects and never starts the handshake is dropped after the header timeout.
        with socket.create_connection(("127.0.0.1", int(http.rsplit(":", 1)[1])), timeout=10) as s:
            t0 = time.monotonic()
            assert s.recv(1) == b""
            assert time.monotonic() - t0 < 8


def test_mutual_tls_refuses_clients_without_a_certificate(triton_plain, tmp_path, certs):
    # Client certificates authenticate callers, so a public host needs no token (nor --insecure-public).
    ctx, http, grpc_url = start(triton_plain, tmp_path, certs, "--tls-client-ca", certs["ca"], "--host", "0.0.0.0")
    with ctx:
        anonymous = ssl.create_default_context(cafile=certs["ca"])
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            urllib.request.urlopen(f"https://{http}/v2/health/live", timeout=10, context=anonymous).read()
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            grpcclient.InferenceServerClient(grpc_url, ssl=True, root_certificates=certs["ca"]).is_server_live(
                client_timeout=5)

        client = httpclient.InferenceServerClient(
            http, ssl=True, network_timeout=20,
            ssl_options={"ca_certs": certs["ca"], "certfile": certs["client"], "keyfile": certs["client_key"]})
        assert http_infer(client).as_numpy("LOGITS").shape == (1, 10)
        g = grpcclient.InferenceServerClient(grpc_url, ssl=True, root_certificates=certs["ca"],
                                             private_key=certs["client_key"], certificate_chain=certs["client"])
        assert grpc_infer(g).as_numpy("LOGITS").shape == (1, 10)


def test_bad_tls_files_are_refused_at_start(tmp_path, certs):
    http, grpc_port = free_ports(2)
    import sys
    base = [sys.executable, "-m", "superserve.scheduler.cli", "serve", "--http-port", str(http),
            "--grpc-port", str(grpc_port), "--worker", "127.0.0.1:1"]
    for extra, expect in ((["--tls-cert", certs["server"]], "both --tls-cert and --tls-key"),
                          (["--tls-cert", certs["server"], "--tls-key", certs["client_key"]], "TLS files"),
                          (["--tls-cert", str(tmp_path / "none.pem"), "--tls-key", certs["server_key"]],
                           "No such file")):
        r = subprocess.run(base + extra, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and expect in r.stderr, (extra, r.stderr)
