#!/usr/bin/env bash
# kill -9 at random moments under load, 30 times in a row: after each crash
# the database passes PRAGMA integrity_check, and in the end every meter's
# sequence numbers on the broker are contiguous: whatever was committed was
# delivered, at least once (duplicates are counted, gaps are not allowed),
# and a (meter, seq) seen twice is the same reading both times.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
cat >"$T/site.yaml" <<YAML
site: {id: crash}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
reports: {periods: [hourly]}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
  - {id: A, bus: plc, unit: 1, profile: mag-00h, interval: 100ms}
  - {id: B, bus: plc, unit: 2, profile: tuf2000m, interval: 100ms}
  - {id: C, bus: plc, unit: 3, profile: open-channel, interval: 200ms}
YAML
DB="$T/readings.db"

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/crash/+/reading'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"

bad=0
for i in $(seq 1 30); do
  "$IC_BIN/intake-collector" --config "$T/site.yaml" >"$T/run.out" 2>>"$T/runs.log" &
  pid=$!
  wait_for "$T/run.out" '^ready' 20 "$pid"
  # A random moment 50..1050 ms after start-up.
  until_t=$(( $(now_ms) + 50 + RANDOM % 1000 ))
  moment() { [ "$(now_ms)" -ge "$until_t" ]; }
  wait_until 5 "the kill moment" moment
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  if [ "$(sql "$DB" 'PRAGMA integrity_check')" != ok ]; then
    bad=$((bad + 1))
    echo "integrity check failed after kill $i" >&2
  fi
done
expect_eq "PRAGMA integrity_check is ok after each of 30 kills" 0 "$bad"
check "readings were committed across the kills ($(sql "$DB" 'SELECT count(*) FROM readings'))" \
  test "$(sql "$DB" 'SELECT count(*) FROM readings')" -ge 60

# A last, clean run delivers whatever the crashes left in the outbox. The
# meters stop first, so that no reading is taken while it stops (those stay
# in the outbox for the next start, by design).
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
n0=$(sql "$DB" 'SELECT count(*) FROM readings')
more() { [ "$(sql "$DB" 'SELECT count(*) FROM readings')" -gt $((n0 + 10)) ]; }
wait_until 20 "readings taken by the last run" more
stop_meters "$T/collector.log" 3
drained() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -eq 0 ]; }
wait_until 60 "the outbox drained" drained
stop_pid "$collector_PID"
expect_eq "the last run exits 0" 0 "$STOP_RC"
rows=$(sql "$DB" 'SELECT count(*) FROM readings')
seen() { [ "$(messages sub reading | jq -s 'unique_by(.meter, .seq) | length')" -ge "$rows" ]; }
wait_until 30 "the subscriber has every stored reading" seen
messages sub reading >"$T/readings.json"
for m in A B C; do
  last=$(sql "$DB" "SELECT last_seq FROM meters WHERE id = '$m'")
  rowsm=$(sql "$DB" "SELECT count(*) FROM readings WHERE meter = '$m'")
  expect_eq "meter $m: the stored sequence has no gap (1..$last)" "$last" "$rowsm"
  expect_eq "meter $m: every committed seq reached the broker" 0 \
    "$(missing_seqs "$T/readings.json" "$m" "$last")"
done
expect_eq "no (meter, seq) names two different readings on the broker" 0 \
  "$(seq_clashes "$T/readings.json")"
dups=$(jq -s 'length - (unique_by(.meter, .seq) | length)' "$T/readings.json")
echo "# duplicates delivered (at least once): $dups"
finish
