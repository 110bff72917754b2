#!/usr/bin/env bash
# A meter that is healthy but slow to answer (here 1.6 s, a DTU's long round
# trip would do the same) is reported to the centre with its values, not as
# at fault: a report built before the slot's own poll has answered carries
# the reading of the slot before.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT CENTRE_PORT < <(free_ports 3)
cat >"$T/site.yaml" <<YAML
site: {id: slowtest, timezone: UTC}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
buses:
  - {id: line, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 3s}
meters:
  - {id: M1, bus: line, unit: 1, profile: tuf2000m, interval: 10s,
     sim: {fixed: {flow_m3h: 1801.9, total_m3: 106182.9}, fault: slow, slow_delay: 1600ms}}
uplink:
  protocol: szy206
  host: 127.0.0.1
  port: $CENTRE_PORT
  report_interval: 10s
  delay_minutes: 0
  stations:
    - {admin: "530381", station: 13, meters: [M1]}
YAML

start centre "$IC_TEST_BIN/ic-centre" "$CENTRE_PORT" "$T/mode"
wait_for "$T/centre.out" '^ready' 10 "$centre_PID"
start_broker broker "$MQTT_PORT"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
reports() { grep '"function":"report"' "$T/centre.out" || true; }
three() { [ "$(reports | wc -l)" -ge 3 ]; }
wait_until 60 "three reports at the centre" three
db_good=$(sql "$T/readings.db" "SELECT count(*) FROM readings WHERE meter = 'M1'")
check "M1 is read, slowly ($db_good readings)" test "$db_good" -ge 2
# The first report may come before M1's first answer; from the second on,
# every report has a reading from a poll of the interval before its slot.
for k in 2 3; do
  line=$(reports | sed -n "${k}p")
  expect_eq "report $k: M1's flow and volume (1801.9 m3/h = 0.501 m3/s), no alarm" \
    "0.501 106182 0000" \
    "$(jq -r '.frame | [.meters[0].flow_m3s, .meters[0].volume_m3, .alarm] | map(tostring) | join(" ")' <<<"$line")"
done
stop_pid "$collector_PID"
expect_eq "the gateway stops cleanly" 0 "$STOP_RC"
finish
