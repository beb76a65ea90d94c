#!/usr/bin/env bash
# Debian's headless chromium and its own chromedriver, for the tests that look at the HTML report
# in a real browser (pytest -m browser; make test-long runs them). Installs them as root when
# they are missing; does nothing when they are there.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "chromium/chromedriver missing: run 'sudo apt-get install chromium chromium-driver'" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver >/dev/null
chromium --version
