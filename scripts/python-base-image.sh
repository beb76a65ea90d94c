#!/usr/bin/env bash
# Builds the stand-in for `python:3.11-slim-bookworm` where Docker Hub cannot be reached: Debian
# bookworm (minbase) with its Python 3.11 and venv, from the Debian mirror apt uses here, imported
# as a Docker image. Our Dockerfiles take it as their base-image build argument:
#   docker build --build-arg PYTHON_IMAGE=snapcat-local/python:3.11-bookworm -f Dockerfile.serve .
# It carries this machine's CA bundle, so pip in a build trusts what this machine trusts (a
# TLS-intercepting proxy, say). Idempotent: an existing image is kept (--rebuild replaces it).
# Usage: scripts/python-base-image.sh [--rebuild] [IMAGE]
set -euo pipefail

rebuild=false
if [ "${1:-}" = "--rebuild" ]; then
  rebuild=true
  shift
fi
IMAGE=${1:-snapcat-local/python:3.11-bookworm}
SUITE=bookworm
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

if ! $rebuild && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE is there"
  exit 0
fi

# The mirror apt uses here (deb822 sources first, then one-line ones), Debian's own otherwise.
mirror=$(
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'
  } | grep -v -- '-security' | grep -m1 '/debian/\?$' || true
)
mirror=${mirror:-http://deb.debian.org/debian}

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "installing debootstrap (Debian) ..."
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
fi

rootfs=$(mktemp -d /tmp/snapcat-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap $SUITE from $mirror into $rootfs ..."
nice -n 10 debootstrap --variant=minbase \
  --include=python3,python3-venv,python-is-python3,ca-certificates \
  "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -n 30 "$rootfs.log" >&2
  exit 1
}
rm -f "$rootfs.log"
if [ -f "$CA_BUNDLE" ]; then
  cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
fi
# What a slim image leaves out: downloaded packages, package lists, documentation, locales.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
  "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log
tar -C "$rootfs" --numeric-owner -c . |
  docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    - "$IMAGE" >/dev/null
echo "built base image $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=si --suffix=B))"
