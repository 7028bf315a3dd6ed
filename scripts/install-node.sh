#!/usr/bin/env bash
# Install Debian's packages of the test node (tests/support/fixtures_node.py) without starting their services: the
# container runtime (containerd, runc), the CNI plugins and iptables of the pod network, and what builds the images
# (debootstrap for the base's rootfs, buildah for the Dockerfile, gcc and libc6-dev for the static pause binary).
set -euo pipefail

"$(dirname "$0")/apt-install.sh" containerd runc containernetworking-plugins iptables debootstrap buildah gcc libc6-dev

# Belt and braces for systems whose postinst ignored the policy: stop the packaged service.
if command -v service >/dev/null && service containerd status >/dev/null 2>&1; then
    service containerd stop || true
fi
echo "node packages: installed"
