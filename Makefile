# The README's two commands: `make demo` (set up, run Triton + a short load) and `make test`; and the developer's
# loop: `make unit` (the fast unit tests) and `make lint` (ruff, and mypy strict on the core; CI runs it first).
.PHONY: setup demo test unit lint
setup:
	bash scripts/setup.sh
demo: setup
	.venv/bin/superserve demo
test: setup
	.venv/bin/python -m pytest -q
# Every test not marked integration, slow or gpu (pyproject.toml): under 30 s on 2 cores.
unit: setup
	.venv/bin/python -m pytest -q -m "not integration and not slow and not gpu" tests/unit
# Files kept in `ruff format`'s style. New files join at once; old ones as they are reformatted one at a time, so
# that no branch in flight has a whole-tree reformat to merge.
FORMATTED := client/results.py client/prometheus_text.py client/slo_classes.py scripts/typecheck.py \
	tests/conftest.py tests/unit/test_prometheus_text.py tests/unit/test_slo_classes.py tests/unit/test_results.py \
	tests/unit/test_gpu.py scheduler/cli.py scheduler/commands/__init__.py scheduler/commands/serving.py \
	scheduler/commands/offline.py scheduler/commands/benches.py scheduler/core/policy_names.py tests/fakes.py \
	tests/unit/test_cli_registry.py tests/unit/test_policy_names.py \
	scheduler/core/__init__.py scheduler/sidecar/__init__.py scheduler/offline/__init__.py tests/unit/test_layout.py \
	tests/unit/test_lifecycle_defaults.py tests/unit/test_cluster_models.py tests/integration/test_autoscale_models.py
lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check $(FORMATTED)
	.venv/bin/python scripts/typecheck.py
