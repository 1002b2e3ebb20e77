"""Issue 12, item 4: Triton's own ports are not a door for clients. Real `superserve serve` with an embedded
tritonserver, and a real tritonserver with explicit model control: Triton listens on loopback only whatever
`serve --host` is, and its model-repository API (unload, load with file overrides) refuses clients."""
from __future__ import annotations

import base64
import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from superserve.client.soak_bench import children_of
from superserve.scheduler import paths
from superserve.scheduler.sidecar import hidden_key
from superserve.scheduler.sidecar.server import serve_subprocess
from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess
from tests.conftest import free_ports


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, from /proc/net/tcp{,6} (no traffic sent)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A: LISTEN
                continue
            addr_hex, port_hex = f[1].split(":")
            raw = bytes.fromhex(addr_hex)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian words
            addr = socket.inet_ntop(family, raw)
            out.add((addr.removeprefix("::ffff:") if "." in addr else addr, int(port_hex, 16)))  # v4-mapped
    return out


def children(ppid: int, name: str) -> list[int]:
    return [pid for pid, comm in children_of(ppid) if comm == name]


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def sidecar_infer(grpc_url: str) -> str:
    g = grpcclient.InferenceServerClient(grpc_url)
    x = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
    x.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    r = g.infer("supernet", [x], parameters={"slo_ms": 2000})
    return json.loads(r.as_numpy("INFO")[0][0])["subnet"]


# A load with file overrides: what would put code into the Python backend if the API were open.
EVIL_MODEL = base64.b64encode(b"raise SystemExit('injected')\n").decode()
EVIL_LOAD = {"parameters": {"config": json.dumps({"backend": "python"}), "file:1/model.py": EVIL_MODEL}}


def test_serve_on_every_interface_keeps_triton_on_loopback_and_its_model_control_closed(tmp_path, weights_path):
    http, grpc, th, tg, tm = free_ports(5)
    profile = sorted((paths.repo_root() / "profiles").glob("*.json"))[0]
    args = ["--host", "0.0.0.0", "--insecure-public", "--http-port", str(http), "--grpc-port", str(grpc),
            "--profile", str(profile),
            "--triton-http-port", str(th), "--triton-grpc-port", str(tg), "--triton-metrics-port", str(tm),
            "--triton-log-file", str(tmp_path / "triton.log")]
    with serve_subprocess(args, str(tmp_path / "serve.log")) as proc:
        tritons = children(proc.pid, "tritonserver")
        assert len(tritons) == 1, tritons
        triton = tritons[0]
        # The sidecar took --host 0.0.0.0 (so the test tells the two apart); Triton stayed on 127.0.0.1.
        wide = {port for addr, port in listening(proc.pid) if addr in ("0.0.0.0", "::")}
        assert {http, grpc} <= wide
        socks = listening(triton)
        assert {("127.0.0.1", th), ("127.0.0.1", tg), ("127.0.0.1", tm)} <= socks, socks
        assert all(addr in ("127.0.0.1", "::1") for addr, _ in socks), socks

        # Model control, from a client on the same host: refused on both protocols, with or without a guess
        # at the header, and with what Triton's command line holds where the key goes (a placeholder: the key
        # itself never appears there, hidden_key.py; test_triton_key_and_lifetime.py tries the real key).
        base = f"http://127.0.0.1:{th}/v2/repository"
        for headers in (None, {"superserve-control": "guess"}):
            status, body = post(f"{base}/models/supernet/unload", {}, headers)
            assert status == 403 and "restricted" in body, (status, body)
            status, body = post(f"{base}/models/evil/load", EVIL_LOAD, headers)
            assert status == 403, (status, body)
            status, _ = post(f"{base}/index", {}, headers)
            assert status == 403
        key = next(a for a in cmdline(triton) if a.startswith("--http-restricted-api=")).rsplit("=", 1)[1]
        assert key == hidden_key.PLACEHOLDER, "the control key is on Triton's command line"
        status, body = post(f"{base}/models/supernet/unload", {}, {"superserve-control": key})
        assert status == 403 and "restricted" in body, (status, body)
        status, body = post(f"{base}/models/evil/load", EVIL_LOAD, {"superserve-control": key})
        assert status == 403, (status, body)
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{tg}")
        with pytest.raises(InferenceServerException, match="restricted"):
            g.unload_model("supernet")
        with pytest.raises(InferenceServerException, match="restricted"):
            g.load_model("evil", config=json.dumps({"backend": "python"}),
                         files={"file:1/model.py": b"raise SystemExit('injected')\n"})
        with pytest.raises(InferenceServerException, match="restricted"):
            g.get_model_repository_index()
        with pytest.raises(InferenceServerException, match="restricted"):
            g.unload_model("supernet", headers={"triton-grpc-protocol-superserve-control": key})
        # Nothing moved: the supernet is still loaded and the scheduler serves.
        assert g.is_model_ready("supernet") and not g.is_model_ready("evil")
        assert sidecar_infer(f"127.0.0.1:{grpc}")
        assert "evil" not in (tmp_path / "triton.log").read_text()


def test_explicit_model_control_answers_only_the_launchers_key(tmp_path, weights_path):
    """The INFaaS path (explicit model control): the sidecar's key unlocks the repository API, nothing else does."""
    http, grpc, metrics = free_ports(3)
    with TritonProcess(TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, models=("supernet",),
                                    explicit=True, log_file=str(tmp_path / "triton.log"))) as triton:
        g = grpcclient.InferenceServerClient(triton.cfg.grpc_url)
        base = f"http://{triton.cfg.http_url}/v2/repository"
        key = triton.control_key
        wrong = key[:-1] + ("y" if key.endswith("x") else "x")  # never the key itself (1 run in 64 it ends in x)
        for headers in (None, {"superserve-control": wrong}):
            status, body = post(f"{base}/models/supernet/unload", {}, headers)
            assert status == 403 and "restricted" in body, (headers, status, body)
            status, _ = post(f"{base}/models/evil/load", EVIL_LOAD, headers)
            assert status == 403
        with pytest.raises(InferenceServerException, match="restricted"):
            g.unload_model("supernet", headers={"triton-grpc-protocol-superserve-control": "guess"})
        assert g.is_model_ready("supernet")
        assert triton.control_key not in " ".join(cmdline(triton.proc.pid))
        # The launcher's own key works (over both protocols), which is what VariantWorker relies on.
        index = g.get_model_repository_index(headers=triton.control_headers("grpc"), as_json=True)
        assert {"name": "supernet", "version": "1", "state": "READY"} in index["models"]
        status, body = post(f"{base}/index", {}, triton.control_headers("http"))
        assert status == 200 and "supernet" in body
        g.unload_model("supernet", headers=triton.control_headers("grpc"))
        g.load_model("supernet", headers=triton.control_headers("grpc"))
        assert g.is_model_ready("supernet")
