#!/usr/bin/env bash
# With mqtt.version 3.1.1 readings flow and are marked delivered as under
# MQTT 5; when the daemon dies without a word (kill -9) the broker publishes
# its Last Will: the retained gateway state turns offline, also for a
# subscriber that comes later.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
cat >"$T/site.yaml" <<YAML
site: {id: v311}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT", version: 3.1.1, keepalive: 5s}
storage: {path: ./readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 1s}
meters:
  - {id: M1, bus: plc, unit: 1, profile: mag-00h, interval: 500ms, sim: {fixed: {flow_m3h: 42.5}}}
YAML
DB="$T/readings.db"

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/#'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"

check "the broker saw an MQTT 3.1.1 client (mosquitto logs it as p2)" \
  wait_for "$T/broker.log" "as v311-gw \\(p2," 10
delivered() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 1')" -ge 4 ]; }
wait_until 20 "readings delivered over MQTT 3.1.1" delivered
ok "readings are delivered over MQTT 3.1.1"
got() { [ "$(messages sub reading | jq -s '[.[] | select(.flow_m3h == 42.5)] | length')" -ge 4 ]; }
wait_until 10 "the subscriber has the readings" got
ok "the subscriber receives them"
online() { messages sub state | jq -e -s 'map(select(.meter == "gateway")) | last | .online == true' >/dev/null; }
wait_until 10 "gateway state online" online

kill -KILL "$collector_PID"
reap "$collector_PID"
offline() { messages sub state | jq -e -s 'map(select(.meter == "gateway")) | last | .online == false' >/dev/null; }
wait_until 15 "the Last Will marks the gateway offline" offline
ok "the Last Will marks the gateway offline after kill -9"
# A subscriber that comes after the death gets it too: the Will is retained.
# (%r: mosquitto_sub prints 1 for a message delivered as retained.)
late_will() {
  mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t 'water/v311/gateway/state' -C 1 -W 3 \
    -F '%r %p' 2>/dev/null | grep -q '^1 {"online":false'
}
check "a subscriber that comes after the kill gets the Will, retained" \
  wait_until 10 "the retained Will" late_will
finish
