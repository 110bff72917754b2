#!/usr/bin/env bash
# A peer that sends bytes without end (a broken serial server, a DTU with a
# stuck line) is not read for ever: past 4 KiB that frame no answer the
# gateway closes the connection (the poll it cut short counts malformed), the
# meter goes offline by the usual rule and is retried on its back-off.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT DTU_PORT < <(free_ports 2)
cat >"$T/site.yaml" <<YAML
site: {id: babble}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
buses:
  - {id: dtu, transport: rtu-over-tcp, host: 127.0.0.1, port: $DTU_PORT, timeout: 1s}
meters:
  - {id: D1, bus: dtu, unit: 1, profile: tuf2000m, interval: 500ms}
YAML
start babbler "$IC_TEST_BIN/ic-babbler" "$DTU_PORT"
wait_for "$T/babbler.out" '^ready' 10 "$babbler_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.log" "meter D1 offline" 30 "$collector_PID"
# Random bytes look like frames with a bad CRC as often as like nothing.
check "the meter went offline for bad answers" \
  grep -Eq "meter D1 offline after 3 failed polls: (crc|malformed): " "$T/collector.log"
wait_for "$T/babbler.out" '^closed 2 ' 30 "$babbler_PID"
ok "the gateway closed the babbling connection, twice"
sent=$(awk '/^closed 1 / {print $3}' "$T/babbler.out")
check "after a bounded number of bytes ($sent), not a stream read for ever" test "$sent" -lt 10000000
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
finish
