#!/usr/bin/env bash
# Under systemd with stderr connected to the journal (JOURNAL_STREAM holds
# the stream's "DEV:INODE", systemd.exec(5)), every log line of the daemon
# and of intake-sim starts with its sd-daemon priority, so that
# `journalctl -p warning` picks the warnings: "<4>" for warn, "<6>" for
# info. JOURNAL_STREAM naming another file (stderr redirected elsewhere), or
# not set, leaves the lines as they always were.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
cat >"$T/site.yaml" <<YAML
site: {id: journal}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: $T/readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
  - {id: M1, bus: plc, unit: 1, profile: tuf2000m, interval: 200ms}
YAML

# stream_of FILE: FILE's "DEV:INODE", as systemd puts its journal stream's
# in JOURNAL_STREAM. The file is made first: start's redirection keeps it.
stream_of() { : >"$1"; stat -c '%d:%i' "$1"; }

# run NAME [JOURNAL_STREAM]: the daemon, until a meter goes offline (a
# warning) after intake-sim stops; then stopped.
run() {
  local name=$1 js=${2-}
  start_broker "broker_$name" "$MQTT_PORT"
  if [ -n "$js" ]; then
    JOURNAL_STREAM=$(stream_of "$T/sim_$name.log") start "sim_$name" "$IC_BIN/intake-sim" --config "$T/site.yaml"
  else
    start "sim_$name" "$IC_BIN/intake-sim" --config "$T/site.yaml"
  fi
  local simvar="sim_${name}_PID"
  wait_for "$T/sim_$name.out" '^ready' 20 "${!simvar}"
  if [ "$js" = other ]; then
    js=$(stream_of "$T/elsewhere")
  elif [ -n "$js" ]; then
    js=$(stream_of "$T/collector_$name.log")
  fi
  if [ -n "$js" ]; then
    JOURNAL_STREAM=$js start "collector_$name" "$IC_BIN/intake-collector" --config "$T/site.yaml"
  else
    start "collector_$name" "$IC_BIN/intake-collector" --config "$T/site.yaml"
  fi
  local colvar="collector_${name}_PID"
  wait_for "$T/collector_$name.out" '^ready' 20 "${!colvar}"
  wait_for "$T/collector_$name.log" 'online' 20 "${!colvar}"
  sim_PID=${!simvar}
  stop_meters "$T/collector_$name.log" 1
  stop_pid "${!colvar}"
  expect_eq "$name: the daemon exits 0" 0 "$STOP_RC"
  local brokervar="broker_${name}_PID"
  stop_pid "${!brokervar}"
}

run journal yes
LOG="$T/collector_journal.log"
check "a warning starts with <4>" grep -qE '^<4>warn  meter M1 offline after' "$LOG"
check "an info line starts with <6>" grep -qE '^<6>info  ready$' "$LOG"
expect_eq "every line of the daemon carries a priority" 0 \
  "$(grep -cvE '^<[3467]>(error|warn |info |debug) ' "$LOG" || true)"
check "intake-sim's lines carry theirs too" grep -qE '^<6>info  ' "$T/sim_journal.log"
expect_eq "every line of intake-sim carries a priority" 0 \
  "$(grep -cvE '^<[3467]>(error|warn |info |debug) ' "$T/sim_journal.log" || true)"

run plain
LOG="$T/collector_plain.log"
check "without JOURNAL_STREAM: the warning as before" grep -qE '^warn  meter M1 offline after' "$LOG"
expect_eq "without JOURNAL_STREAM: no line carries a priority" 0 "$(grep -c '^<' "$LOG" || true)"

run other other
LOG="$T/collector_other.log"
check "JOURNAL_STREAM naming another file: the warning as before" \
  grep -qE '^warn  meter M1 offline after' "$LOG"
expect_eq "JOURNAL_STREAM naming another file: no line carries a priority" 0 \
  "$(grep -c '^<' "$LOG" || true)"
finish
