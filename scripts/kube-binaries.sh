#!/usr/bin/env bash
# Builds (once, then cached) the Kubernetes binaries of the integration tests; prints their directory.
#
#   scripts/kube-binaries.sh        etcd and kube-apiserver (the API server the tests start)
#   scripts/kube-binaries.sh node   kubelet, kubectl, kube-controller-manager and kube-scheduler (the test node)
#
# There is no Docker (so no kind) and no release tarball download: the binaries are built from the Go module
# proxy. k8s.io/kubernetes points its staging modules at ./staging/, which `go install` refuses, so they are built
# in a throwaway module that replaces each staging module with its published v0.<minor>.<patch> release. The node's
# four commands are one `go build`, so they compile their shared packages once (and reuse the apiserver's from the
# Go build cache). Progress goes to stderr; stdout is only the directory.
set -euo pipefail

KUBE_VERSION="v1.37.2"
ETCD_VERSION="v3.6.16"
NODE_COMMANDS=(kubelet kubectl kube-controller-manager kube-scheduler)

cache_root="${CZ_AGENT_CACHE:-$HOME/.cache/cz-agent}"

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

# build_kube WORK OUT COMMAND...: the k8s.io/kubernetes/cmd/<COMMAND>s, in one go build, into OUT.
build_kube() {
    local work="$1" out="$2"
    shift 2
    local minor="${KUBE_VERSION#v1.}"
    minor="${minor%%.*}"
    mkdir -p "$work/kube"
    cd "$work/kube"
    go mod init cz-agent/kube-build
    log "downloading k8s.io/kubernetes@$KUBE_VERSION"
    local kube_gomod
    kube_gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
    staging_replaces "$kube_gomod" >>go.mod
    local packages=("${@/#/k8s.io/kubernetes/cmd/}")
    log "resolving ${packages[*]} at $KUBE_VERSION"
    go get "${packages[@]/%/@$KUBE_VERSION}" >&2
    log "building $* $KUBE_VERSION (the long part)"
    local version_pkg="k8s.io/component-base/version"
    go build "${build_flags[@]}" \
        -ldflags "-s -w -X $version_pkg.gitVersion=$KUBE_VERSION -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$minor -X $version_pkg.gitTreeState=clean" \
        -o "$out/" "${packages[@]}"
}

build_control_plane() {
    (build_etcd "$1" "$2")
    (build_kube "$1" "$2" kube-apiserver)
}

build_node() {
    (build_kube "$1" "$2" "${NODE_COMMANDS[@]}")
}

main() {
    local set="${1:-control-plane}" bin_dir binaries
    case "$set" in
        control-plane)
            bin_dir="$cache_root/bin/kube-$KUBE_VERSION-etcd-$ETCD_VERSION"
            binaries=(etcd kube-apiserver) ;;
        node)
            bin_dir="$cache_root/bin/kube-node-$KUBE_VERSION"
            binaries=("${NODE_COMMANDS[@]}") ;;
        *)
            echo "usage: $0 [control-plane|node]" >&2
            exit 2 ;;
    esac
    local binary missing=false
    for binary in "${binaries[@]}"; do
        [[ -x "$bin_dir/$binary" ]] || missing=true
    done
    if ! $missing; then
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
    "build_${set//-/_}" "$work" "$staging"
    chmod 755 "$staging"
    rm -rf "$bin_dir"
    mv "$staging" "$bin_dir"
    log "built in $((SECONDS - started)) s into $bin_dir"
    echo "$bin_dir"
}

main "$@"
