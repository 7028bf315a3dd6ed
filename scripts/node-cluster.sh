#!/usr/bin/env bash
# Starts the tests' single-node cluster (etcd, kube-apiserver, containerd, kubelet, kube-controller-manager,
# kube-scheduler, the agent's image built from the Dockerfile) for a person to try the chart by hand; prints the
# kubeconfig and the kubectl to use. Ctrl-C stops it and removes what it made. Runs as root (mounts, bridge, iptables).
set -euo pipefail
cd "$(dirname "$0")/.."
make --quiet venv
exec .venv/bin/python -m tests.support.node_cluster
