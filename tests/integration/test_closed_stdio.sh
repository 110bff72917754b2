#!/usr/bin/env bash
# Started with stdin, stdout and stderr closed, as some supervisors do, the
# daemon and intake-sim run as usual and exit 0 on SIGTERM: no descriptor
# they open (libuv's epoll, a socket) lands on 0-2 to be written into or to
# trip libuv's checks at exit.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
cat >"$T/site.yaml" <<YAML
site: {id: closedfd}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT", client_id: closedfd-gw}
storage: {path: ./readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 1s}
meters:
  - {id: M1, bus: plc, unit: 1, profile: mag-00h, interval: 200ms}
YAML
start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/closedfd/#'

"$IC_BIN/intake-sim" --config "$T/site.yaml" <&- >&- 2>&- &
sim=$!
IC_PIDS+=("$sim")
"$IC_BIN/intake-collector" --config "$T/site.yaml" <&- >&- 2>&- &
col=$!
IC_PIDS+=("$col")

readings() { [ "$(messages sub reading | jq -s 'length')" -ge 10 ]; }
wait_until 30 "ten readings on the broker" readings && ok "readings flow with 0-2 closed"
stop_pid "$col"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
stop_pid "$sim"
expect_eq "intake-sim exits 0" 0 "$STOP_RC"
check "the gateway's clean stop reached the broker" \
  grep -q 'water/closedfd/gateway/state {"online":false' "$T/sub.out"
finish
