#!/usr/bin/env bash
# One daemon per database: a second daemon started on the same database is
# refused at start with a line that names the first one's pid, and the first
# goes on polling without a sequence number used twice; `report`, which only
# reads, runs beside it. Likewise one fleet view per outbox.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT HTTP_PORT < <(free_ports 3)
cat >"$T/site.yaml" <<YAML
site: {id: onedb}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT", client_id: onedb-gw}
storage: {path: ./readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 1s}
meters:
  - {id: M1, bus: plc, unit: 1, profile: mag-00h, interval: 200ms}
YAML
# The same database, under another client id (a copy of the site file left
# on a second unit, say).
sed 's/client_id: onedb-gw/client_id: onedb-gw2/' "$T/site.yaml" >"$T/site2.yaml"

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/onedb/+/reading'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start first "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/first.out" '^ready' 20 "$first_PID"

rc=0
timeout 20 "$IC_BIN/intake-collector" --config "$T/site2.yaml" >"$T/second.out" 2>"$T/second.log" || rc=$?
expect_eq "the second daemon exits 1 at start" 1 "$rc"
check "saying the database is in use, by the first one's pid" \
  grep -q "database $T/readings.db is in use by another process (pid $first_PID)" "$T/second.log"
check "before it polled or said ready" bash -c "! grep -q ready '$T/second.out'"

rc=0
"$IC_BIN/intake-collector" report --config "$T/site.yaml" --from 2026-01-01 --to 2026-01-02 \
  --period day >"$T/report.json" 2>"$T/report.err" || rc=$?
expect_eq "report reads the database beside the running daemon" 0 "$rc"

some() { [ "$(messages sub reading | jq -s 'length')" -ge 20 ]; }
wait_until 30 "the first daemon keeps publishing" some
stop_meters "$T/first.log" 1
stop_pid "$first_PID"
expect_eq "the first daemon exits 0" 0 "$STOP_RC"
messages sub reading >"$T/readings.json"
expect_eq "no (meter, seq) names two readings" 0 \
  "$(jq -s 'group_by(.seq) | map(select((map(.ts) | unique | length) > 1)) | length' "$T/readings.json")"

# Once the first is gone, the database is free again.
start third "$IC_BIN/intake-collector" --config "$T/site2.yaml"
wait_for "$T/third.out" '^ready' 20 "$third_PID" && ok "a daemon starts once the first has stopped"
stop_pid "$third_PID"

# One fleet view per outbox.
cat >"$T/fleet.yaml" <<YAML
fleet: {id: onedb}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./fleet.db}
reports: {periods: [daily], push_url: "http://127.0.0.1:$HTTP_PORT/fleet"}
register:
  - {site: onedb, meter: M1}
YAML
start fleet1 "$IC_BIN/intake-collector" fleet --config "$T/fleet.yaml"
wait_for "$T/fleet1.out" '^ready' 20 "$fleet1_PID"
rc=0
timeout 20 "$IC_BIN/intake-collector" fleet --config "$T/fleet.yaml" >"$T/fleet2.out" \
  2>"$T/fleet2.log" || rc=$?
check "a second fleet view on the same outbox exits non-zero ($rc)" test "$rc" -ne 0
check "saying the outbox is in use" grep -q "fleet.db is in use by another process (pid $fleet1_PID)" "$T/fleet2.log"
stop_pid "$fleet1_PID"
expect_eq "the fleet view exits 0" 0 "$STOP_RC"
finish
