#!/usr/bin/env bash
# A private one-shard Redis Cluster for `hawker-loadtest fanout --redis-cluster`:
# one master on 127.0.0.1:7100 serving all 16384 slots and its replica on 7101,
# the same shape as one shard of the local 3+3 cluster (7000-7005,
# scripts/services.sh cluster), so "1 shard" and "3 shards" runs differ in the
# number of masters only. `redis-cli --cluster create` needs 3 masters, so the
# slots are assigned by hand (CLUSTER ADDSLOTSRANGE) and the replica joined with
# CLUSTER MEET / CLUSTER REPLICATE.
#
#   loadtest/cluster-1shard.sh start   # idempotent: does nothing if it is up and ok
#   loadtest/cluster-1shard.sh stop    # shuts both nodes down, removes their files
#
# Files in ${HAWKER_CLUSTER_1SHARD_DIR:-${TMPDIR:-/tmp}/hawker-cluster-1shard}.
# Every wait is bounded (10 s); it fails rather than hang.
set -euo pipefail

MASTER=7100
REPLICA=7101
BASE=${HAWKER_CLUSTER_1SHARD_DIR:-${TMPDIR:-/tmp}/hawker-cluster-1shard}

log() { echo "cluster-1shard: $*" >&2; }
cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }
up() { cli "$1" ping 2>/dev/null | grep -q PONG; }
# info_field PORT FIELD COMMAND…: FIELD of an INFO-style answer.
info_field() { cli "$1" "${@:3}" 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"; }

# Waits (at most 10 s) until the command succeeds.
wait_for() {
  local what=$1
  shift
  for _ in $(seq 1 40); do
    if "$@"; then return 0; fi
    sleep 0.25
  done
  log "gave up waiting for $what"
  return 1
}

healthy() {
  [ "$(info_field $MASTER cluster_state cluster info)" = ok ] &&
    [ "$(info_field $MASTER cluster_known_nodes cluster info)" = 2 ] &&
    [ "$(info_field $REPLICA role info replication)" = slave ] &&
    [ "$(info_field $REPLICA master_link_status info replication)" = up ]
}

stop_node() {
  local port=$1
  if up "$port"; then
    if [ "$(info_field "$port" cluster_enabled info cluster)" != 1 ]; then
      log "a Redis that is no cluster node answers on 127.0.0.1:$port: not ours, not stopping it"
      exit 1
    fi
    cli "$port" shutdown nosave >/dev/null 2>&1 || true
    if ! wait_for "127.0.0.1:$port to stop" bash -c "! redis-cli -h 127.0.0.1 -p $port ping >/dev/null 2>&1"; then
      [ -f "$BASE/$port/redis.pid" ] && kill -9 "$(cat "$BASE/$port/redis.pid")" 2>/dev/null || true
    fi
  fi
  rm -rf "${BASE:?}/$port"
}

start_node() {
  local port=$1
  mkdir -p "$BASE/$port"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" \
    --cluster-enabled yes --cluster-config-file "nodes-$port.conf" \
    --cluster-node-timeout 1000 --save "" --appendonly no \
    --dir "$BASE/$port" --logfile "$BASE/$port/redis.log" \
    --pidfile "$BASE/$port/redis.pid"
  wait_for "Redis on 127.0.0.1:$port (see $BASE/$port/redis.log)" up "$port"
}

case "${1:-}" in
  start)
    if healthy; then
      log "up on 127.0.0.1:$MASTER (master, slots 0-16383) and $REPLICA (replica)"
      exit 0
    fi
    # Half there or broken: start fresh.
    stop_node $MASTER
    stop_node $REPLICA
    start_node $MASTER
    start_node $REPLICA
    cli $MASTER cluster addslotsrange 0 16383 >/dev/null
    cli $REPLICA cluster meet 127.0.0.1 $MASTER >/dev/null
    master_id=$(cli $MASTER cluster myid | tr -d '\r')
    wait_for "the replica to learn the master" bash -c \
      "redis-cli -h 127.0.0.1 -p $REPLICA cluster nodes | grep -q '^$master_id '"
    cli $REPLICA cluster replicate "$master_id" >/dev/null
    wait_for "cluster_state:ok and the replica in sync" healthy
    log "started: 127.0.0.1:$MASTER (master, slots 0-16383), $REPLICA (replica), files in $BASE"
    ;;
  stop)
    stop_node $REPLICA
    stop_node $MASTER
    log "stopped"
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
