#!/usr/bin/env bash
# One local Apache Cassandra 5.0 node from Maven jars (no tarball, no Docker), for development,
# tests and benchmarks: the storage under JanusGraph's CQL backend (docker/janusgraph, BACKEND=cql).
#
#   bash docker/cassandra/dev.sh start    # idempotent: fetch jars once, render config, start, wait for CQL
#   bash docker/cassandra/dev.sh stop     # SIGTERM: the node drains (flushes every memtable) and exits
#   bash docker/cassandra/dev.sh status
#
# Environment (nothing is exported to the caller):
#   CASSANDRA_PORT           CQL native transport on 127.0.0.1 (default 19042)
#   CASSANDRA_STORAGE_PORT   inter-node (gossip) port on 127.0.0.1 (default CASSANDRA_PORT + 1)
#   CASSANDRA_HEAP           JVM heap size (default 1g)
#   CASSANDRA_WAIT_SECONDS   how long start waits for CQL to answer (default 120)
#   CASSANDRA_STATE_DIR      data, rendered config and logs (default var/cassandra/state-PORT)
#   CASSANDRA_RUN_DIR        pid and console log files (default var/run)
# State lives under var/ (git-ignored): jars in var/cassandra/lib (shared by every node), data in
# var/cassandra/state-PORT/data, the rendered cassandra.yaml next to it, pid and log in var/run/.
# No JMX port is opened (so no nodetool): stop drains the node, which is what a flush is for here.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VAR="$ROOT/var"
DEFAULT_PORT=19042
PORT="${CASSANDRA_PORT:-$DEFAULT_PORT}"
STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-$((PORT + 1))}"
HEAP="${CASSANDRA_HEAP:-1g}"
WAIT_SECONDS="${CASSANDRA_WAIT_SECONDS:-120}"

if [ "$PORT" = "$DEFAULT_PORT" ]; then NAME=cassandra; else NAME="cassandra-$PORT"; fi
LIB="$VAR/cassandra/lib"
STATE="${CASSANDRA_STATE_DIR:-$VAR/cassandra/state-$PORT}"
DATA="$STATE/data"
CONF="$STATE/conf"
CONFIG="$CONF/cassandra.yaml"
RUN="${CASSANDRA_RUN_DIR:-$VAR/run}"
PIDFILE="$RUN/$NAME.pid"
LOGFILE="$RUN/$NAME.log"
JARS_STAMP="$LIB/.complete"

WHO=cassandra
# shellcheck source=../dev/lib.sh
. "$ROOT/docker/dev/lib.sh"

# The node's pid when our pid file names a live CassandraDaemon using our config.
running_pid() { pid_matching "-Dcassandra.config=file://$CONFIG "; }

ensure_jars() {
  if jars_ready; then return 0; fi
  collect_jars "node's classpath" Cassandra
  ls "$LIB"/cassandra-all-*.jar >/dev/null 2>&1 || die "cassandra-all jar missing in $LIB after mvn"
  ls "$LIB"/jamm-*.jar >/dev/null 2>&1 || die "jamm jar (the -javaagent) missing in $LIB after mvn"
  touch "$JARS_STAMP"
}

render_config() {
  mkdir -p "$DATA" "$CONF"
  sed -e "s#@PORT@#$PORT#g" -e "s#@STORAGE_PORT@#$STORAGE_PORT#g" -e "s#@DATA_DIR@#$DATA#g" \
    "$HERE/cassandra.yaml" >"$CONFIG.tmp"
  mv "$CONFIG.tmp" "$CONFIG"
  cp "$HERE/logback.xml" "$CONF/logback.xml"
}

java_cmd() {
  # Fills the JAVA array: jvm17.options, the heap, jamm as agent, and the node's own properties.
  local opts=() line jamm
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line%%#*}"
    line="${line#"${line%%[![:space:]]*}"}"
    line="${line%"${line##*[![:space:]]}"}"
    [ -z "$line" ] && continue
    # shellcheck disable=SC2206 # "--add-opens x=y": two words on purpose
    opts+=($line)
  done <"$HERE/jvm17.options"
  jamm="$(ls "$LIB"/jamm-*.jar | head -1)"
  JAVA=(java "-Xms$HEAP" "-Xmx$HEAP" "${opts[@]}" "-javaagent:$jamm"
    "-Dcassandra.config=file://$CONFIG" "-Dcassandra.storagedir=$DATA" "-Dcassandra.logdir=$STATE/logs"
    "-Dlogback.configurationFile=$CONF/logback.xml" -Dcassandra-foreground=yes
    -Dcassandra.ring_delay_ms=1000 -Dcassandra.skip_wait_for_gossip_to_settle=0
    -cp "$CONF:$LIB/*" org.apache.cassandra.service.CassandraDaemon)
}

start() {
  local pid
  if pid="$(running_pid)"; then
    if port_open "$PORT"; then
      say "already running (pid $pid), CQL on 127.0.0.1:$PORT"
      return 0
    fi
    say "pid $pid is up but CQL does not answer yet; waiting"
  else
    if port_open "$PORT"; then die "127.0.0.1:$PORT is in use by another process (set CASSANDRA_PORT)"; fi
    if port_open "$STORAGE_PORT"; then
      die "127.0.0.1:$STORAGE_PORT is in use by another process (set CASSANDRA_STORAGE_PORT)"
    fi
    ensure_jars
    render_config
    mkdir -p "$RUN" "$STATE/logs"
    : >"$LOGFILE"
    java_cmd
    # setsid: the node outlives the shell (and make, and pytest) that started it.
    setsid "${JAVA[@]}" >>"$LOGFILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PIDFILE"
  fi
  wait_started "$pid" "Starting listening for CQL clients" "$WAIT_SECONDS" node CQL 30
  say "started (pid $pid), CQL on 127.0.0.1:$PORT (CASSANDRA_PORT=$PORT), data $DATA, log $LOGFILE"
}

stop() { stop_server node 60; }

status() { status_server "CQL on 127.0.0.1:$PORT, data $DATA"; }

dev_command "$@"
