# Shared by the local dev servers' scripts (docker/kafka/dev.sh, docker/cassandra/dev.sh): messages,
# the port probe, the server's pid, the wait for start-up, and the stop and status commands.
# Sourced, not run. The script sets, before calling these:
#   WHO        the prefix of every message ("kafka")
#   PORT       the port the server answers on, on 127.0.0.1
#   PIDFILE    the server's pid file
#   LOGFILE    the server's console log
#   HERE, LIB, JARS_STAMP   the script's folder (its pom.xml), the jars' folder and its stamp file
# and defines running_pid (usually: pid_matching with the server's command line).

say() { echo "$WHO: $*"; }
die() { echo "$WHO: $*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_matching() {
  # Prints the pid our pid file names when it is a live process whose command line holds $1 (a grep
  # pattern): a stale pid file, or a pid reused by another program, is not our server.
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1" || return 1
  echo "$pid"
}

jars_ready() {
  # The jars are collected (the stamp is newer than the pom that lists them).
  [ -f "$JARS_STAMP" ] && [ "$JARS_STAMP" -nt "$HERE/pom.xml" ]
}

collect_jars() {
  # collect_jars WHAT PRODUCT: mvn copies the pom's dependencies into LIB, offline first
  # (everything is cached in ~/.m2 after the first run), online otherwise. The caller checks the
  # jars it needs and touches JARS_STAMP.
  command -v mvn >/dev/null || die "mvn not found (make install-system installs it)"
  command -v java >/dev/null || die "java not found (make install-system installs it)"
  say "collecting the $1 with mvn (cached in ~/.m2)"
  mkdir -p "$LIB"
  local mvn_args=(-q -B -Dstyle.color=never -f "$HERE/pom.xml" dependency:copy-dependencies)
  if ! mvn -o "${mvn_args[@]}" >/dev/null 2>&1; then
    mvn "${mvn_args[@]}" || die "mvn could not collect the $2 jars"
  fi
}

wait_started() {
  # wait_started PID READY_LINE WAIT_SECONDS SERVER ANSWERER TAIL_LINES: waits until PORT answers
  # and LOGFILE holds READY_LINE; dies (showing the log's last TAIL_LINES) if PID exits first or
  # WAIT_SECONDS pass. SERVER names the process ("broker"), ANSWERER what answers on PORT ("CQL").
  local pid=$1 ready=$2 wait_seconds=$3 server=$4 answerer=$5 tail_lines=$6 waited=0
  until port_open "$PORT" && grep -q "$ready" "$LOGFILE"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail "-$tail_lines" "$LOGFILE" >&2 || true
      rm -f "$PIDFILE"
      die "$server exited during start-up (log: $LOGFILE)"
    fi
    if [ "$waited" -ge $((wait_seconds * 2)) ]; then
      die "$answerer did not answer on 127.0.0.1:$PORT within ${wait_seconds}s (pid $pid, log: $LOGFILE)"
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
}

stop_server() {
  # stop_server SERVER GRACE_SECONDS: SIGTERM (the server shuts down cleanly), SIGKILL after
  # GRACE_SECONDS; SERVER names it in the message ("broker").
  local server=$1 grace=$2 pid
  if ! pid="$(running_pid)"; then
    rm -f "$PIDFILE"
    say "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge $((grace * 2)) ]; then
      say "$server did not stop within ${grace}s, killing pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  rm -f "$PIDFILE"
  say "stopped (pid $pid)"
}

status_server() {
  # status_server WHERE: "running (pid N), WHERE" when PORT answers; exit status 0 while the
  # process lives (answering or not), 3 when it does not.
  local pid
  if pid="$(running_pid)"; then
    if port_open "$PORT"; then
      say "running (pid $pid), $1"
    else
      say "starting or unhealthy (pid $pid), 127.0.0.1:$PORT not answering"
    fi
    return 0
  fi
  say "not running"
  return 3
}

dev_command() {
  # The scripts' command line: start|stop|status|restart (start, stop and status: the script's own).
  case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    restart) stop; start ;;
    *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
  esac
}
