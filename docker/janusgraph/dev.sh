#!/usr/bin/env bash
# Local JanusGraph Server for development and tests, run from Maven Central jars (no tarball).
#
#   docker/janusgraph/dev.sh start    start in the background (idempotent), wait until it answers
#   docker/janusgraph/dev.sh stop     stop the server this script started
#   docker/janusgraph/dev.sh status   say whether it runs and where it listens
#
# Environment:
#   BACKEND=inmemory|berkeleyje|cql  storage of the four graphs (default inmemory: what most tests use;
#                                 cql: one keyspace per graph on a Cassandra node, `make cassandra`)
#   JANUSGRAPH_PORT=18182         Gremlin WebSocket port (127.0.0.1 only)
#   JANUSGRAPH_HEAP=1g            JVM heap
#   JANUSGRAPH_INSTANCE=default   a name for a second, independent server (pid/log/work dir per name;
#                                 the fault tests use their own instance and port)
#   JANUSGRAPH_DATA=<dir>         berkeleyje data directory (default var/janusgraph/<instance>/data)
#   CASSANDRA_HOST=127.0.0.1      cql: the Cassandra node (docker/cassandra/dev.sh) ...
#   CASSANDRA_PORT=19042          ... and its CQL port
#   JANUSGRAPH_KEYSPACE_PREFIX=topology_  cql: keyspaces <prefix>network, <prefix>ipc, ... (a second
#                                 instance on its own keyspaces, e.g. for benchmarks)
#   JANUSGRAPH_EXTRA_PROPERTIES=<file>  key=value lines that replace (or add to) every graph's
#                                 properties, e.g. to compare settings in a benchmark
#
# Security (both off by default; a secured server is best its own instance and port):
#   JANUSGRAPH_KEYSTORE=<file>    TLS: the server's key and certificate chain (PKCS12); the URL
#                                 becomes wss://. JANUSGRAPH_KEYSTORE_PASSWORD_FILE: its password.
#                                 The readiness probe verifies the server with JANUSGRAPH_CA_FILE.
#   JANUSGRAPH_TRUSTSTORE=<file>  with the keystore: clients must present a certificate signed by a CA
#                                 in this PKCS12 truststore (JANUSGRAPH_TRUSTSTORE_PASSWORD_FILE; the
#                                 probe presents JANUSGRAPH_CERT_FILE/JANUSGRAPH_KEY_FILE).
#   JANUSGRAPH_AUTH_USERNAME=<name>, JANUSGRAPH_AUTH_PASSWORD_FILE=<file>
#                                 SASL authentication with this one user (secure/auth.yaml); the probe
#                                 logs in as that user.
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
KEYSTORE="${JANUSGRAPH_KEYSTORE:-}"
AUTH_USER="${JANUSGRAPH_AUTH_USERNAME:-}"
if [ -n "$KEYSTORE" ]; then URL="wss://127.0.0.1:$PORT/gremlin"; else URL="ws://127.0.0.1:$PORT/gremlin"; fi
CASSANDRA_HOST="${CASSANDRA_HOST:-127.0.0.1}"
CASSANDRA_PORT="${CASSANDRA_PORT:-19042}"
KEYSPACE_PREFIX="${JANUSGRAPH_KEYSPACE_PREFIX:-topology_}"
EXTRA_PROPERTIES="${JANUSGRAPH_EXTRA_PROPERTIES:-}"
if [ "$BACKEND" = cql ]; then STORAGE="$CASSANDRA_HOST:$CASSANDRA_PORT/$KEYSPACE_PREFIX"; else STORAGE=""; fi
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
state_storage() { [ -f "$STATEFILE" ] && sed -n 's/^storage=//p' "$STATEFILE"; }

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
    # berkeleyje: point each graph's directory at the instance's data directory;
    # cql: point each graph at the Cassandra node and its keyspace prefix.
    sed -e "s#^storage.directory=data/#storage.directory=$DATA/#" \
      -e "s#^storage.hostname=.*#storage.hostname=$CASSANDRA_HOST#" \
      -e "s#^storage.cql.keyspace=topology_#storage.cql.keyspace=$KEYSPACE_PREFIX#" \
      "$f" >"$WORK/conf/$(basename "$f")"
    if [ "$BACKEND" = cql ]; then echo "storage.port=$CASSANDRA_PORT" >>"$WORK/conf/$(basename "$f")"; fi
    [ -z "$EXTRA_PROPERTIES" ] || override "$WORK/conf/$(basename "$f")" "$EXTRA_PROPERTIES"
  done
  cp "$HERE/scripts/"*.groovy "$WORK/scripts/"
  # server.yaml may hold the keystore and user passwords: readable by this user only.
  (umask 077 && sed "s/^port: .*/port: $PORT/" "$HERE/server.yaml" >"$WORK/server.yaml")
  if [ -n "$KEYSTORE" ]; then
    render "$HERE/secure/ssl.yaml" KEYSTORE "$(realpath "$KEYSTORE")" \
      KEYSTORE_PASSWORD "$(secret JANUSGRAPH_KEYSTORE_PASSWORD_FILE)" >>"$WORK/server.yaml"
    if [ -n "${JANUSGRAPH_TRUSTSTORE:-}" ]; then
      render "$HERE/secure/client-auth.yaml" TRUSTSTORE "$(realpath "$JANUSGRAPH_TRUSTSTORE")" \
        TRUSTSTORE_PASSWORD "$(secret JANUSGRAPH_TRUSTSTORE_PASSWORD_FILE)" >>"$WORK/server.yaml"
    fi
  fi
  if [ -n "$AUTH_USER" ]; then
    rm -rf "$WORK/credentials"
    sed "s#@DIRECTORY@#$WORK/credentials#" "$HERE/secure/credentials.properties" >"$WORK/conf/credentials.properties"
    render "$HERE/secure/auth.yaml" USERNAME "$AUTH_USER" \
      PASSWORD "$(secret JANUSGRAPH_AUTH_PASSWORD_FILE)" >>"$WORK/server.yaml"
  fi
}

override() {
  # Each key=value line of file $2 replaces that key's line in properties file $1 (or is appended):
  # a key given twice would become a list value in JanusGraph's configuration.
  local target="$1" extra="$2" line key
  [ -r "$extra" ] || { log "JANUSGRAPH_EXTRA_PROPERTIES must name a readable file"; exit 2; }
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in '' | '#'*) continue ;; esac
    key="${line%%=*}"
    awk -v k="$key=" 'index($0, k) != 1' "$target" >"$target.tmp"
    echo "$line" >>"$target.tmp"
    mv "$target.tmp" "$target"
  done <"$extra"
}

secret() {
  # The contents of the file named by variable $1 (without a trailing newline).
  local file="${!1:-}"
  [ -n "$file" ] && [ -r "$file" ] || { log "$1 must name a readable file"; exit 2; }
  cat "$file"
}

render() {
  # Template $1 with each @KEY@ replaced by its value as a YAML (JSON) string: any character is safe.
  local template="$1"
  shift
  "$PY" -c 'import json, sys
text = open(sys.argv[1]).read()
for key, value in zip(sys.argv[2::2], sys.argv[3::2]):
    text = text.replace("@" + key + "@", json.dumps(value))
sys.stdout.write("\n" + text)' "$template" "$@"
}

answers() {
  # The probe connects as clients must: it trusts JANUSGRAPH_CA_FILE and logs in as the one user.
  local -a auth=(-u JANUSGRAPH_USERNAME -u JANUSGRAPH_PASSWORD -u JANUSGRAPH_PASSWORD_FILE)
  if [ -n "$AUTH_USER" ]; then
    auth=(-u JANUSGRAPH_PASSWORD "JANUSGRAPH_USERNAME=$AUTH_USER"
      "JANUSGRAPH_PASSWORD_FILE=${JANUSGRAPH_AUTH_PASSWORD_FILE:-}")
  fi
  [ -n "$KEYSTORE" ] || auth+=(-u JANUSGRAPH_CA_FILE -u JANUSGRAPH_CERT_FILE -u JANUSGRAPH_KEY_FILE)
  env "${auth[@]}" "$PY" "$HERE/probe.py" "${1:-$URL}" 2>/dev/null
}

start() {
  case "$BACKEND" in inmemory | berkeleyje | cql) ;; *) log "BACKEND must be inmemory, berkeleyje or cql"; exit 2 ;; esac
  local pid
  if pid="$(running_pid)"; then
    local have
    have="$(sed -n 's/^backend=//p' "$STATEFILE" 2>/dev/null || true)"
    if [ "$have" != "$BACKEND" ] || [ "$(state_url)" != "$URL" ] || [ "$(state_storage)" != "$STORAGE" ]; then
      log "already running (pid $pid, backend $have, $(state_url), storage $(state_storage)); stop it first to change backend, port or storage"
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
    if [ "$BACKEND" = cql ] && ! (exec 3<>"/dev/tcp/$CASSANDRA_HOST/$CASSANDRA_PORT") 2>/dev/null; then
      log "no Cassandra answers on $CASSANDRA_HOST:$CASSANDRA_PORT (make cassandra, or set CASSANDRA_HOST/CASSANDRA_PORT)"
      exit 1
    fi
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
    [ -z "$STORAGE" ] || echo "storage=$STORAGE" >>"$STATEFILE"
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
