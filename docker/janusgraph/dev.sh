#!/usr/bin/env bash
# Local JanusGraph Server for development and tests, run from Maven Central jars (no tarball).
#
#   docker/janusgraph/dev.sh start    start in the background (idempotent), wait until it answers
#   docker/janusgraph/dev.sh stop     stop the server this script started
#   docker/janusgraph/dev.sh status   say whether it runs and where it listens
#
# Environment:
#   BACKEND=inmemory|berkeleyje   storage of the four graphs (default inmemory: what tests use)
#   JANUSGRAPH_PORT=18182         Gremlin WebSocket port (127.0.0.1 only)
#   JANUSGRAPH_HEAP=1g            JVM heap
#   JANUSGRAPH_INSTANCE=default   a name for a second, independent server (pid/log/work dir per name;
#                                 the fault tests use their own instance and port)
#   JANUSGRAPH_DATA=<dir>         berkeleyje data directory (default var/janusgraph/<instance>/data)
#
# Layout: jars in var/janusgraph/lib (copied from ~/.m2 by `mvn dependency:copy-dependencies`),
# the working directory var/janusgraph/<instance>/ (server.yaml, conf/, scripts/, data/), and
# var/run/janusgraph[-<instance>].{pid,log}. var/ is ignored by git.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VAR="$ROOT/var"
LIB="$VAR/janusgraph/lib"
BACKEND="${BACKEND:-inmemory}"
PORT="${JANUSGRAPH_PORT:-18182}"
HEAP="${JANUSGRAPH_HEAP:-1g}"
INSTANCE="${JANUSGRAPH_INSTANCE:-default}"
WORK="$VAR/janusgraph/$INSTANCE"
DATA="${JANUSGRAPH_DATA:-$WORK/data}"
RUN="$VAR/run"
if [ "$INSTANCE" = default ]; then NAME=janusgraph; else NAME="janusgraph-$INSTANCE"; fi
PIDFILE="$RUN/$NAME.pid"
LOG="$RUN/$NAME.log"
STATEFILE="$RUN/$NAME.state"
URL="ws://127.0.0.1:$PORT/gremlin"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY=python3

log() { echo "janusgraph: $*" >&2; }

running_pid() {
  # The pid in the pid file, if that process is still our JanusGraph server.
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q JanusGraphServer || return 1
  echo "$pid"
}

state_url() { [ -f "$STATEFILE" ] && sed -n 's/^url=//p' "$STATEFILE"; }

fetch_jars() {
  local stamp
  stamp="$(sha1sum "$HERE/pom.xml" | cut -c1-12)"
  if [ -f "$LIB/.stamp-$stamp" ]; then return 0; fi
  command -v mvn >/dev/null || { log "maven is missing (make install-system)"; exit 1; }
  log "collecting JanusGraph Server jars with maven (cached in ~/.m2)"
  local tmp="$LIB.tmp.$$"
  rm -rf "$tmp"
  mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$tmp" >&2
  rm -rf "$LIB"
  mv "$tmp" "$LIB"
  touch "$LIB/.stamp-$stamp"
}

prepare_work() {
  mkdir -p "$WORK/conf" "$WORK/scripts" "$DATA" "$RUN"
  rm -f "$WORK/conf/"*.properties
  local f
  for f in "$HERE/conf/$BACKEND/"*.properties; do
    # berkeleyje: point each graph's directory at the instance's data directory.
    sed "s#^storage.directory=data/#storage.directory=$DATA/#" "$f" >"$WORK/conf/$(basename "$f")"
  done
  cp "$HERE/scripts/"*.groovy "$WORK/scripts/"
  sed "s/^port: .*/port: $PORT/" "$HERE/server.yaml" >"$WORK/server.yaml"
}

answers() { "$PY" "$HERE/probe.py" "${1:-$URL}" 2>/dev/null; }

start() {
  case "$BACKEND" in inmemory | berkeleyje) ;; *) log "BACKEND must be inmemory or berkeleyje (cql: docker/compose.yaml)"; exit 2 ;; esac
  local pid
  if pid="$(running_pid)"; then
    local have
    have="$(sed -n 's/^backend=//p' "$STATEFILE" 2>/dev/null || true)"
    if [ "$have" != "$BACKEND" ] || [ "$(state_url)" != "$URL" ]; then
      log "already running (pid $pid, backend $have, $(state_url)); stop it first to change backend or port"
      exit 1
    fi
    if answers; then
      log "already running (pid $pid, backend $BACKEND), listening on $URL"
      echo "$URL"
      return 0
    fi
    log "pid $pid is up but does not answer yet; waiting"
  else
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
      log "port $PORT is taken by another process; set JANUSGRAPH_PORT"
      exit 1
    fi
    command -v java >/dev/null || { log "java is missing (make install-system)"; exit 1; }
    fetch_jars
    prepare_work
    : >"$LOG"
    (
      cd "$WORK"
      # setsid: the server outlives make/pytest and is stopped by `dev.sh stop` only.
      exec setsid java -Xms256m -Xmx"$HEAP" -XX:+UseG1GC -Djava.net.preferIPv4Stack=true \
        -Dlog4j.configurationFile="$HERE/log4j2-server.xml" -Dlog4j2.formatMsgNoLookups=true \
        -cp "$LIB/*" org.janusgraph.graphdb.server.JanusGraphServer "$WORK/server.yaml" \
        >>"$LOG" 2>&1 </dev/null
    ) &
    pid=$!
    echo "$pid" >"$PIDFILE"
    printf 'backend=%s\nurl=%s\nwork=%s\ndata=%s\n' "$BACKEND" "$URL" "$WORK" "$DATA" >"$STATEFILE"
    log "started pid $pid (backend $BACKEND, heap $HEAP, log $LOG)"
  fi
  local deadline=$((SECONDS + ${JANUSGRAPH_START_TIMEOUT:-180}))
  until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "the server exited; last lines of $LOG:"
      tail -n 40 "$LOG" >&2
      rm -f "$PIDFILE"
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "no answer on $URL after ${JANUSGRAPH_START_TIMEOUT:-180}s; see $LOG"
      exit 1
    fi
    sleep 1
  done
  log "listening on $URL (traversal sources g_network, g_ipc, g_trace, g_catalog; backend $BACKEND)"
  echo "$URL"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PIDFILE"
    log "not running"
    return 0
  fi
  kill -TERM "$pid"
  local i
  for i in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid ignored TERM for 30s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
  log "stopped pid $pid"
}

status() {
  local pid
  if pid="$(running_pid)"; then
    if answers "$(state_url)"; then
      echo "janusgraph: running (pid $pid, $(sed -n 's/^backend=//p' "$STATEFILE")), listening on $(state_url)"
    else
      echo "janusgraph: pid $pid is up but not answering on $(state_url)"
    fi
  else
    echo "janusgraph: not running"
    return 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
