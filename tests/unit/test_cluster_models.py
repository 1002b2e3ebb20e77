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
