#!/usr/bin/env bash
# Installs (once, then cached by version) the object-storage servers the integration tests start, and prints
# one line per tool, "name: path":
#   moto-server       moto in server mode (S3), in a virtualenv of its own: its many dependencies stay out of
#                     the project's locks
#   azurite-blob      Azurite's Blob service (Azure), from npm
#   fake-gcs-server   fake-gcs-server (Google Cloud Storage), built from the Go module proxy
# Progress goes to stderr.
set -euo pipefail

MOTO_VERSION="5.1.20"
AZURITE_VERSION="3.37.0"
FAKE_GCS_VERSION="v1.56.1"

cache_root="${CZ_AGENT_CACHE:-$HOME/.cache/cz-agent}"
export GOTOOLCHAIN=local

log() {
    echo "object-stores: $*" >&2
}

moto_dir="$cache_root/moto-$MOTO_VERSION"
if [[ ! -x $moto_dir/bin/moto_server ]]; then
    log "installing moto[server]==$MOTO_VERSION"
    rm -rf "$moto_dir"
    python3 -m venv "$moto_dir"
    "$moto_dir/bin/pip" install --quiet "moto[server]==$MOTO_VERSION" >&2
fi

azurite_dir="$cache_root/azurite-$AZURITE_VERSION"
azurite_main="$azurite_dir/node_modules/azurite/dist/src/blob/main.js"
if [[ ! -f $azurite_main ]]; then
    log "installing azurite@$AZURITE_VERSION"
    rm -rf "$azurite_dir"
    npm install --silent --no-audit --no-fund --prefix "$azurite_dir" "azurite@$AZURITE_VERSION" >&2
fi

gcs_dir="$cache_root/bin/fake-gcs-server-$FAKE_GCS_VERSION"
if [[ ! -x $gcs_dir/fake-gcs-server ]]; then
    log "building github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION"
    mkdir -p "$gcs_dir"
    GOBIN="$gcs_dir" go install -trimpath -ldflags "-s -w" "github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION" >&2
fi

echo "moto-server: $moto_dir/bin/moto_server"
echo "azurite-blob: $azurite_main"
echo "fake-gcs-server: $gcs_dir/fake-gcs-server"
