#!/usr/bin/env bash
# Install Debian's chromium for the statement test, which renders the HTML statement headless.
# Prints the browser's path; nothing to do when it is already installed.
set -euo pipefail

browser=/usr/bin/chromium
if [[ -x $browser ]]; then
    echo "chromium: $browser"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-chromium.sh: must run as root to apt-get install chromium" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show chromium >/dev/null 2>&1; then
    apt-get update -q
fi
apt-get install -y -q --no-install-recommends chromium

echo "chromium: $browser"
