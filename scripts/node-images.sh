#!/usr/bin/env bash
# Builds the test node's images (the slow parts once, then cached) as docker archives for `ctr images import`;
# prints one line per image, `NAME ARCHIVE`:
#   registry.k8s.io/pause:<tag>       the sandbox image containerd asks for: k8s.io/kubernetes' pause.c, static
#   docker.io/library/cz-allocation-agent:test-<id>
#                                     the repository's Dockerfile built by buildah on a Debian bookworm rootfs
#                                     (debootstrap, Debian's python3) given as its BASE_IMAGE build argument
#
# No registry is reachable here, so the Dockerfile's default base cannot be pulled. buildah's layer cache (its
# storage under the cache directory) decides what a change of the Dockerfile or of the sources rebuilds; the
# archive is keyed by the image ID it gives. Docker format: OCI images have no HEALTHCHECK. Progress goes to stderr.
set -euo pipefail

KUBE_VERSION="v1.37.2"
PAUSE_TAG="3.10.2"
SUITE="bookworm"
BASE_PACKAGES="python3,python3-venv,python-is-python3,ca-certificates"
# The base is made again each month: Debian's point releases and security fixes come in.
BASE_IMAGE="localhost/cz-agent-base:$SUITE-$(date +%Y-%m)"
AGENT_IMAGE="docker.io/library/cz-allocation-agent"

repo="$(cd "$(dirname "$0")/.." && pwd)"
cache_root="${CZ_AGENT_CACHE:-$HOME/.cache/cz-agent}"
images_dir="$cache_root/images"
# The builds run as root on the host (chroot isolation, no user namespace): overlay storage, no fuse.
buildah=(buildah --root "$cache_root/buildah/storage" --runroot "$cache_root/buildah/run" --storage-driver overlay)

log() {
    echo "node-images: $*" >&2
}

# export_archive IMAGE NAME ARCHIVE: IMAGE from buildah's storage as a docker archive naming it NAME, atomically.
export_archive() {
    local image="$1" name="$2" archive="$3"
    local partial="$archive.partial-$$"
    rm -f "$partial"
    "${buildah[@]}" push --quiet "$image" "docker-archive:$partial:$name" >&2
    mv "$partial" "$archive"
}

pause_archive() {
    local archive="$images_dir/pause-$PAUSE_TAG.tar"
    if [[ ! -f $archive ]]; then
        local source work container
        source="$(GOTOOLCHAIN=local go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
            sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')/build/pause/linux/pause.c"
        work="$(mktemp -d)"
        log "building pause $PAUSE_TAG from $source"
        gcc -Os -static -Wall -Werror -DVERSION="v$PAUSE_TAG" -o "$work/pause" "$source"
        container="$("${buildah[@]}" from scratch)"
        "${buildah[@]}" copy --quiet "$container" "$work/pause" /pause >/dev/null
        "${buildah[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$container"
        "${buildah[@]}" commit --quiet --rm "$container" "localhost/pause:$PAUSE_TAG" >/dev/null
        rm -rf "$work"
        export_archive "localhost/pause:$PAUSE_TAG" "registry.k8s.io/pause:$PAUSE_TAG" "$archive"
    fi
    echo "registry.k8s.io/pause:$PAUSE_TAG $archive"
}

# Debian's minimal system with python3 and venv: what the Dockerfile's RUN lines need from its base.
base_image() {
    if "${buildah[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
        return
    fi
    local work container mirror
    work="$(mktemp -d)"
    mirror="${CZ_AGENT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    log "debootstrap $SUITE ($BASE_PACKAGES) from $mirror"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$work/rootfs" "$mirror" >&2
    # The container runtime mounts /dev, /proc and /sys; apt's downloaded packages are of no use in an image.
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    tar -C "$work/rootfs" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf "$work/rootfs.tar" .
    container="$("${buildah[@]}" from scratch)"
    "${buildah[@]}" add --quiet "$container" "$work/rootfs.tar" / >/dev/null
    "${buildah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd '["python3"]' "$container"
    "${buildah[@]}" commit --quiet --rm "$container" "$BASE_IMAGE" >/dev/null
    rm -rf "$work"
}

agent_archive() {
    base_image
    local work image_id archive
    work="$(mktemp -d)"
    # This machine may reach PyPI through a TLS-intercepting proxy: the build's RUN lines trust the host's CAs
    # (mounted for the build only, never in a layer), pip included.
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$work/pip.conf"
    log "buildah bud $repo/Dockerfile on $BASE_IMAGE"
    "${buildah[@]}" bud --quiet --layers --format docker --isolation chroot --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
        --volume "$work/pip.conf:/etc/pip.conf:ro" \
        --iidfile "$work/image-id" --tag "localhost/cz-allocation-agent:build" "$repo" >&2
    image_id="$(cut -d: -f2 <"$work/image-id" | cut -c1-12)"
    rm -rf "$work"
    archive="$images_dir/cz-allocation-agent-$image_id.tar"
    if [[ ! -f $archive ]]; then
        export_archive "$image_id" "$AGENT_IMAGE:test-$image_id" "$archive"
        # An archive is the size of the image: only the latest is kept.
        find "$images_dir" -name 'cz-allocation-agent-*.tar' ! -name "${archive##*/}" -delete
    fi
    echo "$AGENT_IMAGE:test-$image_id $archive"
}

main() {
    mkdir -p "$images_dir"
    local started=$SECONDS
    pause_archive
    agent_archive
    log "images ready in $((SECONDS - started)) s"
}

main "$@"
