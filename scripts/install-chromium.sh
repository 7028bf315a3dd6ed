#!/usr/bin/env bash
# Install Debian's chromium for the statement test, which renders the HTML statement headless.
# Prints the browser's path; nothing to do when it is already installed.
set -euo pipefail

browser=/usr/bin/chromium
if [[ ! -x $browser ]]; then
    "$(dirname "$0")/apt-install.sh" chromium
fi
echo "chromium: $browser"
