"""Two supernets of different families served side by side by one real tritonserver: the CNN
(``supernet``) and the transformer (``vit``), each its own model_repository entry naming its family
and weights. Both protocols, results equal to the in-process forward, per-model shape errors; and a
config that names the wrong family, or dims the weights do not have, fails to load with a message
naming the weights file and what differs."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from superserve.scheduler import paths
from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess
from superserve.supernet.checkpoint import load_checkpoint
from tests.conftest import free_ports

MODELS = ("supernet", "vit")
RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Triton with explicit model control: both supernets loaded at start; the tests load bad ones."""
    tmp = tmp_path_factory.mktemp("families")
    repo = tmp / "repo"
    for name in MODELS:
        shutil.copytree(paths.model_repository() / name, repo / name)
    http, grpc, metrics = free_ports(3)
    proc = TritonProcess(TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, model_repository=str(repo),
                                      models=MODELS, explicit=True, log_file=str(tmp / "triton.log")))
    with proc:
        yield proc, repo, tmp / "triton.log"
    assert not proc.alive()


@pytest.fixture(scope="module")
def in_process():
    """{model: (network, metadata)} loaded from the weights each config names."""
    from superserve.scheduler.offline.model_config import model_weights

    out = {}
    for name in MODELS:
        text = (paths.model_repository() / name / "config.pbtxt").read_text()
        out[name] = load_checkpoint(paths.backend_dir() / model_weights(text))
    return out


def expected(model, subnet, x):
    with torch.inference_mode():
        return model(torch.from_numpy(x), model.space.parse(subnet)).numpy()


def infer(protocol, url, model, x, subnet):
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(url)
    try:
        inp = mod.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        r = client.infer(model, [inp], parameters={"subnet": subnet} if subnet else None)
        return r.as_numpy("LOGITS"), [json.loads(v) for v in r.as_numpy("INFO").ravel()]
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_both_supernets_answer_as_in_process(two_models, in_process, protocol):
    triton = two_models[0]
    url = triton.cfg.http_url if protocol == "http" else triton.cfg.grpc_url
    for name in MODELS:
        model, meta = in_process[name]
        pareto = meta["pareto"]
        for subnet in (None, pareto[0], pareto[len(pareto) // 2]):
            x = RNG.random((3, *model.input_spec.dims), dtype=np.float32)
            logits, info = infer(protocol, url, name, x, subnet)
            served = subnet or pareto[-1]
            np.testing.assert_allclose(logits, expected(model, served, x), atol=1e-4, rtol=1e-4)
            assert [i["subnet"] for i in info] == [served] * 3


def test_metadata_has_each_family_dims_and_names_from_the_other_family_are_refused(two_models, in_process):
    triton = two_models[0]
    client = grpcclient.InferenceServerClient(triton.cfg.grpc_url)
    try:
        for name in MODELS:
            model, meta = in_process[name]
            md = client.get_model_metadata(name, as_json=True)
            assert [int(d) for d in md["inputs"][0]["shape"]] == [-1, *model.input_spec.dims]
            assert [int(d) for d in md["outputs"][0]["shape"]] == [-1, *model.output_spec.dims]
        cnn_subnet, vit_subnet = in_process["supernet"][1]["pareto"][0], in_process["vit"][1]["pareto"][0]
        x = RNG.random((1, 1, 28, 28), dtype=np.float32)
        for model, subnet in (("vit", cnn_subnet), ("supernet", vit_subnet)):
            inp = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
            inp.set_data_from_numpy(x)
            with pytest.raises(InferenceServerException, match=r"parameter 'subnet'.*subnet name"):
                client.infer(model, [inp], parameters={"subnet": subnet})
        inp = grpcclient.InferInput("INPUT", [1, 1, 28, 27], "FP32")
        inp.set_data_from_numpy(x[..., :27].copy())
        with pytest.raises(InferenceServerException, match=r"(?i)shape.*\[-1,1,28,28\]"):
            client.infer("vit", [inp])
    finally:
        client.close()


def write_bad(repo, name, family=None, dims=None):
    text = (repo / "vit" / "config.pbtxt").read_text().replace('name: "vit"', f'name: "{name}"')
    if family:
        text = text.replace('string_value: "elastic-vit"', f'string_value: "{family}"')
    if dims:
        text = text.replace("dims: [ 1, 28, 28 ]", f"dims: [ {dims} ]")
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(text)


@pytest.mark.parametrize("name,family,dims,message", [
    ("wrong-family", "elastic-cnn", None, r"vit\.pt: weights of family 'elastic-vit' \(per vit\.json\), but the "
                                          r"model config names family 'elastic-cnn'"),
    ("wrong-dims", None, "1, 32, 32", r"does not fit weights .*vit\.pt: input 'INPUT' dims \[1, 32, 32\] in the "
                                      r"config, \[1, 28, 28\] in the family's spec"),
])
def test_mismatched_config_fails_to_load_naming_the_weights(two_models, name, family, dims, message):
    triton, repo, log = two_models
    write_bad(repo, name, family, dims)
    client = grpcclient.InferenceServerClient(triton.cfg.grpc_url)
    try:
        with pytest.raises(InferenceServerException) as err:
            client.load_model(name, headers=triton.control_headers())
        assert not client.is_model_ready(name)
        assert client.is_model_ready("vit") and client.is_model_ready("supernet")  # the others keep serving
    finally:
        client.close()
    assert re.search(message, str(err.value)) or re.search(message, log.read_text()), (str(err.value), message)


@pytest.mark.skipif(importlib.util.find_spec("ofa") is None,
                    reason="the optional 'ofa' package is not installed (pip install 'superserve-triton[ofa]')")
def test_an_ofa_supernet_is_served_beside_them(two_models, tmp_path):
    """A Once-for-All MobileNetV3 (random weights in OFA's published form, 32x32 RGB) imported, given a
    config by add-model, loaded into the same Triton and answering both protocols as in process."""
    from superserve.scheduler.offline.model_config import add_model
    from superserve.supernet.ofa_adapter import OFASpace, import_checkpoint, ofa_modules

    triton, repo, _ = two_models
    OFAMobileNetV3, _ = ofa_modules()
    torch.manual_seed(0)
    net = OFAMobileNetV3(n_classes=10, dropout_rate=0.0, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                         depth_list=[2, 3, 4])
    torch.save({"state_dict": net.state_dict()}, tmp_path / "ofa_random.pth")
    sp = OFASpace()
    names = [sp.smallest.name, sp.largest.name]
    weights = tmp_path / "ofa.pt"
    import_checkpoint(tmp_path / "ofa_random.pth", weights, resolution=32, num_classes=10, subnets=names,
                      images=RNG.random((4, 3, 32, 32), dtype=np.float32))
    add_model("ofa-mobilenetv3", weights, name="ofa", repo=repo)
    client = grpcclient.InferenceServerClient(triton.cfg.grpc_url)
    try:
        client.load_model("ofa", headers=triton.control_headers())
        assert all(client.is_model_ready(m) for m in ("ofa", *MODELS))
    finally:
        client.close()
    model, _ = load_checkpoint(weights)
    x = RNG.random((2, 3, 32, 32), dtype=np.float32)
    # A random MobileNetV3 is ill-conditioned (logits in the thousands): the order of float sums matters at
    # 1e-3, so the reference runs with the one intra-op thread the config gives the backend.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = {subnet: expected(model, subnet, x) for subnet in names}
    finally:
        torch.set_num_threads(threads)
    for protocol, url in (("http", triton.cfg.http_url), ("grpc", triton.cfg.grpc_url)):
        for subnet in names:
            logits, info = infer(protocol, url, "ofa", x, subnet)
            np.testing.assert_allclose(logits, want[subnet], atol=1e-4, rtol=1e-5)
            assert [i["subnet"] for i in info] == [subnet] * 2
