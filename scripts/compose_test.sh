#!/usr/bin/env bash
# The compose test: build the images, bring up docker-compose.yml (triton, scheduler, locust) on free loopback
# ports, send real requests through the scheduler (tests/compose/check_stack.py: HTTP and gRPC with tritonclient,
# bad requests, /metrics, the Locust UI), run Locust headless for a few seconds inside its container, and tear
# the stack down (down -v) on any exit.
#
# It makes what it needs on a Debian host with no container registry: installs docker.io, containerd, runc,
# iptables, debootstrap and docker-compose (v1.29) with apt if the engine is missing (as root), starts dockerd
# if none runs (and stops it again at the end), puts a `docker compose` shim over docker-compose v1 if Compose
# v2 is missing, builds a Debian base image with debootstrap if the base image cannot be pulled, puts the
# host's local torch wheel into docker/wheels/ and its extra CA certificates into docker/certs/ for the build.
#
# If the engine cannot run on this machine it prints `compose test SKIPPED: <reason>` and exits 0 (exit 1 with
# SUPERSERVE_REQUIRE_DOCKER=1). Hard time limit SUPERSERVE_COMPOSE_TIMEOUT seconds (default 900).
# Environment: BASE_IMAGE, TORCH_INDEX_URL (build arguments, see Dockerfile), SUPERSERVE_IMAGE.
set -euo pipefail
cd "$(dirname "$0")/.."

LIMIT=${SUPERSERVE_COMPOSE_TIMEOUT:-900}
if [ -z "${_SUPERSERVE_COMPOSE_INNER:-}" ]; then
  # The whole run under one hard limit. timeout signals the inner script's process group with TERM; the inner
  # script's trap then tears the stack down, with 60 s of grace before KILL.
  export _SUPERSERVE_COMPOSE_INNER=1
  rc=0
  timeout --kill-after=60 "$LIMIT" bash "$0" "$@" || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "compose test FAILED: over the ${LIMIT} s limit (SUPERSERVE_COMPOSE_TIMEOUT)"
  fi
  exit "$rc"
fi

PROJECT=superserve-compose-test
export SUPERSERVE_IMAGE=${SUPERSERVE_IMAGE:-superserve:latest}
DEFAULT_BASE=python:3.11-slim-bookworm
LOCAL_BASE=superserve-base:bookworm
LOG_DIR=$(mktemp -d /tmp/superserve-compose-test.XXXXXX)
T0=$(date +%s%N)
STACK_UP=0
DOCKERD_PID=
PASSED=0
FAILED=0
exec 3>&1 4>&2   # the real stdout/stderr, for traps that fire while a step's output goes to its log file

elapsed() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }
say() { printf '[compose-test %6ss] %s\n' "$(elapsed "$T0")" "$*"; }
# step NAME CMD...: run one step, print its duration; its output goes to $LOG_DIR/<slug>.log (tail on failure).
step() {
  local name=$1 slug s rc=0
  shift
  slug=$(echo "$name" | tr -c 'a-zA-Z0-9\n' '-' | cut -c1-60)
  s=$(date +%s%N)
  say "$name ..."
  "$@" > "$LOG_DIR/$slug.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    say "$name FAILED after $(elapsed "$s") s (exit $rc); last lines of $LOG_DIR/$slug.log:"
    tail -25 "$LOG_DIR/$slug.log" | sed 's/^/    /'
    return "$rc"
  fi
  say "$name: done in $(elapsed "$s") s"
}
SKIP_REASON=
skip() {  # the reason is printed last, by cleanup
  SKIP_REASON=$*
  if [ "${SUPERSERVE_REQUIRE_DOCKER:-0}" = 1 ]; then
    exit 1
  fi
  exit 0
}
fail() { say "FAILED: $*"; exit 1; }

compose() { docker compose -p "$PROJECT" "$@"; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  exec >&3 2>&4
  if [ "$STACK_UP" = 1 ]; then
    if [ "$rc" != 0 ]; then
      say "container states and log tails (for the failure above):"
      compose ps 2>&1 | sed 's/^/    /' || true
      compose logs --tail 30 2>&1 | sed 's/^/    /' || true
    fi
    step "tear down (down -v)" compose down -v --remove-orphans -t 10 || true
  fi
  if [ -n "$DOCKERD_PID" ]; then
    say "stopping the dockerd this test started (pid $DOCKERD_PID)"
    kill "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
  fi
  if [ -n "$SKIP_REASON" ]; then
    if [ "$rc" != 0 ]; then
      say "SUPERSERVE_REQUIRE_DOCKER=1, so a missing engine fails the test (logs in $LOG_DIR)"
      echo "compose test FAILED: $SKIP_REASON"
    else
      rm -rf "$LOG_DIR"
      echo "compose test SKIPPED: $SKIP_REASON"
    fi
  elif [ "$rc" = 0 ]; then
    rm -rf "$LOG_DIR"
    say "compose test PASSED in $(elapsed "$T0") s"
    echo "compose: $PASSED passed, $FAILED failed"
  else
    say "compose test FAILED (exit $rc) after $(elapsed "$T0") s (logs in $LOG_DIR)"
    echo "compose: $PASSED passed, $((FAILED > 0 ? FAILED : 1)) failed"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exec >&3 2>&4; say "interrupted"; exit 130' INT
trap 'exec >&3 2>&4; say "terminated (the time limit?)"; exit 124' TERM

# ---- 1. the engine ---------------------------------------------------------------------------------------
install_engine() {
  local pkgs="docker.io containerd runc iptables debootstrap docker-compose"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs \
    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs; }
}
if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null \
   || ! { command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "install the engine (apt-get: docker.io containerd runc iptables debootstrap docker-compose)" install_engine \
      || skip "could not install Docker's packages with apt-get (log $LOG_DIR)"
  elif ! docker info >/dev/null 2>&1; then
    skip "no Docker engine here and no root/apt-get to install one (apt-get install docker.io docker-compose)"
  fi
fi

start_dockerd() {  # start_dockerd [extra dockerd flags]: 0 once `docker info` answers within 40 s
  # Its own session: the time limit's TERM to this script's process group must not stop the engine
  # before the trap has taken the stack down (cleanup stops it afterwards).
  setsid dockerd --host unix:///var/run/docker.sock "$@" > "$LOG_DIR/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 200); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.2
  done
  kill "$DOCKERD_PID" 2>/dev/null || true
  wait "$DOCKERD_PID" 2>/dev/null || true
  DOCKERD_PID=
  return 1
}
if docker info >/dev/null 2>&1; then
  say "using the running Docker engine ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
else
  [ "$(id -u)" = 0 ] || skip "no Docker engine runs and starting dockerd needs root"
  # A dockerd that was killed leaves its pid file behind, and a new one refuses to start over it.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  s=$(date +%s%N)
  # Plain dockerd first; then without iptables (no NAT: builds then need docker/wheels, but the stack runs).
  if start_dockerd || start_dockerd --iptables=false --ip6tables=false; then
    say "started dockerd (pid $DOCKERD_PID) in $(elapsed "$s") s: $(docker version --format '{{.Server.Version}}') $(docker info --format '{{.Driver}}')"
  else
    reason=$(grep -iE 'level=(fatal|error)|failed' "$LOG_DIR/dockerd.log" | tail -1 | cut -c1-300)
    skip "dockerd does not start on this machine: ${reason:-see $LOG_DIR/dockerd.log}"
  fi
fi

# `docker compose`: Compose v2 if present, else the shim over docker-compose v1.
if ! docker compose version >/dev/null 2>&1; then
  command -v docker-compose >/dev/null || skip "neither Compose v2 (docker compose) nor docker-compose v1 is installed"
  mkdir -p "$HOME/.docker/cli-plugins"
  cp docker/compose-shim "$HOME/.docker/cli-plugins/docker-compose"
  docker compose version >/dev/null 2>&1 || fail "the docker compose shim does not work"
  say "installed the docker compose shim (docker/compose-shim) at ~/.docker/cli-plugins/docker-compose"
fi
say "compose: $(docker compose version 2>/dev/null | head -1)"
# The classic builder when there is no buildx plugin (docker CLI >= 23 otherwise refuses to build).
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

# ---- 2. the base image -----------------------------------------------------------------------------------
if [ -z "${BASE_IMAGE:-}" ]; then
  if docker image inspect "$DEFAULT_BASE" >/dev/null 2>&1; then
    BASE_IMAGE=$DEFAULT_BASE
  elif timeout 120 docker pull -q "$DEFAULT_BASE" > "$LOG_DIR/pull.log" 2>&1; then
    BASE_IMAGE=$DEFAULT_BASE
    say "pulled $DEFAULT_BASE"
  else
    say "cannot pull $DEFAULT_BASE ($(tail -1 "$LOG_DIR/pull.log" | cut -c1-160)); using a local Debian image"
    if docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
      say "using $LOCAL_BASE, built by an earlier run (docker image rm $LOCAL_BASE to rebuild it)"
    else
      if ! command -v debootstrap >/dev/null; then
        step "install debootstrap" apt-get install -y -q debootstrap || fail "debootstrap is missing"
      fi
      step "build the base image $LOCAL_BASE (debootstrap bookworm + docker import)" \
        bash docker/build-base-image.sh "$LOCAL_BASE" || fail "could not build the base image"
    fi
    BASE_IMAGE=$LOCAL_BASE
  fi
fi
export BASE_IMAGE
# A container must start at all, or the engine is of no use here.
docker run --rm "$BASE_IMAGE" true > "$LOG_DIR/probe.log" 2>&1 \
  || skip "the engine runs but cannot start a container: $(tail -1 "$LOG_DIR/probe.log" | cut -c1-300)"

# ---- 3. build inputs from the host: the local torch wheel, the proxy's CA certificates ------------------
torch_pin=$(grep -E '^torch==' constraints.txt | cut -d= -f3)
if ! ls docker/wheels/torch-"$torch_pin"*.whl >/dev/null 2>&1; then
  py=python3
  [ -x .venv/bin/python ] && py=.venv/bin/python
  # --no-index: only the host's find-links (pip config), never a multi-GB download from an index.
  if "$py" -m pip download "torch==$torch_pin" --no-deps --no-index -d docker/wheels > "$LOG_DIR/torch-wheel.log" 2>&1; then
    say "copied the host's torch $torch_pin wheel into docker/wheels/"
  fi
fi
if ls docker/wheels/torch-"$torch_pin"*.whl >/dev/null 2>&1 && [ -z "${TORCH_INDEX_URL+set}" ]; then
  export TORCH_INDEX_URL=   # the wheel is here; the torch index may not be reachable from this machine
fi
for crt in /usr/local/share/ca-certificates/*.crt; do
  [ -f "$crt" ] || continue
  cmp -s "$crt" "docker/certs/$(basename "$crt")" || cp "$crt" docker/certs/
done
say "build inputs: base $BASE_IMAGE, torch index '${TORCH_INDEX_URL-default}', wheels: $(cd docker/wheels && ls *.whl 2>/dev/null | tr '\n' ' ')certs: $(cd docker/certs && ls *.crt 2>/dev/null | tr '\n' ' ')"

# ---- 4. build ---------------------------------------------------------------------------------------------
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}")
# The dependency stage gets a tag of its own, so the build cache survives; each tag's previous image is
# removed once replaced, so rebuilds do not pile up images (unless a container still uses one).
DEPS_IMAGE=${SUPERSERVE_IMAGE%:*}:deps
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
drop_if_replaced() { [ -z "$2" ] || [ "$2" = "$(image_id "$1")" ] || docker image rm "$2" >/dev/null 2>&1 || true; }
old_deps=$(image_id "$DEPS_IMAGE")
old_image=$(image_id "$SUPERSERVE_IMAGE")
step "build the dependency stage (cached unless pyproject.toml, constraints.txt, docker/wheels or docker/certs changed)" \
  docker build --target deps -t "$DEPS_IMAGE" "${build_args[@]}" . || fail "image build failed"
step "docker compose build" compose build || fail "docker compose build failed"
drop_if_replaced "$SUPERSERVE_IMAGE" "$old_image"
drop_if_replaced "$DEPS_IMAGE" "$old_deps"
say "image $SUPERSERVE_IMAGE: $(docker image inspect -f '{{.Size}}' "$SUPERSERVE_IMAGE" | awk '{printf "%.2f GB", $1/1e9}')"

# ---- 5. up ------------------------------------------------------------------------------------------------
read -r HTTP_PORT GRPC_PORT LOCUST_PORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
export SUPERSERVE_BIND=127.0.0.1 SUPERSERVE_HTTP_PORT=$HTTP_PORT SUPERSERVE_GRPC_PORT=$GRPC_PORT SUPERSERVE_LOCUST_PORT=$LOCUST_PORT
# A fresh bearer token: the scheduler requires it, the Locust users and check_stack.py send it (from the
# environment, never a flag), and check_stack.py checks that a request without it is refused.
SUPERSERVE_TOKEN=$(python3 -c "import secrets; print(secrets.token_hex(32))")
export SUPERSERVE_TOKEN
compose down -v --remove-orphans -t 5 > "$LOG_DIR/down-leftovers.log" 2>&1 || true   # a killed earlier run
STACK_UP=1
TRITONS=${SUPERSERVE_COMPOSE_TRITONS:-2}   # --scale triton=N: the scheduler must find and use every one
step "docker compose up -d --scale triton=$TRITONS (scheduler on 127.0.0.1:$HTTP_PORT/$GRPC_PORT, locust on :$LOCUST_PORT)" \
  compose up -d --scale triton="$TRITONS" || fail "docker compose up failed"

wait_ready() {
  local url=$1 limit=$2 s
  s=$(date +%s%N)
  while :; do
    python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url" 2>/dev/null && return 0
    if [ "$(elapsed "$s" | cut -d. -f1)" -ge "$limit" ]; then
      echo "not ready after $limit s: $url"
      return 1
    fi
    if compose ps 2>/dev/null | grep -qE 'Exit|exited'; then
      echo "a container exited:"; compose ps
      return 1
    fi
    sleep 1
  done
}
step "wait for the scheduler (and Triton behind it) to be ready" wait_ready "http://127.0.0.1:$HTTP_PORT/v2/health/ready" 240 \
  || fail "the stack did not become ready"
step "wait for the Locust web UI" wait_ready "http://127.0.0.1:$LOCUST_PORT/" 60 || fail "Locust's web UI did not come up"

# ---- 6. checks --------------------------------------------------------------------------------------------
py=.venv/bin/python
if [ ! -x "$py" ] || ! "$py" -c "import tritonclient.grpc, tritonclient.http" 2>/dev/null; then
  step "set up the host's .venv for the client checks (scripts/setup.sh)" bash scripts/setup.sh || fail "scripts/setup.sh failed"
fi
say "requests through the scheduler (tests/compose/check_stack.py):"
rc=0
"$py" tests/compose/check_stack.py --http "127.0.0.1:$HTTP_PORT" --grpc "127.0.0.1:$GRPC_PORT" --workers "$TRITONS" \
  --locust "http://127.0.0.1:$LOCUST_PORT/" 2>&1 | tee "$LOG_DIR/check_stack.log" | sed 's/^/    /' || rc=$?
counts=$(grep -E '^checks: [0-9]+ passed, [0-9]+ failed' "$LOG_DIR/check_stack.log" | tail -1 || true)
[ -n "$counts" ] || counts="checks: 0 passed, 1 failed"
PASSED=$(echo "$counts" | awk '{print $2}')
FAILED=$(echo "$counts" | awk '{print $4}')
if [ "$rc" != 0 ] || [ "$FAILED" != 0 ]; then
  fail "client checks failed"
fi

locust_run() {
  compose exec -T locust locust -f client/locustfile.py --headless -u 4 -r 4 -t 4s --host scheduler:8011 \
    TritonGrpcUser --slo-classes 2000:1 --only-summary --exit-code-on-error 1
}
if step "Locust headless inside its container (4 gRPC users, 4 s, against scheduler:8011)" locust_run; then
  PASSED=$((PASSED + 1))
  grep -E 'superserve.locust: +supernet' "$LOG_DIR"/Locust-headless*.log | sed 's/^.*superserve.locust: */    /' || true
else
  FAILED=$((FAILED + 1))
  fail "the Locust run failed"
fi
