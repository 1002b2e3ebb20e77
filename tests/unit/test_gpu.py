"""The supernet on a CUDA device, as Triton runs it for a KIND_GPU instance (backends/python_supernet/model.py
passes ``cuda:<device id>``): the same answers as on the CPU. Marked ``gpu``: skipped where torch sees no CUDA."""

from __future__ import annotations

import numpy as np
import pytest

from superserve.supernet.serving import SupernetRunner

pytestmark = pytest.mark.gpu


def test_every_pareto_subnet_answers_on_cuda_as_on_the_cpu(weights_path):
    cpu, gpu = SupernetRunner(weights_path, "cpu"), SupernetRunner(weights_path, "cuda:0")
    x = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
    for name in cpu.pareto:
        cfg = cpu.resolve(name)
        want, got = cpu.run(cfg, [x]).logits, gpu.run(cfg, [x]).logits
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3, err_msg=name)
        assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99, name
