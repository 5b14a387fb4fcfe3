#!/usr/bin/env bash
# Several Latchkey nodes on one PostgreSQL database behind HAProxy, on this
# machine's loopback: the shape of a production cluster, to try and to load.
#
#   deploy/cluster.sh up [N]   build, start N nodes (default 3) and HAProxy
#   deploy/cluster.sh status   each process and its /readyz
#   deploy/cluster.sh down     stop them, by the process ids written at `up`
#   deploy/cluster.sh install  only install HAProxy if it is missing (the benchmark's --nodes uses it)
#
# Environment (all optional):
#   LATCHKEY_DATABASE_URL  postgres:// URL (default postgres://postgres@127.0.0.1:5432/latchkey_cluster;
#                          the database is created if missing)
#   CLUSTER_DIR            state: pids, logs, config, each node's data dir (default ./cluster-data)
#   CLUSTER_PORT           the load balancer's port (default 8080)
#   NODE_BASE_PORT         node i listens on NODE_BASE_PORT + i (default 8081)
#   LATCHKEY_BIN           a latchkey binary to use instead of building target/release/latchkey
# Every other LATCHKEY_* variable is passed to the nodes (e.g. LATCHKEY_SMTP_URL).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${CLUSTER_DIR:-$ROOT/cluster-data}"
LB_PORT="${CLUSTER_PORT:-8080}"
BASE_PORT="${NODE_BASE_PORT:-8081}"
DB_URL="${LATCHKEY_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/latchkey_cluster}"

say() { echo "cluster: $*" >&2; }

need_haproxy() {
    command -v haproxy >/dev/null && return
    say "installing haproxy (Debian package)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq haproxy >/dev/null
}

wait_ready() { # url what
    for _ in $(seq 1 200); do
        if curl -fsS -o /dev/null "$1/readyz" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    say "$2 did not become ready at $1 (see $DIR/*.log)"
    return 1
}

ensure_database() {
    case "$DB_URL" in postgres://* | postgresql://*) ;; *)
        say "LATCHKEY_DATABASE_URL must be a postgres:// URL: several nodes share one PostgreSQL database"
        exit 2 ;;
    esac
    local name="${DB_URL##*/}"; name="${name%%\?*}"
    local admin="${DB_URL%/*}/postgres"
    if ! psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1; then
        say "creating database $name"
        psql "$admin" -qc "CREATE DATABASE \"$name\""
    fi
}

# What every node must share: the master key (seals the signing keys and the
# OTP secret), the issuer and public URL (the load balancer's), the database.
shared_settings() {
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    if [ -z "${LATCHKEY_MASTER_KEY:-}" ]; then
        [ -f "$DIR/master.key.hex" ] || (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$DIR/master.key.hex")
        LATCHKEY_MASTER_KEY="$(cat "$DIR/master.key.hex")"
    fi
    export LATCHKEY_MASTER_KEY
    export LATCHKEY_DATABASE_URL="$DB_URL"
    export LATCHKEY_ISSUER="${LATCHKEY_ISSUER:-http://127.0.0.1:$LB_PORT}"
    export LATCHKEY_PUBLIC_URL="${LATCHKEY_PUBLIC_URL:-http://127.0.0.1:$LB_PORT}"
    # HAProxy adds X-Forwarded-For: the nodes believe it from loopback only,
    # so the rate limit and lockouts key on the real client.
    export LATCHKEY_TRUSTED_PROXIES="${LATCHKEY_TRUSTED_PROXIES:-127.0.0.1/32}"
}

up() {
    local nodes="${1:-3}"
    if [ -f "$DIR/haproxy.pid" ]; then say "already up (deploy/cluster.sh down first)"; exit 1; fi
    # A start that fails half-way stops what it started.
    trap 'say "start failed; stopping what was started"; down' ERR
    need_haproxy
    local bin="${LATCHKEY_BIN:-}"
    if [ -z "$bin" ]; then
        say "building target/release/latchkey"
        (cd "$ROOT" && cargo build --release --quiet --bin latchkey)
        bin="$ROOT/target/release/latchkey"
    fi
    ensure_database
    shared_settings
    "$bin" migrate
    local servers=""
    for i in $(seq 1 "$nodes"); do
        local port=$((BASE_PORT + i - 1))
        mkdir -p "$DIR/node$i"
        LATCHKEY_BIND="127.0.0.1:$port" LATCHKEY_DATA_DIR="$DIR/node$i" \
            nohup "$bin" serve >"$DIR/node$i.log" 2>&1 &
        echo $! >"$DIR/node$i.pid"
        wait_ready "http://127.0.0.1:$port" "node $i"
        say "node $i: pid $(cat "$DIR/node$i.pid"), http://127.0.0.1:$port"
        servers="$servers    server node$i 127.0.0.1:$port check inter 1s fall 2 rise 1"$'\n'
    done
    cat >"$DIR/haproxy.cfg" <<CFG
global
    maxconn 4096
defaults
    mode http
    option forwardfor
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend latchkey
    bind 127.0.0.1:$LB_PORT
    default_backend nodes
backend nodes
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
$servers
CFG
    haproxy -f "$DIR/haproxy.cfg" -db >"$DIR/haproxy.log" 2>&1 &
    echo $! >"$DIR/haproxy.pid"
    wait_ready "http://127.0.0.1:$LB_PORT" "haproxy"
    say "haproxy: pid $(cat "$DIR/haproxy.pid"), http://127.0.0.1:$LB_PORT -> $nodes nodes"
    trap - ERR
    say "an admin token: LATCHKEY_MASTER_KEY=\$(cat $DIR/master.key.hex) LATCHKEY_DATABASE_URL=$DB_URL LATCHKEY_ISSUER=$LATCHKEY_ISSUER $bin admin-token"
}

stop_pid_file() { # file
    local file="$1" pid
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$file"
}

down() {
    [ -d "$DIR" ] || { say "nothing to stop"; return; }
    [ -f "$DIR/haproxy.pid" ] && stop_pid_file "$DIR/haproxy.pid"
    for file in "$DIR"/node*.pid; do
        [ -f "$file" ] && stop_pid_file "$file"
    done
    say "stopped"
}

status() {
    for file in "$DIR"/haproxy.pid "$DIR"/node*.pid; do
        [ -f "$file" ] || continue
        local pid; pid="$(cat "$file")"
        if kill -0 "$pid" 2>/dev/null; then echo "$(basename "$file" .pid): pid $pid running"; else echo "$(basename "$file" .pid): pid $pid gone"; fi
    done
    curl -fsS -o /dev/null -w "load balancer /readyz: %{http_code}\n" "http://127.0.0.1:$LB_PORT/readyz" || echo "load balancer: not answering"
}

case "${1:-}" in
    up) up "${2:-3}" ;;
    down) down ;;
    status) status ;;
    install) need_haproxy ;;
    *) sed -n '2,17p' "$0"; exit 2 ;;
esac
