#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis answer on 127.0.0.1 (5432, 6379): starts
# them when installed but stopped, installs the Debian packages when missing
# (as root), and otherwise says exactly what to install. Idempotent.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_PORT=6379

log() { printf '[services] %s\n' "$*" >&2; }

is_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
  if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
    log "missing: $* — install it with: sudo apt-get install -y $*"
    exit 1
  fi
  log "installing $* from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }

ensure_postgres() {
  if command -v pg_isready >/dev/null 2>&1 && pg_up; then
    return
  fi
  local installed_now=0
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    apt_install postgresql postgresql-contrib
    installed_now=1
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ "$installed_now" = 1 ]; then
    # A fresh cluster only trusts local peers; hawker's development URL
    # connects as postgres over 127.0.0.1 without a password.
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! grep -q "hawker-dev" "$hba"; then
      sed -i '1i host all all 127.0.0.1/32 trust # hawker-dev\nhost all all ::1/128 trust # hawker-dev' "$hba"
    fi
  fi
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || pg_ctlcluster "$version" main start 2>/dev/null || true
  for _ in $(seq 1 60); do
    pg_up && return
    sleep 0.5
  done
  log "PostgreSQL did not come up on $PG_HOST:$PG_PORT"
  exit 1
}

redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    apt_install redis-server redis-tools
  fi
  redis_up && return
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  local dir=/var/lib/redis logfile=/var/log/redis/ci.log
  if ! is_root; then
    dir=${TMPDIR:-/tmp}
    logfile="$dir/hawker-redis.log"
  fi
  mkdir -p "$dir" "$(dirname "$logfile")"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir "$dir" --logfile "$logfile"
  for _ in $(seq 1 40); do
    redis_up && return
    sleep 0.25
  done
  log "Redis did not come up on 127.0.0.1:$REDIS_PORT"
  exit 1
}

if ! command -v pg_isready >/dev/null 2>&1; then
  apt_install postgresql postgresql-contrib
fi
ensure_postgres
ensure_redis
log "PostgreSQL and Redis are up"
