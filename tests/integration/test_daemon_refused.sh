#!/usr/bin/env bash
# Under MQTT 5 a PUBACK with a reason code of 0x80 or more is a refusal, not a
# delivery: a broker whose ACL forbids one meter's topic refuses its readings;
# those rows stay undelivered, the refusal is logged and counted, and the
# other meter's readings are delivered. (mosquitto 2.0.11 also drops the
# connection after such a PUBACK; the daemon reconnects, holds back what was
# refused - here B and the site's online-rate topic - and carries on.)
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
cat >"$T/acl" <<ACL
topic readwrite water/acltest/A/#
topic readwrite water/acltest/gateway/#
topic read water/#
ACL
cat >"$T/site.yaml" <<YAML
site: {id: acltest}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT", version: 5}
storage: {path: ./readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 1s}
meters:
  - {id: A, bus: plc, unit: 1, profile: mag-00h, interval: 500ms}
  - {id: B, bus: plc, unit: 2, profile: mag-00h, interval: 500ms}
YAML

start_broker broker "$MQTT_PORT" "acl_file $T/acl"
start_sub sub "$MQTT_PORT" 'water/#'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"

DB="$T/readings.db"
enough() { [ "$(sql "$DB" "SELECT count(*) FROM readings WHERE meter = 'B'")" -ge 6 ]; }
wait_until 20 "readings from B" enough
wait_for "$T/collector.log" "broker refused a message of meter B" 10 "$collector_PID"
delivered_a() { [ "$(sql "$DB" "SELECT count(*) FROM readings WHERE meter = 'A' AND delivered = 1")" -ge 3 ]; }
wait_until 30 "A's readings delivered" delivered_a
# The gateway state is published at every (re)connect, counters included.
counted() {
  [ "$(messages sub state | jq -s 'map(select(.meter == "gateway") | .counters.refused // 0) | max // 0')" -ge 1 ]
}
wait_until 30 "a gateway state counting the refusal" counted
ok "the refusal is logged: $(grep -m1 "broker refused" "$T/collector.log")"
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"

expect_eq "no row of B is marked delivered" 0 "$(sql "$DB" "SELECT count(*) FROM readings WHERE meter = 'B' AND delivered = 1")"
check "the refused rows stay in the outbox" \
  test "$(sql "$DB" "SELECT count(*) FROM readings WHERE meter = 'B' AND delivered = 0")" -ge 6
expect_eq "the broker passed none of B's readings on" 0 "$(messages sub reading | jq -s '[.[] | select(.meter == "B")] | length')"
check "a refused site topic (online-rate, not in the ACL) is held back too" \
  grep -q "broker refused the site's online-rate topic" "$T/collector.log"
check "A's readings reached the subscriber" test "$(messages sub reading | jq -s '[.[] | select(.meter == "A")] | length')" -ge 3
finish
