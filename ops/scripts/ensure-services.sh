#!/usr/bin/env bash
# Make sure the servers the integration and fleet tests use are up on their standard
# loopback ports: PostgreSQL 15 (5432), MariaDB (3306), Redis (6379), RabbitMQ (5672).
# Starts the ones that are down with the machine's own service commands (needs root);
# prints what it did. Tests skip locally / fail under CI=true for a server still missing.
set -u

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local name=$1 port=$2 i
  for i in $(seq 1 60); do
    up "$port" && { echo "ensure-services: $name up on :$port"; return 0; }
    sleep 1
  done
  echo "ensure-services: $name still not listening on :$port after 60s" >&2
  return 1
}

start() {
  local name=$1 port=$2; shift 2
  if up "$port"; then echo "ensure-services: $name already up on :$port"; return 0; fi
  if [ "$(id -u)" != 0 ]; then echo "ensure-services: $name is down and starting it needs root" >&2; return 1; fi
  echo "ensure-services: starting $name"
  "$@" >/dev/null 2>&1 || true
  wait_port "$name" "$port"
}

# Debian packages the tests use (idempotent: installs only what is missing, only as root, quietly; the
# package list is refreshed only when an install from the current one fails).
ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then echo "ensure-services: missing ${missing[*]} (installing needs root)" >&2; return 0; fi
  echo "ensure-services: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300)
  "${apt[@]}" "${missing[@]}" >/dev/null 2>&1 || \
    { apt-get update -qq >/dev/null 2>&1; "${apt[@]}" "${missing[@]}" >/dev/null 2>&1; } || \
    echo "ensure-services: could not install ${missing[*]}" >&2
}

ensure_packages postgresql-15-hypopg postgresql-15-pg-qualstats  # tuning: hypothetical indexes, predicate stats
# ClickHouse and node_exporter: the tests start their own servers from these packages on free ports with their
# data in temp dirs (tests/servers.py ClickHouseServer; the host-metrics tests); here they are only installed
ensure_packages clickhouse-server prometheus-node-exporter
# the realtime dashboard's browser test drives Debian's headless Chromium through chromedriver
ensure_packages chromium chromium-driver
# ops/bench/migration.py part C compares with `psql COPY | clickhouse-client` (Debian ships no `clickhouse` binary)
ensure_packages clickhouse-client

start postgresql 5432 bash -c 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main start'
start mariadb 3306 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
start redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
  --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
start rabbitmq 5672 rabbitmq-server -detached
exit 0  # the tests themselves decide: skip locally, fail in CI (tests/servers.py)
