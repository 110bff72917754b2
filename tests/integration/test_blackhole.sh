#!/usr/bin/env bash
# A black-holed link: the path to the broker (through a relay owned by the
# test) stops forwarding without closing, so the connection hangs. The
# daemon notices through the MQTT keepalive, reconnects once the path
# returns, and loses nothing: every sequence number reaches the broker.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT RELAY_PORT TCP_PORT < <(free_ports 3)
cat >"$T/site.yaml" <<YAML
site: {id: hole}
mqtt: {url: "mqtt://127.0.0.1:$RELAY_PORT", keepalive: 2s}
storage: {path: ./readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
  - {id: A, bus: plc, unit: 1, profile: mag-00h, interval: 200ms}
  - {id: B, bus: plc, unit: 2, profile: tuf2000m, interval: 200ms}
YAML
DB="$T/readings.db"

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/hole/+/reading'
start relay "$IC_TEST_BIN/ic-tcprelay" "$RELAY_PORT" "$MQTT_PORT" "$T"
wait_for "$T/relay.out" '^ready' 10 "$relay_PID"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.log" "broker connected" 20 "$collector_PID"
some() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 1')" -ge 10 ]; }
wait_until 20 "readings delivered through the relay" some

# The path goes dead without a word.
touch "$T/blackhole"
t0=$(now_ms)
wait_for "$T/collector.log" "broker connection lost" 30 "$collector_PID"
noticed=$(( $(now_ms) - t0 ))
check "the keepalive (2 s) noticed the dead path ($noticed ms)" test "$noticed" -le 15000
piled() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -ge 20 ]; }
wait_until 20 "readings kept while the path is dead" piled

# The path returns: the daemon reconnects and catches up.
rm "$T/blackhole"
reconnected() { [ "$(grep -c 'broker connected' "$T/collector.log")" -ge 2 ]; }
wait_until 60 "a reconnect once the path returned" reconnected
ok "the daemon reconnected once the path returned"
# The meters stop, so that no reading is taken while the daemon stops (it
# would stay in the outbox for the next start, by design).
stop_meters "$T/collector.log" 2
drained() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -eq 0 ]; }
wait_until 60 "the outbox drained" drained
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"

rows=$(sql "$DB" 'SELECT count(*) FROM readings')
seen() { [ "$(messages sub reading | jq -s 'unique_by(.meter, .seq) | length')" -ge "$rows" ]; }
wait_until 30 "the subscriber has every stored reading" seen
messages sub reading >"$T/readings.json"
for m in A B; do
  last=$(sql "$DB" "SELECT last_seq FROM meters WHERE id = '$m'")
  expect_eq "meter $m: every seq 1..$last reached the broker" 0 \
    "$(missing_seqs "$T/readings.json" "$m" "$last")"
done
finish
