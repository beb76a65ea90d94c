#!/usr/bin/env bash
# Builds the project's images on this machine under the names the manifests and the pipeline's
# components use (ghcr.io/snapcat/snapcat-{serve,train,pipeline}:<project version>):
#   scripts/build-image.sh serve train pipeline
# Starts Docker first if needed (scripts/docker-daemon.sh). The base image is BASE_IMAGE if set
# (python:3.11-slim-bookworm where Docker Hub is reachable; for train also a TensorFlow image),
# else the local Debian stand-in (scripts/python-base-image.sh). Builds and their containers use
# the host's network; a package index configured here (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL) is
# passed to the build stages only. Prints each build's time and the image's size.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -eq 0 ]; then
  echo "usage: $0 serve|train|pipeline ..." >&2
  exit 2
fi
scripts/docker-daemon.sh
registry=${IMAGE_REGISTRY:-ghcr.io/snapcat}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
base=${BASE_IMAGE:-}
if [ -z "$base" ]; then
  base=snapcat-local/python:3.11-bookworm
  scripts/python-base-image.sh "$base"
fi

index_args=()
for name in PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
  if [ -n "${!name:-}" ]; then
    index_args+=(--build-arg "$name")  # the value comes from the environment
  fi
done

for kind in "$@"; do
  case "$kind" in
    serve | pipeline) base_arg=PYTHON_IMAGE ;;
    train) base_arg=BASE_IMAGE ;;
    *)
      echo "unknown image $kind: serve, train or pipeline" >&2
      exit 2
      ;;
  esac
  image="$registry/snapcat-$kind:$version"
  log=$(mktemp "/tmp/snapcat-build-$kind.XXXXXX.log")
  echo "building $image from Dockerfile.$kind on $base (log: $log) ..."
  start=$(date +%s)
  if ! nice -n 10 docker build --network=host --build-arg "$base_arg=$base" "${index_args[@]}" \
    -f "Dockerfile.$kind" -t "$image" . >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "building $image failed; the whole log: $log" >&2
    exit 1
  fi
  # The build step's own report (the training image says which ImageNet weights it baked).
  grep -E '^(ImageNet weights baked|skipped )' "$log" || true
  size="$(($(docker image inspect -f "{{.Size}}" "$image") / 1000000)) MB"
  echo "built $image in $(($(date +%s) - start)) s: $size"
  rm -f "$log"
done
