"""Which deployments may serve several models (``serve --models``): fixed and managed workers (``--autoscale``,
``--ray``) may; policy infaas (one variant model per subnet of a single model) may not, with a clear message."""

from __future__ import annotations

import pytest

from superserve.scheduler.sidecar.cluster import ClusterConfig
from superserve.scheduler.sidecar.server import ServeConfig

MODELS = ("supernet", "vit")


def test_managed_workers_serve_several_models():
    cfg = ServeConfig(models=MODELS, cluster=ClusterConfig(workers=1))
    assert cfg.models == MODELS and cfg.cluster.workers == 1


def test_policy_infaas_with_several_models_is_refused_naming_why():
    with pytest.raises(ValueError, match=r"several models \(--models\).*not with policy infaas.*variant model"):
        ServeConfig(models=MODELS, policy="infaas")
    with pytest.raises(ValueError, match="not policy infaas"):
        ServeConfig(models=MODELS, policy="infaas", cluster=ClusterConfig(workers=1))


def test_ray_workers_load_every_served_model():
    ray_workers = pytest.importorskip(
        "superserve.scheduler.sidecar.ray_workers", reason="Ray is not installed (the extra superserve-triton[ray])"
    )
    assert ray_workers.RayWorkersConfig().models == ("supernet",)
    with pytest.raises(ValueError, match="at least one model"):
        ray_workers.RayWorkersConfig(models=())


def test_a_gpu_worker_gets_every_served_model_on_its_gpu():
    pytest.importorskip("ray", reason="the extra superserve-triton[ray] is not installed")
    import shutil

    from superserve.scheduler import paths
    from superserve.scheduler.sidecar.ray_workers import gpu_repository

    root = gpu_repository(paths.model_repository(), MODELS)
    try:
        assert sorted(p.name for p in root.iterdir()) == sorted(MODELS)
        for m in MODELS:
            text = (root / m / "config.pbtxt").read_text()
            assert "KIND_GPU" in text and "KIND_CPU" not in text, m
            assert "KIND_CPU" in (paths.model_repository() / m / "config.pbtxt").read_text(), "source untouched"
    finally:
        shutil.rmtree(root)


def test_rows_dispatched_are_split_over_the_models_by_the_workers_count():
    from superserve.scheduler.sidecar.scaling_loop import split_rows

    # one model: the engine's count, whatever the workers saw (warm-ups included)
    assert split_rows(100, {"supernet": 101}, "supernet") == {"supernet": 100}
    assert split_rows(100, {"vit": 0}, "vit") == {"vit": 100}
    # several: in proportion, adding up to the engine's count
    assert split_rows(100, {"supernet": 30, "vit": 10}, "supernet") == {"supernet": 75, "vit": 25}
    parts = split_rows(10, {"supernet": 1, "vit": 1, "ofa": 1}, "supernet")
    assert sum(parts.values()) == 10 and sorted(parts.values()) == [3, 3, 4]
    # no call seen yet (the interval's batches still starting): the default model's
    assert split_rows(8, {"supernet": 0, "vit": 0}, "supernet") == {"supernet": 8, "vit": 0}
