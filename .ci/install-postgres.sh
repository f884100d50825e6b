#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, pg_ctl, postgres) are installed, for the test
# harness in tests/support/postgres.py, which initdb's and starts its own throwaway server.
# Idempotent. Installing needs root on Debian; the distribution's own cluster is neither
# created nor started.
set -euo pipefail

has_server() {
    [[ -x "$1/initdb" && -x "$1/pg_ctl" && -x "$1/postgres" ]]
}

# Same search as tests/support/postgres.py: pg_config --bindir, then the newest
# /usr/lib/postgresql/*/bin, then the directory of initdb on PATH (symlinks followed).
find_bindir() {
    local dir
    if command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null || true)"
        if [[ -n "$dir" ]] && has_server "$dir"; then
            echo "$dir"
            return 0
        fi
    fi
    local candidates=()
    shopt -s nullglob
    candidates=(/usr/lib/postgresql/*/bin)
    shopt -u nullglob
    if ((${#candidates[@]})); then
        while IFS= read -r dir; do
            if has_server "$dir"; then
                echo "$dir"
                return 0
            fi
        done < <(printf '%s\n' "${candidates[@]}" | sort -V -r)
    fi
    if command -v initdb >/dev/null 2>&1; then
        dir="$(dirname "$(readlink -f "$(command -v initdb)")")"
        if has_server "$dir"; then
            echo "$dir"
            return 0
        fi
    fi
    return 1
}

if ! bindir="$(find_bindir)"; then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "install-postgres: no PostgreSQL server binaries found, and not root to install them" >&2
        exit 1
    fi
    echo "install-postgres: no PostgreSQL server binaries found; installing Debian's postgresql"
    export DEBIAN_FRONTEND=noninteractive

    # Keep package scripts from starting services (unless a policy is already in place).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi

    apt-get update
    # postgresql-common first, to switch off the "main" cluster before the server package.
    apt-get install -y --no-install-recommends postgresql-common
    conf=/etc/postgresql-common/createcluster.conf
    if grep -Eq '^[#[:space:]]*create_main_cluster' "$conf" 2>/dev/null; then
        sed -Ei 's/^[#[:space:]]*create_main_cluster.*/create_main_cluster = false/' "$conf"
    else
        echo 'create_main_cluster = false' >>"$conf"
    fi
    apt-get install -y --no-install-recommends postgresql

    if ! bindir="$(find_bindir)"; then
        echo "install-postgres: postgresql installed, but initdb/pg_ctl/postgres still not found" >&2
        exit 1
    fi
fi

echo "install-postgres: server binaries in $bindir"
"$bindir/postgres" --version
