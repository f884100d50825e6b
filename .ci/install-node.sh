#!/usr/bin/env bash
# Make sure `node` and `npm` are installed, for the Node SDK tests (tests/sdk/test_sdks.py drives
# @segment/analytics-node and @rudderstack/rudder-sdk-node, which it installs with `npm ci` from
# tests/sdk/node/package-lock.json). Idempotent: does nothing when both are there (whatever
# installed them); otherwise installs Debian's nodejs and npm. Needs root to install.
set -euo pipefail

if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    echo "install-node: node $(node --version) and npm $(npm --version) are installed"
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
    echo "install-node: node or npm is missing, and not root to install them" >&2
    exit 1
fi

echo "install-node: installing Debian's nodejs and npm"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends nodejs npm

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "install-node: nodejs and npm installed, but node or npm is still missing" >&2
    exit 1
fi
echo "install-node: node $(node --version) and npm $(npm --version) are installed"
