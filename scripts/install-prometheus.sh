#!/usr/bin/env bash
# Install Debian's prometheus package (prometheus + promtool) for the integration tests, without
# leaving the packaged daemon running on port 9090: the tests start their own server.
set -euo pipefail

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    "$(dirname "$0")/apt-install.sh" prometheus
    # Belt and braces for systems whose postinst ignored the policy: stop the packaged service.
    if command -v service >/dev/null && service prometheus status >/dev/null 2>&1; then
        service prometheus stop || true
    fi
fi

echo "prometheus: $(command -v prometheus)"
echo "promtool: $(command -v promtool)"
