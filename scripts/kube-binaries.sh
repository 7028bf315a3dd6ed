#!/usr/bin/env bash
# Builds (once, then cached) etcd and kube-apiserver for the integration tests; prints their directory.
#
# There is no Docker (so no kind) and no release tarball download: both binaries are built from the
# Go module proxy. k8s.io/kubernetes points its staging modules at ./staging/, which `go install`
# refuses, so the apiserver is built in a throwaway module that replaces each staging module with its
# published v0.<minor>.<patch> release. Progress goes to stderr; stdout is only the directory.
set -euo pipefail

KUBE_VERSION="v1.37.2"
ETCD_VERSION="v3.6.16"

cache_root="${CZ_AGENT_CACHE:-$HOME/.cache/cz-agent}"
bin_dir="$cache_root/bin/kube-$KUBE_VERSION-etcd-$ETCD_VERSION"

export GOTOOLCHAIN=local
# Two jobs match the CI runners; -trimpath keeps the binaries independent of the build paths.
build_flags=(-p 2 -trimpath)

log() {
    echo "kube-binaries: $*" >&2
}

build_etcd() {
    local work="$1" out="$2"
    mkdir -p "$work/etcd"
    cd "$work/etcd"
    go mod init cz-agent/etcd-build
    log "resolving go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
    log "building etcd $ETCD_VERSION"
    go build "${build_flags[@]}" -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
}

# One `replace k8s.io/<m> => k8s.io/<m> v0.<minor>.<patch>` per `=> ./staging/` line of the tag's go.mod.
staging_replaces() {
    local kube_gomod="$1" staging_version="v0.${KUBE_VERSION#v1.}"
    awk -v version="$staging_version" \
        '$2 == "=>" && $3 ~ /^\.\/staging\// { printf "replace %s => %s %s\n", $1, $1, version }' \
        "$kube_gomod"
}

build_apiserver() {
    local work="$1" out="$2"
    local minor="${KUBE_VERSION#v1.}"
    minor="${minor%%.*}"
    mkdir -p "$work/kube"
    cd "$work/kube"
    go mod init cz-agent/kube-build
    log "downloading k8s.io/kubernetes@$KUBE_VERSION"
    local kube_gomod
    kube_gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
    staging_replaces "$kube_gomod" >>go.mod
    log "resolving k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION"
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" >&2
    log "building kube-apiserver $KUBE_VERSION (the long part)"
    local version_pkg="k8s.io/component-base/version"
    go build "${build_flags[@]}" \
        -ldflags "-s -w -X $version_pkg.gitVersion=$KUBE_VERSION -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$minor -X $version_pkg.gitTreeState=clean" \
        -o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
}

main() {
    if [[ -x "$bin_dir/etcd" && -x "$bin_dir/kube-apiserver" ]]; then
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
    (build_etcd "$work" "$staging")
    (build_apiserver "$work" "$staging")
    chmod 755 "$staging"
    rm -rf "$bin_dir"
    mv "$staging" "$bin_dir"
    log "built in $((SECONDS - started)) s into $bin_dir"
    echo "$bin_dir"
}

main "$@"
