# Shared helpers for integration tests: real processes, temporary folders,
# free loopback ports, readiness waits, and cleanup of exactly what the test
# started (by PID).
#
# Environment (set by CTest): IC_BIN (intake-collector, intake-sim),
# IC_TEST_BIN (ic-freeport), IC_SOURCE_DIR.

set -euo pipefail

: "${IC_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${IC_BIN:=$IC_SOURCE_DIR/build/bin}"
: "${IC_TEST_BIN:=$IC_SOURCE_DIR/build/tests}"
# A leak inside paho's own message store, not ours: tests/lsan.supp.
: "${LSAN_OPTIONS:=suppressions=$IC_SOURCE_DIR/tests/lsan.supp:print_suppressions=0}"
export LSAN_OPTIONS
# Leak checking stays on whatever the caller set: appended, the last wins.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1"

TEST_NAME=$(basename "${0%.sh}")
T=$(mktemp -d "/tmp/ic-${TEST_NAME}.XXXXXX")
IC_PIDS=()
IC_OURS=()   # PIDs of the product's programs (under IC_BIN)
IC_REAPED=() # PIDs the test waited for itself (stop_pid, reap)
IC_FAILS=0
IC_PASSES=0

# A sanitizer's report, in whatever a process of the test wrote.
IC_SANITIZER_RE='ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:'

ic_cleanup() {
  local rc=$?
  local pid st
  # ${a[@]+"${a[@]}"}: an empty array under set -u is an error before bash 4.4.
  for pid in ${IC_PIDS[@]+"${IC_PIDS[@]}"}; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  # The product's programs end 0 on SIGTERM; a sanitizer's report ends them
  # with 1. Those the test waited for itself, it judged itself.
  for pid in ${IC_PIDS[@]+"${IC_PIDS[@]}"}; do
    [[ " ${IC_REAPED[*]-} " != *" $pid "* ]] || continue
    st=0
    wait "$pid" 2>/dev/null || st=$?
    if [[ " ${IC_OURS[*]-} " == *" $pid "* ]] && [ "$st" -ne 0 ] && [ "$st" -ne 127 ]; then
      echo "not ok - process $pid ($(ic_name_of "$pid")) exited with status $st at the end"
      IC_FAILS=$((IC_FAILS + 1))
    fi
  done
  local reports
  reports=$(grep -lE "$IC_SANITIZER_RE" "$T"/*.log "$T"/*.out "$T"/*.err 2>/dev/null || true)
  if [ -n "$reports" ]; then
    echo "not ok - a sanitizer reported an error in: $(echo $reports)"
    IC_FAILS=$((IC_FAILS + 1))
  fi
  if [ "$IC_FAILS" -ne 0 ] && [ "$rc" -eq 0 ]; then rc=1; fi
  if [ "$rc" -ne 0 ] || [ "$IC_FAILS" -ne 0 ]; then
    echo "--- logs kept in $T" >&2
    for f in "$T"/*.log; do
      [ -f "$f" ] || continue
      echo "--- $f (last 40 lines)" >&2
      tail -n 40 "$f" >&2
    done
  else
    rm -rf "$T"
  fi
  exit "$rc"
}
trap ic_cleanup EXIT

# ic_name_of PID: the name a process was started under.
ic_name_of() {
  local v
  for v in $(compgen -v | grep '_PID$'); do
    if [ "${!v}" = "$1" ]; then echo "${v%_PID}"; return; fi
  done
  echo "?"
}

# free_ports N: print N free loopback TCP ports on one line.
free_ports() { "$IC_TEST_BIN/ic-freeport" "$1" | tr '\n' ' '; echo; }

# start NAME CMD...: run CMD in the background, stdout to $T/NAME.out and
# stderr to $T/NAME.log; the PID lands in IC_PIDS and in NAME_PID.
start() {
  local name=$1
  shift
  "$@" >"$T/$name.out" 2>"$T/$name.log" &
  local pid=$!
  IC_PIDS+=("$pid")
  local a
  for a in "$@"; do
    case "$a" in "$IC_BIN"/*) IC_OURS+=("$pid"); break ;; esac
  done
  printf -v "${name//-/_}_PID" '%s' "$pid"
}

# wait_for FILE PATTERN TIMEOUT_S [PID]: wait until FILE has a line matching
# PATTERN (grep -E). Fails early when PID exits first.
wait_for() {
  local file=$1 pattern=$2 timeout=$3 pid=${4:-}
  local deadline=$((SECONDS + timeout))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if [ -f "$file" ] && grep -Eq -- "$pattern" "$file"; then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      echo "process $pid exited while waiting for /$pattern/ in $file" >&2
      return 1
    fi
    sleep 0.05
  done
  echo "timed out after ${timeout}s waiting for /$pattern/ in $file" >&2
  return 1
}

# stop_pid PID: SIGTERM and wait; the exit status lands in STOP_RC and the
# milliseconds it took in STOP_MS; a program of the product (started with
# `start` from IC_BIN) that ends with another status than 0 fails the test.
# (Not for $(...): a subshell cannot wait.)
stop_pid() {
  local pid=$1 t0
  STOP_RC=0
  t0=$(now_ms)
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || STOP_RC=$?
  STOP_MS=$(($(now_ms) - t0))
  IC_REAPED+=("$pid")
  # The product's programs end 0 on SIGTERM, whether or not the test looks.
  if [[ " ${IC_OURS[*]-} " == *" $pid "* ]] && [ "$STOP_RC" -ne 0 ]; then
    not_ok "process $pid ($(ic_name_of "$pid")) exited with status $STOP_RC on SIGTERM"
  fi
}

# reap PID: wait for a process the test ended itself (kill -KILL, or one
# that exits by itself); its status lands in REAP_RC, judged by the test.
reap() {
  REAP_RC=0
  wait "$1" 2>/dev/null || REAP_RC=$?
  IC_REAPED+=("$1")
}

# now_ms: wall-clock milliseconds.
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

ok() {
  IC_PASSES=$((IC_PASSES + 1))
  echo "ok - $*"
}
not_ok() {
  IC_FAILS=$((IC_FAILS + 1))
  echo "not ok - $*"
}

# check DESCRIPTION CMD...: run CMD, record a pass or a failure.
check() {
  local desc=$1
  shift
  if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}

# expect_eq DESCRIPTION EXPECTED ACTUAL
expect_eq() {
  if [ "$2" == "$3" ]; then ok "$1"; else not_ok "$1: expected [$2], got [$3]"; fi
}

# finish: print the summary and exit non-zero on any failure.
finish() {
  echo "$IC_PASSES passed, $IC_FAILS failed"
  [ "$IC_FAILS" -eq 0 ]
}

# start_broker NAME PORT [EXTRA]: mosquitto on 127.0.0.1:PORT, persistent (so
# a restart keeps sessions and queued messages), with no queue limit, so no
# message can be lost by the test's own broker; EXTRA lines are appended to
# its configuration. Its flow control is mosquitto's own (a Receive Maximum
# of 20 for MQTT 5 clients), as brokers are installed. Waits until it runs.
start_broker() {
  local name=$1 port=$2 extra=${3:-}
  mkdir -p "$T/broker"
  cat >"$T/broker/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $T/broker/
autosave_interval 1
max_queued_messages 0
user root
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
$extra
CONF
  start "$name" mosquitto -c "$T/broker/mosquitto.conf"
  local pidvar="${name//-/_}_PID"
  wait_for "$T/$name.log" " running" 10 "${!pidvar}"
}

# start_aedes NAME PORT: the second broker, aedes (MQTT 3.1.1 only, every
# setting its own), on 127.0.0.1:PORT. scripts/test.sh installs it into the
# build folder; run alone, a test installs it there itself. Waits until it
# listens.
start_aedes() {
  local name=$1 port=$2
  local dir=${IC_AEDES_DIR:-$IC_TEST_BIN/../aedes}
  if [ ! -f "$dir/node_modules/aedes/package.json" ]; then
    "$IC_SOURCE_DIR/tests/tools/aedes/install.sh" "$dir" >&2
  fi
  start "$name" node "$dir/broker.js" --port "$port"
  local pidvar="${name//-/_}_PID"
  wait_for "$T/$name.log" "aedes running on" 20 "${!pidvar}"
}

# start_sub NAME PORT TOPIC: a persistent-session QoS 1 subscriber
# (mosquitto_sub -c -i), waits for its SUBACK. Messages land in
# $T/NAME.out as "topic payload" lines (debug lines start with "Client").
start_sub() {
  local name=$1 port=$2 topic=$3
  # stdbuf: mosquitto_sub's debug lines would sit in a full buffer otherwise.
  start "$name" stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$port" -q 1 -c -i "ic-test-$name-$$" \
    -t "$topic" -v -d
  local pidvar="${name//-/_}_PID"
  wait_for "$T/$name.out" "received SUBACK" 10 "${!pidvar}"
}

# messages NAME SUFFIX: the payloads the subscriber NAME received on topics
# ending in /SUFFIX, as JSON lines with the meter id added as "meter".
messages() {
  local name=$1 suffix=$2
  { grep -E "^[^ ]+/$suffix " "$T/$name.out" || true; } |
    jq -R -c 'capture("^(?<topic>[^ ]+) (?<p>.*)$")
              | (.p | fromjson) + {meter: (.topic | split("/") | .[-2])}'
}

# wait_until TIMEOUT_S DESCRIPTION CMD...: poll CMD until it succeeds.
wait_until() {
  local timeout=$1 desc=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if "$@"; then return 0; fi
    sleep 0.1
  done
  echo "timed out after ${timeout}s: $desc" >&2
  return 1
}

# stop_meters LOG N: stop intake-sim ($sim_PID) and wait until the daemon
# logging to LOG has seen N more meters go offline, so that every reading
# taken before the stop has long been committed (a reading waits at most the
# store's group commit window); then the outbox can only shrink.
stop_meters() {
  local log=$1 n=$2 before
  before=$(grep -c "offline after" "$log" || true)
  stop_pid "$sim_PID"
  _offline() { [ "$(grep -c "offline after" "$log" || true)" -ge $((before + n)) ]; }
  wait_until 30 "$n meters offline after intake-sim stopped" _offline
}

# sql DB QUERY: one query with the sqlite3 client.
sql() { sqlite3 -batch -noheader "$1" "$2"; }

# seq_clashes JSONLINES: how many (meter, seq) pairs in the readings of
# JSONLINES (from `messages`) name two different readings (a different ts
# or different values); a duplicate of the same reading is no clash (a
# replay marks it historical, a clock step that came after flags it).
seq_clashes() {
  jq -s '[.[] | select(.seq != null) | del(.historical, .clock_step_ms)] | group_by(.meter, .seq)
         | map(select(unique | length > 1)) | length' "$1"
}

# missing_seqs JSONLINES METER LAST: how many of METER's sequence numbers
# 1..LAST are absent from the readings in JSONLINES (from `messages`).
missing_seqs() {
  jq -s --arg m "$2" --argjson last "$3" '
    ([.[] | select(.meter == $m) | .seq] | unique) as $s | [range(1; $last + 1)] - $s | length' "$1"
}
