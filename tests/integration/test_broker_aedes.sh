#!/usr/bin/env bash
# Delivery on a second, independent broker: aedes, which speaks MQTT 3.1.1
# only and answers an MQTT 5 CONNECT with "unacceptable protocol version".
# With mqtt.version left at auto the gateway falls back to 3.1.1 and says so
# once; readings are delivered without a hole, an outage of the link is
# replayed as historical, the state topics are retained, and the Last Will
# marks a killed gateway offline. With version 5 forced it never falls back.
source "$(dirname "$0")/lib.sh"

read -r BROKER_PORT LINK_PORT TCP_PORT < <(free_ports 3)
# The gateway reaches the broker through a relay that the test can take
# away, as a link goes down; subscribers connect to the broker directly.
cat >"$T/site.yaml" <<YAML
site: {id: aedes}
mqtt: {url: "mqtt://127.0.0.1:$LINK_PORT", client_id: aedes-gw}
storage: {path: ./readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 1s}
meters:
  - {id: M1, bus: plc, unit: 1, profile: mag-00h, interval: 200ms,
     sim: {fixed: {flow_m3h: 80.5, total_m3: 4321, velocity_ms: 0.5}}}
  - {id: M2, bus: plc, unit: 2, profile: open-channel, interval: 200ms}
  - {id: M3, bus: plc, unit: 3, profile: tuf2000m, interval: 500ms}
YAML
DB="$T/readings.db"
mkdir -p "$T/relay"

start_aedes broker "$BROKER_PORT"
start_sub sub "$BROKER_PORT" 'water/#'
start relay "$IC_TEST_BIN/ic-tcprelay" "$LINK_PORT" "$BROKER_PORT" "$T/relay"
wait_for "$T/relay.out" '^ready' 10 "$relay_PID"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.log" "broker connected" 20 "$collector_PID"
check "the broker refused MQTT 5" \
  grep -q "protocol=5 (MQTT 5): unacceptable protocol version" "$T/broker.log"
check "and took the gateway on MQTT 3.1.1" \
  grep -q "client connected: id=aedes-gw protocol=4" "$T/broker.log"
gw_v311() {
  messages sub gateway/state | jq -e -s 'map(select(.online == true)) | last
    | .mqtt.version == "3.1.1" and .mqtt.fallback == true' >/dev/null
}
wait_until 20 "the gateway state tells of the fallback" gw_v311 && ok "the gateway state says 3.1.1, by fallback"
some() { [ "$(messages sub reading | jq -s 'map(select(.meter == "M3")) | length')" -ge 5 ]; }
wait_until 30 "readings of every meter" some

# The link goes away for five seconds: readings pile up in the outbox.
stop_pid "$relay_PID"
wait_for "$T/collector.log" "broker connection lost" 20 "$collector_PID"
t_down=$(( $(now_ms) + 5000 ))
down() { [ "$(now_ms)" -ge "$t_down" ]; }
wait_until 10 "five seconds without the link" down
pending=$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')
check "readings waited in the outbox ($pending)" test "$pending" -ge 20
start relay2 "$IC_TEST_BIN/ic-tcprelay" "$LINK_PORT" "$BROKER_PORT" "$T/relay"
wait_for "$T/relay2.out" '^ready' 10 "$relay2_PID"
again() { [ "$(grep -c 'broker connected' "$T/collector.log")" -ge 2 ]; }
wait_until 40 "the gateway back on the broker" again
stop_meters "$T/collector.log" 3
all_out() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -eq 0 ]; }
wait_until 30 "every reading delivered" all_out
expect_eq "the fallback was logged once" 1 \
  "$(grep -c 'does not take MQTT 5: using MQTT 3.1.1' "$T/collector.log")"

rows=$(sql "$DB" 'SELECT count(*) FROM readings')
have() { [ "$(messages sub reading | jq -s 'unique_by(.meter, .seq) | length')" -ge "$rows" ]; }
wait_until 30 "the subscriber has every reading" have || true
messages sub reading >"$T/readings.json"
for m in M1 M2 M3; do
  last=$(sql "$DB" "SELECT max(seq) FROM readings WHERE meter = '$m'")
  expect_eq "$m: every seq 1..$last reached the subscriber" 0 "$(missing_seqs "$T/readings.json" "$m" "$last")"
done
hist=$(jq -s 'map(select(.historical == true)) | length' "$T/readings.json")
check "the outage's readings were replayed as historical ($hist)" test "$hist" -ge 20
expect_eq "M1's values are intake-sim's" 0 \
  "$(jq -s 'map(select(.meter == "M1" and .flow_m3h != 80.5)) | length' "$T/readings.json")"

# Retained state: a subscriber that comes later gets each meter's state.
start late mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t 'water/aedes/+/state' -v -W 5
reap "$late_PID"
for m in M1 M2 M3; do
  check "a late subscriber gets $m's retained state" grep -q "^water/aedes/$m/state {\"online\":" "$T/late.out"
done
check "and the gateway's" grep -q '^water/aedes/gateway/state {"online":true' "$T/late.out"

# The Last Will: kill -9, then a new subscriber sees the gateway offline.
kill -KILL "$collector_PID"
reap "$collector_PID"
will() {
  mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t 'water/aedes/gateway/state' -C 1 -W 3 \
    2>/dev/null | jq -e '.online == false' >/dev/null
}
wait_until 20 "the Will, retained, says offline" will && ok "the Last Will marks the gateway offline, retained"

# version 5 forced: refused, retried, never 3.1.1.
sed -e 's/client_id: aedes-gw}/client_id: aedes-gw5, version: 5}/' -e 's/readings.db/readings5.db/' \
  "$T/site.yaml" >"$T/site5.yaml"
start col5 "$IC_BIN/intake-collector" --config "$T/site5.yaml" --log-level debug
refused() { [ "$(grep -c 'cannot connect to the broker' "$T/col5.log")" -ge 2 ]; }
wait_until 20 "two refused attempts with version 5" refused
expect_eq "the refusal is logged at warn once, the attempts after it at debug" 1 \
  "$(grep -c '^warn  cannot connect to the broker' "$T/col5.log")"
stop_pid "$col5_PID"
expect_eq "the gateway with version 5 exits 0" 0 "$STOP_RC"
expect_eq "and never connected with 3.1.1" 0 "$(grep -c 'client connected: id=aedes-gw5' "$T/broker.log" || true)"
finish
