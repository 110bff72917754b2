#!/usr/bin/env bash
# `intake-collector read` judges a Modbus TCP answer as the daemon does: a
# meter whose answers carry a bad MBAP length (0, or 65535 with filler
# behind a good PDU) fails commissioning as malformed, with the very failure
# kind and detail the daemon logs when it takes that meter offline.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT LEN0_PORT LONG_PORT < <(free_ports 3)
cat >"$T/site.yaml" <<YAML
site: {id: read-malformed}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
buses:
  - {id: gw0, transport: tcp, host: 127.0.0.1, port: $LEN0_PORT, timeout: 500ms}
  - {id: gw1, transport: tcp, host: 127.0.0.1, port: $LONG_PORT, timeout: 500ms}
meters:
  - {id: Z0, bus: gw0, unit: 1, profile: mag-00h, interval: 500ms}
  - {id: Z1, bus: gw1, unit: 3, profile: mag-00h, interval: 500ms}
YAML

start len0 "$IC_TEST_BIN/ic-badmbap" len0 "$LEN0_PORT"
start long "$IC_TEST_BIN/ic-badmbap" len65535 "$LONG_PORT"
wait_for "$T/len0.out" '^ready' 10 "$len0_PID"
wait_for "$T/long.out" '^ready' 10 "$long_PID"

# The human form: the meter's line says FAILED, the kind and the detail.
rc=0
"$IC_BIN/intake-collector" read --config "$T/site.yaml" >"$T/read.txt" 2>"$T/read.log" || rc=$?
expect_eq "read exits 1 when a meter's answers are malformed" 1 "$rc"
check "length 0: read reports the answer malformed" \
  grep -q "^Z0 (.*) on gw0 unit 1, profile mag-00h: FAILED, malformed: " "$T/read.txt"
check "length 65535: read reports the answer malformed" \
  grep -q "^Z1 (.*) on gw1 unit 3, profile mag-00h: FAILED, malformed: " "$T/read.txt"
check "the requests did reach the meters" grep -q '^request 1$' "$T/len0.out"

# The JSON form.
"$IC_BIN/intake-collector" read --config "$T/site.yaml" --json >"$T/read.json" 2>>"$T/read.log" || true
err_of() { jq -r --arg m "$1" 'select(.meter == $m) | .error' "$T/read.json"; }
detail_of() { jq -r --arg m "$1" 'select(.meter == $m) | .detail' "$T/read.json"; }
expect_eq "length 0: --json error" malformed "$(err_of Z0)"
expect_eq "length 65535: --json error" malformed "$(err_of Z1)"
expect_eq "length 0: the detail names the header" \
  "unframeable answer from unit 1 (protocol id 0, length 0)" "$(detail_of Z0)"
expect_eq "length 65535: the detail names the header" \
  "unframeable answer from unit 3 (protocol id 0, length 65535)" "$(detail_of Z1)"

# The daemon, on the same meters: offline for the same reason, word for word.
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.log" "meter Z0 offline" 30 "$collector_PID"
wait_for "$T/collector.log" "meter Z1 offline" 30 "$collector_PID"
for m in Z0 Z1; do
  line=$(grep -m1 "meter $m offline after" "$T/collector.log" | sed -E 's/.*offline after [0-9]+ failed polls?: //')
  expect_eq "$m: the daemon and read agree" "$(err_of $m): $(detail_of $m)" "$line"
done
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
finish
