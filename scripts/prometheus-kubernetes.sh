#!/usr/bin/env bash
# Builds (once, then cached by version) a Prometheus with Kubernetes service discovery, which Debian's package is
# built without; prints its path. The pod tests (tests/deploy/test_pod.py) find the agent with it through the
# Service's endpoints, as the chart's ServiceMonitor asks the Prometheus Operator to. Only that discovery is compiled
# in (Prometheus' remove_all_sd and enable_kubernetes_sd build tags): the others' cloud SDKs would double the build.
# No web UI assets either: the tests use the HTTP API alone. Progress goes to stderr.
set -euo pipefail

# Prometheus 3.x's Go module versions are v0.3xx.y for 3.xx.y.
PROMETHEUS_MODULE_VERSION="v0.316.0"

cache_root="${CZ_AGENT_CACHE:-$HOME/.cache/cz-agent}"
bin_dir="$cache_root/bin/prometheus-kubernetes-$PROMETHEUS_MODULE_VERSION"
export GOTOOLCHAIN=local

if [[ ! -x $bin_dir/prometheus ]]; then
    echo "prometheus-kubernetes: building github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION" >&2
    mkdir -p "$cache_root/bin"
    # Built beside the cache dir so the final `mv` is an atomic rename: a killed build leaves no half cache.
    staging="$(mktemp -d "$cache_root/bin/.building-XXXXXX")"
    trap "rm -rf '$staging'" EXIT
    GOBIN="$staging" go install -p 2 -trimpath -tags remove_all_sd,enable_kubernetes_sd -ldflags "-s -w" \
        "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION" >&2
    chmod 755 "$staging"
    rm -rf "$bin_dir"
    mv "$staging" "$bin_dir"
fi
echo "$bin_dir/prometheus"
