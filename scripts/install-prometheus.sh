#!/usr/bin/env bash
# Install Debian's prometheus package (prometheus + promtool) for the integration tests, without
# leaving the packaged daemon running on port 9090: the tests start their own server.
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    echo "prometheus: $(command -v prometheus)"
    echo "promtool: $(command -v promtool)"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-prometheus.sh: must run as root to apt-get install prometheus" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# policy-rc.d exit code 101 tells invoke-rc.d/deb-systemd-invoke not to start services, so the
# postinst does not start a daemon; only add one (and remove it again) if the system has none.
policy=/usr/sbin/policy-rc.d
added_policy=false
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added_policy=true
    trap 'rm -f "$policy"' EXIT
fi

if ! apt-cache show prometheus >/dev/null 2>&1; then
    apt-get update -q
fi
apt-get install -y -q --no-install-recommends prometheus

if $added_policy; then
    rm -f "$policy"
    trap - EXIT
fi

# Belt and braces for systems whose postinst ignored the policy: stop the packaged service.
if command -v service >/dev/null && service prometheus status >/dev/null 2>&1; then
    service prometheus stop || true
fi

echo "prometheus: $(command -v prometheus)"
echo "promtool: $(command -v promtool)"
