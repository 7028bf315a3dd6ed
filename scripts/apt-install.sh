#!/usr/bin/env bash
# apt-install.sh PACKAGE...: installs those of Debian's packages that are missing, without starting their services
# (the tests start their own servers); nothing to do, and no root needed, when all are installed. The install-*.sh
# scripts use it.
set -euo pipefail

missing=()
for package in "$@"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]]; then
        missing+=("$package")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "apt-install.sh: must run as root to apt-get install ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# policy-rc.d exit code 101 tells invoke-rc.d/deb-systemd-invoke not to start services, so no postinst starts a
# daemon; only added (and removed again) where the system has none.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -q
fi
apt-get install -y -q --no-install-recommends "${missing[@]}"
