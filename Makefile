# The README's two commands: `make demo` (set up, run Triton + a short load) and `make test`.
.PHONY: setup demo test
setup:
	bash scripts/setup.sh
demo: setup
	.venv/bin/superserve demo
test: setup
	.venv/bin/python -m pytest -q
