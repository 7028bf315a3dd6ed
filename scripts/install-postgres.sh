#!/usr/bin/env bash
# Install Debian's PostgreSQL server for the integration tests without starting the packaged cluster: the
# tests initdb and start their own throwaway one. Prints the directory holding initdb, pg_ctl and postgres.
set -euo pipefail

server_bin_dir() {
    local candidate
    if candidate=$(command -v postgres) && [[ -x $(dirname "$(readlink -f "$candidate")")/initdb ]]; then
        dirname "$(readlink -f "$candidate")"
        return 0
    fi
    for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x $candidate/postgres && -x $candidate/initdb ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if bin_dir=$(server_bin_dir); then
    echo "postgres: $bin_dir"
    exit 0
fi

"$(dirname "$0")/apt-install.sh" postgresql

# Belt and braces for systems whose postinst ignored the policy: stop the packaged cluster.
if command -v service >/dev/null && service postgresql status >/dev/null 2>&1; then
    service postgresql stop || true
fi

bin_dir=$(server_bin_dir)
echo "postgres: $bin_dir"
