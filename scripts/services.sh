#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis answer on 127.0.0.1 (5432, 6379): starts
# them when installed but stopped, installs the Debian packages when missing
# (as root), and otherwise says exactly what to install. Idempotent.
#
# With the argument `cluster` (or HAWKER_REDIS_CLUSTER=1) it also makes sure a
# local Redis Cluster answers on 127.0.0.1:7000-7005 (3 masters, 3 replicas)
# for the cluster test suites.
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

CLUSTER_PORTS=(7000 7001 7002 7003 7004 7005)

cluster_dir() {
  if is_root; then
    echo /var/lib/redis-cluster
  else
    echo "${TMPDIR:-/tmp}/hawker-redis-cluster"
  fi
}

node_state_ok() {
  redis-cli -h 127.0.0.1 -p "$1" cluster info 2>/dev/null | tr -d '\r' | grep -qx 'cluster_state:ok'
}

# ok, 3 masters with slots, and together they cover all 16384 slots.
cluster_healthy() {
  node_state_ok "${CLUSTER_PORTS[0]}" || return 1
  local nodes
  nodes=$(redis-cli -h 127.0.0.1 -p "${CLUSTER_PORTS[0]}" cluster nodes 2>/dev/null | tr -d '\r') || return 1
  printf '%s\n' "$nodes" | awk '
    $3 ~ /master/ && $3 !~ /fail/ && NF > 8 {
      masters++
      for (i = 9; i <= NF; i++) {
        if ($i ~ /^\[/) continue
        n = split($i, r, "-")
        slots += (n == 2) ? r[2] - r[1] + 1 : 1
      }
    }
    END { exit !(masters == 3 && slots == 16384) }'
}

ensure_redis_cluster() {
  if cluster_healthy; then
    log "Redis Cluster is up on 127.0.0.1:${CLUSTER_PORTS[0]}-${CLUSTER_PORTS[5]}"
    return
  fi
  local base port
  base=$(cluster_dir)
  # The cluster is broken or half there: stop its nodes and start fresh (a
  # stale nodes-<port>.conf would make a node rejoin the broken cluster, and
  # `--cluster create` refuses nodes that already know others). A server on
  # one of those ports that is no cluster node is not ours: say so and stop.
  for port in "${CLUSTER_PORTS[@]}"; do
    redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG || continue
    if ! redis-cli -h 127.0.0.1 -p "$port" info cluster 2>/dev/null | tr -d '\r' | grep -qx 'cluster_enabled:1'; then
      log "a Redis that is no cluster node answers on 127.0.0.1:$port; stop it and run again"
      exit 1
    fi
    log "stopping the cluster node on 127.0.0.1:$port (the cluster is not ok)"
    redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  for port in "${CLUSTER_PORTS[@]}"; do
    for _ in $(seq 1 40); do
      redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 || break
      sleep 0.25
    done
    if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
      if [ -f "$base/$port/redis.pid" ]; then
        kill -9 "$(cat "$base/$port/redis.pid")" 2>/dev/null || true
        sleep 0.5
      fi
      if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
        log "the cluster node on 127.0.0.1:$port does not stop; stop it and run again"
        exit 1
      fi
    fi
    rm -rf "${base:?}/$port"
  done
  log "starting a Redis Cluster on 127.0.0.1:${CLUSTER_PORTS[0]}-${CLUSTER_PORTS[5]} in $base"
  local addrs=()
  for port in "${CLUSTER_PORTS[@]}"; do
    mkdir -p "$base/$port"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" \
      --cluster-enabled yes --cluster-config-file "nodes-$port.conf" \
      --cluster-node-timeout 1000 --save "" --appendonly no \
      --dir "$base/$port" --logfile "$base/$port/redis.log" \
      --pidfile "$base/$port/redis.pid"
    addrs+=("127.0.0.1:$port")
  done
  for port in "${CLUSTER_PORTS[@]}"; do
    local up=0
    for _ in $(seq 1 40); do
      if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
        up=1
        break
      fi
      sleep 0.25
    done
    if [ "$up" != 1 ]; then
      log "Redis did not come up on 127.0.0.1:$port (see $base/$port/redis.log)"
      exit 1
    fi
  done
  if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
    >"$base/create.log" 2>&1; then
    log "redis-cli --cluster create failed (see $base/create.log)"
    exit 1
  fi
  for _ in $(seq 1 80); do
    local all_ok=1
    for port in "${CLUSTER_PORTS[@]}"; do
      node_state_ok "$port" || { all_ok=0; break; }
    done
    if [ "$all_ok" = 1 ] && cluster_healthy; then
      log "Redis Cluster is up on 127.0.0.1:${CLUSTER_PORTS[0]}-${CLUSTER_PORTS[5]} (3 masters, 3 replicas)"
      return
    fi
    sleep 0.25
  done
  log "the Redis Cluster on 127.0.0.1:${CLUSTER_PORTS[0]}-${CLUSTER_PORTS[5]} did not reach cluster_state:ok within 20 s (see $base/*/redis.log)"
  exit 1
}

if ! command -v pg_isready >/dev/null 2>&1; then
  apt_install postgresql postgresql-contrib
fi
ensure_postgres
ensure_redis
log "PostgreSQL and Redis are up"
if [ "${HAWKER_REDIS_CLUSTER:-}" = 1 ] || [ "${1:-}" = cluster ]; then
  ensure_redis_cluster
fi
