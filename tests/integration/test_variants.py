"""INFaaS variants in the real tritonserver: one model per Pareto subnet, loaded on demand under a
memory budget with explicit model control, least recently used unloaded first."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from superserve.scheduler.core.errors import InvalidInput
from superserve.scheduler.sidecar.triton_launcher import TritonConfig, TritonProcess
from superserve.scheduler.offline.variants import VariantWorker, build_variant_repository, load_variant_map
from superserve.supernet.subnets import SubnetConfig
from tests.conftest import free_ports

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def variant_triton(tmp_path_factory, weights_path):
    tmp = tmp_path_factory.mktemp("variants")
    root = tmp / "repo"
    variants = build_variant_repository(root, weights_path)
    http, grpc, metrics = free_ports(3)
    proc = TritonProcess(TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, model_repository=str(root),
                                      explicit=True, log_file=str(tmp / "triton.log")))
    with proc:
        yield proc, root, variants
    assert not proc.alive()


def test_repository_is_one_model_per_pareto_subnet_and_cached(variant_triton, supernet):
    _, root, variants = variant_triton
    _, meta = supernet
    assert list(variants) == meta["pareto"]
    assert list(variants.values()) == [f"variant_{i:02d}" for i in range(len(meta["pareto"]))]
    assert load_variant_map(root) == variants
    mtime = (root / "variant_00" / "1" / "subnet.pt").stat().st_mtime_ns
    assert build_variant_repository(root) == variants  # same weights: reused, nothing rewritten
    assert (root / "variant_00" / "1" / "subnet.pt").stat().st_mtime_ns == mtime


def expected_logits(model, name, x):
    with torch.inference_mode():
        return model(torch.from_numpy(x), SubnetConfig.parse(name)).numpy()


async def model_states(worker):
    index = await worker.client.get_model_repository_index(headers=worker.control_headers, as_json=True)
    return {m["name"]: m.get("state", "") for m in index["models"]}


@pytest.mark.slow
def test_worker_loads_on_demand_and_unloads_least_recently_used(variant_triton, supernet):
    triton, _, variants = variant_triton
    model, meta = supernet
    p = meta["pareto"]
    a, b, c = p[0], p[len(p) // 2], p[-1]
    accuracy = {r["name"]: r.get("test_accuracy", r["val_accuracy"]) for r in meta["subnets"]}

    async def go():
        w = VariantWorker(triton.cfg.grpc_url, variants, memory_budget=2, control_headers=triton.control_headers())
        try:
            assert await w.ready()
            assert w.loaded == frozenset()
            for name, want_loaded in ((a, {a}), (b, {a, b}), (c, {b, c})):
                x = RNG.random((3, 1, 28, 28), dtype=np.float32)
                logits, infos = await w.infer(x, name, timeout_s=30)
                np.testing.assert_allclose(logits, expected_logits(model, name, x), rtol=1e-4, atol=1e-4)
                assert [i["subnet"] for i in infos] == [name] * 3
                assert all(i["accuracy"] == accuracy[name] for i in infos)
                assert w.loaded == frozenset(want_loaded) and w.last_call_loaded
            # The third load unloaded the least recently used variant (a), in Triton too.
            states = await model_states(w)
            assert states[variants[b]] == "READY" and states[variants[c]] == "READY"
            assert states[variants[a]] != "READY" and not await w.client.is_model_ready(variants[a])
            assert sum(s == "READY" for s in states.values()) == 2
            # A loaded variant serves without a load; the load record is what the benchmark reports.
            logits, infos = await w.infer(RNG.random((1, 1, 28, 28), dtype=np.float32), b, timeout_s=30)
            assert infos[0]["subnet"] == b and not w.last_call_loaded
            assert [e.subnet for e in w.load_events] == [a, b, c]
            assert [e.evicted for e in w.load_events] == [(), (), (a,)]
            assert all(s > 0 for s in w.load_seconds) and w.unloads[a] == 1
            stats = w.load_stats()
            assert stats["loads"] == 3 and stats["unloads"] == 1 and stats["load_seconds_total"] > 0
            # Errors map like TritonWorker's: a bad request is InvalidInput, with no load attempted.
            with pytest.raises(InvalidInput, match="no variant model"):
                await w.infer(RNG.random((1, 1, 28, 28), dtype=np.float32), "d9.9.9-w10.10.10", timeout_s=30)
            with pytest.raises(InvalidInput):
                await w.infer(RNG.random((1, 1, 27, 28), dtype=np.float32), c, timeout_s=30)
            assert len(w.load_events) == 3 and w.loaded == frozenset({b, c})
            # A second worker on the same server learns what is loaded from Triton.
            w2 = VariantWorker(triton.cfg.grpc_url, variants, memory_budget=2, control_headers=triton.control_headers())
            assert await w2.ready() and w2.loaded == frozenset({b, c})
            await w2.warm([c, b])  # already loaded: no load, only the recency order changes
            assert w2.load_events == [] and w2.loaded == frozenset({b, c})
            # While a variant loads (seconds) the worker still answers its readiness probe: Triton's own
            # readiness is false during any load, which used to take the worker out of rotation each time.
            loading = asyncio.create_task(w2.warm([a]))
            await asyncio.sleep(1.0)
            assert not loading.done() and not await w2.client.is_server_ready()
            assert await w2.ready()
            await loading
            assert a in w2.loaded
            await w2.close()
            return [round(s, 2) for s in w.load_seconds]
        finally:
            await w.close()

    seconds = asyncio.run(go())
    print(f"variant load seconds: {seconds}")
