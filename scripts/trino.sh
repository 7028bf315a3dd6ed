#!/usr/bin/env bash
# Installs (once, then cached by version) the Trino server the push-down tests start, and prints two lines:
#   trino-server      the server's directory: lib/, bin/, and plugin/hive alone (a one-node server with the Hive
#                     connector needs nothing else; the other connectors are most of the 821 MB tarball)
#   trino-java-home   a Java 24 or later to run it with: $JAVA_HOME when it is one, else the highest version under
#                     /usr/lib/jvm (the machine's default java may be older)
# The tarball comes from Maven Central, checked against the SHA-1 published beside it, and is kept under
# downloads/ in the cache, where a later extract reuses it once it checks out again.
# Progress goes to stderr.
set -euo pipefail

TRINO_VERSION="476"
JAVA_MIN_VERSION=24
MAVEN_URL="https://repo1.maven.org/maven2/io/trino/trino-server/$TRINO_VERSION/trino-server-$TRINO_VERSION.tar.gz"

cache_root="${CZ_AGENT_CACHE:-$HOME/.cache/cz-agent}"
server_dir="$cache_root/trino-server-$TRINO_VERSION"
downloads="$cache_root/downloads"
tarball="$downloads/trino-server-$TRINO_VERSION.tar.gz"

log() {
    echo "trino: $*" >&2
}

# The major version of the Java at JAVA_HOME $1 (8 for 1.8), or 0 when there is no java there.
java_major() {
    local version=""
    if [[ -x $1/bin/java ]]; then
        version="$("$1/bin/java" -XshowSettings:properties -version 2>&1 |
            sed -n 's/^ *java\.specification\.version = \(1\.\)\{0,1\}\([0-9]*\).*/\2/p')"
    fi
    echo "${version:-0}"
}

# $JAVA_HOME when it is recent enough, else the highest version under /usr/lib/jvm.
find_java_home() {
    if [[ -n ${JAVA_HOME:-} && $(java_major "$JAVA_HOME") -ge $JAVA_MIN_VERSION ]]; then
        echo "$JAVA_HOME"
        return
    fi
    local candidate major best="" best_major=0
    for candidate in /usr/lib/jvm/*/; do
        candidate="${candidate%/}"
        major="$(java_major "$candidate")"
        if [[ $major -gt $best_major ]]; then
            best="$candidate" best_major="$major"
        fi
    done
    if [[ $best_major -ge $JAVA_MIN_VERSION ]]; then
        echo "$best"
        return
    fi
    log "Trino $TRINO_VERSION needs Java $JAVA_MIN_VERSION or later: none at JAVA_HOME (${JAVA_HOME:-unset}) or under" \
        "/usr/lib/jvm; install one (e.g. Temurin 25) or point JAVA_HOME at it"
    exit 1
}

verified() {
    [[ -f $tarball && -f $tarball.sha1 ]] &&
        echo "$(head -c 40 "$tarball.sha1")  $tarball" | sha1sum --check --status
}

download() {
    mkdir -p "$downloads"
    log "downloading $MAVEN_URL (821 MB)"
    curl --fail --silent --show-error --location --retry 5 --retry-delay 5 --retry-all-errors \
        --output "$tarball.sha1.part" "$MAVEN_URL.sha1"
    curl --fail --silent --show-error --location --retry 5 --retry-delay 5 --retry-all-errors \
        --output "$tarball.part" "$MAVEN_URL"
    mv "$tarball.sha1.part" "$tarball.sha1"
    mv "$tarball.part" "$tarball"
    if ! verified; then
        rm -f "$tarball" "$tarball.sha1"
        log "$MAVEN_URL does not match its published SHA-1"
        exit 1
    fi
}

# Extracts lib/, bin/ and plugin/hive into $1. Most of plugin/hive's jars are hard links to files of other
# plugins' directories: those files are extracted too, then their directories removed (the links keep the files).
extract() {
    local into="$1" top="trino-server-$TRINO_VERSION"
    local link_targets
    link_targets="$(tar --list --verbose --gzip --file "$tarball" "$top/plugin/hive" |
        awk -v hive="$top/plugin/hive/" -v lib="$top/lib/" \
            '$1 ~ /^h/ && index($6, hive) == 1 && $6 !~ /\/hdfs\// && index($NF, lib) != 1 { print $NF }')"
    # plugin/hive/hdfs serves only the legacy Hadoop file systems (fs.hadoop.enabled); the tests use the native
    # local one.
    # shellcheck disable=SC2086 # one member per word: the paths have no spaces
    tar --extract --gzip --file "$tarball" --directory "$into" --exclude "$top/plugin/hive/hdfs" \
        "$top/NOTICE" "$top/bin" "$top/lib" $link_targets "$top/plugin/hive"
    find "$into/$top/plugin" -mindepth 1 -maxdepth 1 ! -name hive -exec rm -rf {} +
}

main() {
    local java_home
    java_home="$(find_java_home)"
    if [[ ! -f $server_dir/lib/io.trino_trino-main-$TRINO_VERSION.jar || ! -d $server_dir/plugin/hive ]]; then
        if verified; then
            log "reusing $tarball"
        else
            download
        fi
        local staging started=$SECONDS
        # Extracted beside the cache dir so the final `mv` is an atomic rename: a killed extract leaves no half
        # install.
        staging="$(mktemp -d "$cache_root/.trino-extracting-XXXXXX")"
        trap "rm -rf '$staging'" EXIT
        log "extracting lib/, bin/ and plugin/hive into $server_dir"
        extract "$staging"
        rm -rf "$server_dir"
        mv "$staging/trino-server-$TRINO_VERSION" "$server_dir"
        log "extracted in $((SECONDS - started)) s ($(du -sh "$server_dir" | cut -f1))"
    fi
    echo "trino-server: $server_dir"
    echo "trino-java-home: $java_home"
}

main "$@"
