#!/usr/bin/env bash
# The broker stops for a while and comes back: readings keep being stored
# meanwhile; afterwards the broker has seen every sequence number of every
# meter, the replayed ones flagged historical, and the live and the historical
# stream of each meter are each in sequence order.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
cat >"$T/site.yaml" <<YAML
site: {id: outage}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT", keepalive: 5s}
storage: {path: ./readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 1s}
meters:
  - {id: A, bus: plc, unit: 1, profile: mag-00h, interval: 200ms}
  - {id: B, bus: plc, unit: 2, profile: tuf2000m, interval: 200ms}
  - {id: C, bus: plc, unit: 3, profile: open-channel, interval: 500ms}
YAML
DB="$T/readings.db"

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/outage/+/reading'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"

nmsgs() { grep -c '^water/' "$T/sub.out" || true; }
some() { [ "$(nmsgs)" -ge 20 ]; }
wait_until 20 "live readings before the outage" some

# Stop the broker (it saves its sessions) and keep it away for a while.
stop_pid "$broker_PID"
expect_eq "the broker stopped cleanly" 0 "$STOP_RC"
wait_for "$T/collector.log" "broker connection lost" 15 "$collector_PID"
before=$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')
piled() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -ge $((before + 40)) ]; }
wait_until 30 "readings piling up in the outbox during the outage" piled
ok "readings are stored while the broker is away"

# Back on the same port with the same persistence: the subscriber's session
# and everything queued for it survive.
start_broker broker2 "$MQTT_PORT"
wait_for "$T/collector.log" "broker connected" 30 "$collector_PID"
drained() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -eq 0 ]; }
wait_until 60 "the outbox drained after the broker came back" drained
check "the replay is logged" grep -q "replay done" "$T/collector.log"

# The meters stop, so that no reading is taken while the daemon stops (it
# would stay in the outbox for the next start, by design).
stop_meters "$T/collector.log" 3
wait_until 30 "the last readings delivered" drained
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
# Deliver whatever was acknowledged to the subscriber too.
max_rows=$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 1')
all_there() {
  [ "$(messages sub reading | jq -s 'unique_by(.meter, .seq) | length')" -ge "$max_rows" ]
}
wait_until 30 "the subscriber has every delivered reading" all_there
messages sub reading >"$T/readings.json"

for m in A B C; do
  last=$(sql "$DB" "SELECT max(seq) FROM readings WHERE meter = '$m'")
  expect_eq "meter $m: every seq 1..$last reached the broker" 0 \
    "$(missing_seqs "$T/readings.json" "$m" "$last")"
  for stream in false true; do
    disorder=$(jq -s --arg m "$m" --argjson h "$stream" '
      [.[] | select(.meter == $m and ((.historical // false) == $h)) | .seq] as $s
      | [range(1; $s | length) | select($s[.] < $s[. - 1])] | length' "$T/readings.json")
    expect_eq "meter $m: the $([ $stream = true ] && echo historical || echo live) stream is in seq order" 0 "$disorder"
  done
done
hist=$(jq -s '[.[] | select(.historical == true)] | length' "$T/readings.json")
check "readings taken during the outage were replayed as historical ($hist)" test "$hist" -ge 40
dups=$(jq -s 'length - (unique_by(.meter, .seq) | length)' "$T/readings.json")
echo "# duplicates seen by the subscriber (allowed, at-least-once): $dups"
finish
