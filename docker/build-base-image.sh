#!/usr/bin/env bash
# Build a Debian bookworm base image with Python 3.11 from Debian's own packages, for machines that reach a
# Debian mirror but no container registry (so `python:3.11-slim-bookworm` cannot be pulled):
#   debootstrap --variant=minbase bookworm <rootfs> <mirror>  ->  tar  ->  docker import
# The result stands in for the official image as the build argument BASE_IMAGE (see docker/Dockerfile).
# Usage: docker/build-base-image.sh [TAG]   (default superserve-base:bookworm; MIRROR=... to choose the mirror)
# Idempotent: does nothing if TAG already exists (FORCE=1 rebuilds).
set -euo pipefail
TAG=${1:-superserve-base:bookworm}
say() { echo "[base-image] $*" >&2; }

if [ -z "${FORCE:-}" ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  say "$TAG exists"; exit 0
fi
command -v debootstrap >/dev/null || { say "debootstrap is missing: apt-get install debootstrap"; exit 1; }
[ "$(id -u)" = 0 ] || { say "debootstrap needs root"; exit 1; }

# The mirror apt already uses on this host (deb822 .sources or one-line .list), unless MIRROR is set.
if [ -z "${MIRROR:-}" ]; then
  MIRROR=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/debian.sources | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$MIRROR" ] || MIRROR=$(grep -hsE '^deb +(\[[^]]*\] +)?https?://' /etc/apt/sources.list \
                                | grep -v security | awk '{for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}')
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

# What python:3.11-slim-bookworm offers that the Dockerfile relies on: python3 with venv, the shared
# libpython (Triton's Python backend stub links it) and CA certificates.
INCLUDE=python3,python3-venv,libpython3.11,ca-certificates
root=$(mktemp -d /var/tmp/superserve-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
say "debootstrap --variant=minbase --include=$INCLUDE bookworm $root $MIRROR"
debootstrap --variant=minbase --include="$INCLUDE" bookworm "$root" "$MIRROR" > "$root.log" 2>&1 \
  || { tail -20 "$root.log" >&2; say "debootstrap failed (log $root.log)"; exit 1; }
rm -f "$root.log"
# Slim it like Debian's official images: no apt lists or caches, and the mirror we used in sources.
echo "deb $MIRROR bookworm main" > "$root/etc/apt/sources.list"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
say "docker import -> $TAG"
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - "$TAG" >/dev/null
say "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
