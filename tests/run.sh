#!/usr/bin/env bash
# Sets up everything the test suite needs on this machine, then runs the whole suite:
#   - system packages through apt-get when run as root (zsh, tmux, PostgreSQL …), skipped otherwise;
#   - a virtualenv in .venv with the project (editable) and its test dependencies;
#   - the services the tests use (a throwaway PostgreSQL cluster under .venv/pg);
#   - pytest, with any arguments passed through (tests/run.sh -k hooks -x).
# Idempotent: a second run reuses what the first one set up.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(zsh tmux postgresql)
# --- apt packages for the destination/alert tests (owner: destinations/alerts) ---------------
packages+=(prometheus-alertmanager)   # tests/test_alerts.py runs the real Alertmanager v2 API
# --- end of destination/alert packages ----------------------------------------------------------
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    missing=()
    for p in "${packages[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "tests/run.sh: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

# --- PostgreSQL for the collector tests (owner: collector/sync) -------------------------------
# A throwaway cluster, initialised once and started if it is not running; the tests create and
# drop their own databases in it. postgres refuses to run as root, so as root the cluster belongs
# to Debian's `postgres` user (it must be able to reach the directory: .venv/pg, else /var/tmp).
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
pg_port=${KUBECTL_RECORD_TEST_PG_PORT:-54329}
if [[ -z ${KUBECTL_RECORD_TEST_PG:-} && -n $pg_bin ]] && "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; then
    export KUBECTL_RECORD_TEST_PG="postgresql://postgres@127.0.0.1:$pg_port/postgres"  # already up: reuse it
elif [[ -z ${KUBECTL_RECORD_TEST_PG:-} && -n $pg_bin ]]; then
    as_pg=()
    pg_dir=$PWD/.venv/pg
    if [[ $(id -u) == 0 ]]; then
        as_pg=(runuser -u postgres --)
        if ! runuser -u postgres -- test -x "$PWD/.venv"; then
            pg_dir=/var/tmp/kubectl-record-pg-$(printf %s "$PWD" | md5sum | cut -c1-8)
        fi
    fi
    mkdir -p "$pg_dir"
    [[ $(id -u) == 0 ]] && chown postgres: "$pg_dir"
    if [[ ! -f $pg_dir/data/PG_VERSION ]]; then
        "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust --no-sync >/dev/null
    fi
    if ! "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" status >/dev/null 2>&1; then
        "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 start \
            -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c synchronous_commit=off -c max_connections=200" >/dev/null
    fi
    export KUBECTL_RECORD_TEST_PG="postgresql://postgres@127.0.0.1:$pg_port/postgres"
fi
# --- end of PostgreSQL --------------------------------------------------------------------------

export PATH=$PWD/.venv/bin:$PATH
exec python -m pytest "$@"
