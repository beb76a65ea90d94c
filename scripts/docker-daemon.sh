#!/usr/bin/env bash
# Makes a Docker daemon answer on this machine: installs Debian's docker.io when dockerd is
# missing and starts dockerd in the background (overlay2, log in $DOCKERD_LOG). Does nothing when
# a daemon already answers, so it is safe to run before every image build or image test.
# Needs root for the install and the start (CI and the development machines run as root).
set -euo pipefail

LOG=${DOCKERD_LOG:-/var/log/snapcat-dockerd.log}
START_TIMEOUT=${DOCKERD_START_TIMEOUT:-60}

if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "dockerd is not installed; as root: apt-get install docker.io" >&2
    exit 1
  fi
  echo "installing docker.io (Debian) ..."
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "no Docker daemon answers and only root can start one here" >&2
  exit 1
fi
echo "starting dockerd (log: $LOG) ..."
# setsid + no inherited stdio: make (or CI) neither waits for it nor has its output cut by it.
setsid dockerd --storage-driver=overlay2 </dev/null >>"$LOG" 2>&1 &
for _ in $(seq "$START_TIMEOUT"); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
echo "dockerd did not answer within ${START_TIMEOUT}s; the end of $LOG:" >&2
tail -n 20 "$LOG" >&2
exit 1
