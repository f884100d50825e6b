#!/usr/bin/env bash
# Make sure Debian's chromium is installed, for the portal's browser test
# (tests/portal/test_browser.py drives /usr/bin/chromium with Playwright; Playwright's own browser
# download is not used). Idempotent: does nothing when chromium is already there. Needs root.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [[ -x "$CHROMIUM" ]]; then
    echo "install-chromium: $CHROMIUM is installed"
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
    echo "install-chromium: $CHROMIUM is missing, and not root to install it" >&2
    exit 1
fi

echo "install-chromium: installing Debian's chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y chromium

if [[ ! -x "$CHROMIUM" ]]; then
    echo "install-chromium: chromium installed, but $CHROMIUM is still missing" >&2
    exit 1
fi
echo "install-chromium: $CHROMIUM is installed"
