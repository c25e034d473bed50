#!/usr/bin/env bash
# Local Kafka 3.9 broker (single-node KRaft) from Maven jars, for development and tests.
#
#   bash docker/kafka/dev.sh start    # idempotent: fetch jars once, format storage once, start, wait
#   bash docker/kafka/dev.sh stop
#   bash docker/kafka/dev.sh status
#
# Environment (nothing is exported to the caller):
#   KAFKA_PORT             client listener on 127.0.0.1 (default 19092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener (default KAFKA_PORT + 1)
#   KAFKA_HEAP             JVM heap options (default "-Xms256m -Xmx512m")
#   KAFKA_WAIT_SECONDS     how long start waits for the broker to answer (default 90)
#   KAFKA_STATE_DIR        data, rendered config and logs (default var/kafka/state-PORT)
#   KAFKA_RUN_DIR          pid and console log files (default var/run)
#   KAFKA_EXTRA_CONFIG     a properties file appended to the rendered config (same placeholders;
#                          a key set again there wins), e.g. a SASL_SSL listener
#   KAFKA_SCRAM_FILE       a file of SCRAM credentials, one `SCRAM-SHA-256=[name=alice,password=...]`
#                          a line, created when the storage is formatted (KRaft keeps them in metadata)
# State lives under var/ (git-ignored): jars in var/kafka/lib (shared by every broker), data in
# var/kafka/state-PORT, rendered config next to the data, pid and log files in var/run/.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VAR="$ROOT/var"
DEFAULT_PORT=19092
PORT="${KAFKA_PORT:-$DEFAULT_PORT}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
HEAP="${KAFKA_HEAP:--Xms256m -Xmx512m}"
WAIT_SECONDS="${KAFKA_WAIT_SECONDS:-90}"

if [ "$PORT" = "$DEFAULT_PORT" ]; then NAME=kafka; else NAME="kafka-$PORT"; fi
LIB="$VAR/kafka/lib"
STATE="${KAFKA_STATE_DIR:-$VAR/kafka/state-$PORT}"
EXTRA_CONFIG="${KAFKA_EXTRA_CONFIG:-}"
SCRAM_FILE="${KAFKA_SCRAM_FILE:-}"
DATA="$STATE/data"
CONFIG="$STATE/server.properties"
RUN="${KAFKA_RUN_DIR:-$VAR/run}"
PIDFILE="$RUN/$NAME.pid"
LOGFILE="$RUN/$NAME.log"
JARS_STAMP="$LIB/.complete"

WHO=kafka
# shellcheck source=../dev/lib.sh
. "$ROOT/docker/dev/lib.sh"

# The broker's pid when our pid file names a live kafka.Kafka process of our config.
running_pid() { pid_matching "kafka.Kafka $CONFIG"; }

ensure_jars() {
  if jars_ready; then return 0; fi
  collect_jars "broker classpath" Kafka
  ls "$LIB"/kafka_2.13-*.jar >/dev/null 2>&1 || die "kafka_2.13 jar missing in $LIB after mvn"
  touch "$JARS_STAMP"
}

render_config() {
  mkdir -p "$DATA"
  local sources=("$HERE/server.properties")
  if [ -n "$EXTRA_CONFIG" ]; then
    [ -f "$EXTRA_CONFIG" ] || die "KAFKA_EXTRA_CONFIG: no file $EXTRA_CONFIG"
    sources+=("$EXTRA_CONFIG")
  fi
  # Java properties: the last value of a key wins, so the extra file overrides the template.
  cat "${sources[@]}" | sed -e "s#@PORT@#$PORT#g" -e "s#@CONTROLLER_PORT@#$CONTROLLER_PORT#g" \
    -e "s#@DATA_DIR@#$DATA#g" >"$CONFIG.tmp"
  mv "$CONFIG.tmp" "$CONFIG"
}

java_cmd() {
  # Fills the JAVA array: the JVM command line shared by StorageTool and the broker.
  local heap
  read -r -a heap <<<"$HEAP"
  JAVA=(java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
    "-Dlog4j.configuration=file:$HERE/log4j.properties" "-Dkafka.logs.dir=$STATE/logs"
    -cp "$LIB/*")
}

format_storage() {
  [ -f "$DATA/meta.properties" ] && return 0
  local cluster_id
  java_cmd
  cluster_id="$("${JAVA[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
  [ -n "$cluster_id" ] || die "StorageTool random-uuid printed nothing"
  local scram=() line
  if [ -n "$SCRAM_FILE" ]; then
    [ -f "$SCRAM_FILE" ] || die "KAFKA_SCRAM_FILE: no file $SCRAM_FILE"
    while IFS= read -r line || [ -n "$line" ]; do
      [ -n "$line" ] && scram+=(--add-scram "$line")
    done <"$SCRAM_FILE"
  fi
  say "formatting storage in $DATA (cluster id $cluster_id)"
  "${JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" --ignore-formatted \
    "${scram[@]}" >/dev/null || die "StorageTool format failed"
}

start() {
  local pid
  if pid="$(running_pid)"; then
    say "already running (pid $pid), listening on 127.0.0.1:$PORT"
    return 0
  fi
  if port_open "$PORT"; then die "127.0.0.1:$PORT is in use by another process (set KAFKA_PORT)"; fi
  ensure_jars
  render_config
  format_storage
  mkdir -p "$RUN" "$STATE/logs"
  : >"$LOGFILE"
  # setsid: the broker outlives the shell (and make) that started it.
  java_cmd
  setsid "${JAVA[@]}" kafka.Kafka "$CONFIG" >>"$LOGFILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"
  wait_started "$pid" "Kafka Server started" "$WAIT_SECONDS" broker broker 20
  say "started (pid $pid), listening on 127.0.0.1:$PORT (KAFKA_BOOTSTRAP=127.0.0.1:$PORT), log $LOGFILE"
}

stop() { stop_server broker 30; }

status() { status_server "listening on 127.0.0.1:$PORT"; }

dev_command "$@"
