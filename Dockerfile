# One image for the three compose services (triton, scheduler, locust): Python 3.11, the pinned packages of
# constraints.txt that the server needs (torch CPU, numpy<2, nvidia-pytriton with its tritonserver binary,
# tritonclient) and the `locust` extra for the load UI (not the dev extra: no pytest, matplotlib or linters),
# Debian's Fashion-MNIST for the Locust users, and this repository installed in editable mode at /app.
#
#   docker build -t superserve .                                    # python:3.11-slim-bookworm, torch CPU
#   docker build --build-arg BASE_IMAGE=superserve-base:bookworm .  # a local Debian image (docker/build-base-image.sh)
#   docker build --build-arg TORCH_INDEX_URL= .                     # torch from PyPI (the CUDA build, for GPU hosts)
#
# Layers go from rarely to often changed: system packages, the dependency venv (built in its own stage, keyed
# only on pyproject.toml, constraints.txt and docker/wheels, docker/certs), then the source. Editing code only
# re-runs the last two short steps. Written for the classic builder as well as BuildKit (no heredocs, no
# RUN --mount), so it builds on a bare dockerd with no buildx plugin.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- stage 1: the virtual environment with every dependency --------------------------------------------
FROM ${BASE_IMAGE} AS deps
# Extra index for torch; the default serves the CPU wheel (a few hundred MB instead of several GB with CUDA).
# Empty: PyPI only (the CUDA build on Linux x86_64), or only the wheel placed in docker/wheels/.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_DEFAULT_TIMEOUT=180
# docker/wheels/*.whl: wheels made or found on the build host (e.g. torch's CPU wheel on a machine that reaches
# no torch index); pip prefers them. docker/certs/*.crt: CA certificates of a TLS-intercepting proxy between
# this build and PyPI; they are added to pip's bundle in this stage only and never reach the final image.
COPY docker/wheels/ /tmp/wheels/
COPY docker/certs/ /tmp/certs/
RUN python3 -m venv /opt/venv \
 && if ls /tmp/certs/*.crt >/dev/null 2>&1; then \
      cat "$(/opt/venv/bin/python -c 'import pip._vendor.certifi as c; print(c.where())')" /tmp/certs/*.crt \
        > /tmp/ca-bundle.pem; \
    fi
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml constraints.txt /tmp/src/
# The dependency list is read from pyproject.toml (one source of truth): the runtime dependencies and the `locust`
# extra, plus the build requirements, so that the source layer below installs the project itself with no network
# (--no-build-isolation).
RUN set -e; \
    if [ -f /tmp/ca-bundle.pem ]; then export PIP_CERT=/tmp/ca-bundle.pem; fi; \
    python -c "import tomllib; p = tomllib.load(open('/tmp/src/pyproject.toml', 'rb')); \
print('\n'.join(p['project']['dependencies'] + p['project']['optional-dependencies']['locust'] \
+ p['build-system']['requires']))" > /tmp/src/requirements.txt; \
    pip install --find-links /tmp/wheels --upgrade pip; \
    pip install --find-links /tmp/wheels ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        -c /tmp/src/constraints.txt -r /tmp/src/requirements.txt wheel; \
    python -c "import numpy, torch, pytriton, tritonclient.grpc, locust; \
assert numpy.__version__ < '2', 'numpy ' + numpy.__version__ + ': Triton 2.51 Python backend needs numpy<2'; \
print('torch', torch.__version__, 'numpy', numpy.__version__)"

# ---- stage 2: the runtime image ------------------------------------------------------------------------
FROM ${BASE_IMAGE}
# Fashion-MNIST's test split for the Locust users (Debian's package; the images are MIT licensed), and
# libexpat1, which Triton's Python backend stub links (present in both bases named above; installed to be sure).
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dataset-fashion-mnist libexpat1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --shell /bin/bash superserve
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY . /app
# Editable, as `make setup` does: the package resolves model_repository/, backends/ and profiles/ from /app.
# Then build Triton's backend directory once (the Python backend stub for this Python and the link to
# backends/python_supernet) and check that the wheel's tritonserver and stub find every shared library.
RUN pip install --no-deps --no-build-isolation --no-cache-dir -e /app \
 && rm -rf /app/build \
 && chown -R superserve /app
USER superserve
RUN set -e; \
    d=$(python -c "from superserve.scheduler.sidecar.triton_launcher import backend_directory, libs_dir, wheel_dir; \
print(backend_directory(), libs_dir(), wheel_dir())"); \
    set -- $d; \
    missing=$(LD_LIBRARY_PATH="$2" ldd "$3/bin/tritonserver" "$1/python/triton_python_backend_stub" | grep 'not found' || true); \
    if [ -n "$missing" ]; then echo "shared libraries missing in the base image: $missing" >&2; exit 1; fi; \
    superserve --help > /dev/null
# Triton HTTP, gRPC, metrics; scheduler HTTP, gRPC; Locust's web UI.
EXPOSE 8000 8001 8002 8010 8011 8089
CMD ["superserve", "--help"]
