#!/usr/bin/env bash
# The uplink in the SL/T 427-2021 edition (protocol: sl427): the login and
# each report carry the 7-byte time label (second, minute, hour, day, month,
# year, delay), in the site's time zone (here UTC), and the report is byte
# for byte the reference encoder's frame (tests/integration/szy206_ref.py).
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT CENTRE_PORT < <(free_ports 3)
cat >"$T/site.yaml" <<YAML
site: {id: sltest, timezone: UTC}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
  - {id: M1, bus: plc, unit: 1, profile: tuf2000m, interval: 1s,
     sim: {fixed: {flow_m3h: 2102.4, total_m3: 799999999.5}}}
uplink:
  protocol: sl427
  host: 127.0.0.1
  port: $CENTRE_PORT
  report_interval: 10s
  delay_minutes: 0
  stations:
    - {admin: "140431", station: 7001, meters: [M1]}
YAML

start centre "$IC_TEST_BIN/ic-centre" "$CENTRE_PORT" "$T/mode" --station 140431591B
wait_for "$T/centre.out" '^ready' 10 "$centre_PID"
start_broker broker "$MQTT_PORT"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
wait_for "$T/centre.out" '"link":"login"' 20 "$collector_PID"
login=$(grep '"link":"login"' "$T/centre.out" | head -1)
expect_eq "the login's time label has the month and the year (7 bytes: a 20-byte frame)" "true 20" \
  "$(jq -r '[(.frame.tp.month != null and .frame.tp.year >= 2026), .frame.len] | map(tostring) | join(" ")' <<<"$login")"
wait_for "$T/centre.out" '"function":"report"' 30 "$collector_PID"
line=$(grep '"function":"report"' "$T/centre.out" | head -1)
ms=$(jq -r .ms <<<"$line")
slot=$(( (ms - 1500) / 10000 * 10 ))
# 2102.4 m3/h = 0.584 m3/s; the largest volume the field holds, truncated.
want=$(python3 "$IC_SOURCE_DIR/tests/integration/szy206_ref.py" 140431591B "$slot" UTC 7 0 0.584/799999999)
expect_eq "the report for $(date -u -d @"$slot" +%FT%TZ), 7-byte time label" "$want" "$(jq -r .hex <<<"$line")"
expect_eq "confirmed by the centre" confirmed "$(jq -r .answer <<<"$line")"
expect_eq "decoded: the volume at the field's limit" 799999999 "$(jq -r '.frame.meters[0].volume_m3' <<<"$line")"
stop_pid "$collector_PID"
expect_eq "the gateway stops cleanly" 0 "$STOP_RC"
finish
