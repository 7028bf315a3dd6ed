#!/usr/bin/env bash
# Install Debian's packages of the test node (tests/support/fixtures_node.py) without starting their services: the
# container runtime (containerd, runc), the CNI plugins and iptables of the pod network, and what builds the images
# (debootstrap for the base's rootfs, buildah for the Dockerfile, gcc and libc6-dev for the static pause binary).
set -euo pipefail

PACKAGES=(containerd runc containernetworking-plugins iptables debootstrap buildah gcc libc6-dev)

missing=()
for package in "${PACKAGES[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]]; then
        missing+=("$package")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "node packages: installed"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-node.sh: must run as root to apt-get install ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# policy-rc.d exit code 101 keeps the postinst from starting containerd's daemon: the tests start their own.
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

# Belt and braces for systems whose postinst ignored the policy: stop the packaged service.
if command -v service >/dev/null && service containerd status >/dev/null 2>&1; then
    service containerd stop || true
fi
echo "node packages: installed ${missing[*]}"
