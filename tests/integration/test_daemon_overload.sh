#!/usr/bin/env bash
# A bus that cannot keep up skips slots and counts them instead of queueing
# without bound: six meters every 200 ms on a 1200-baud line with wire-time
# emulation need more than the line can carry.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT < <(free_ports 1)
{
  cat <<YAML
site: {id: overload}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
buses:
  - {id: slow, transport: rtu, device: ./ttySIM0, baud: 1200, timeout: 1s, sim_wire_time: true}
meters:
YAML
  for u in 1 2 3 4 5 6; do
    echo "  - {id: M$u, bus: slow, unit: $u, profile: mag-00h, interval: 200ms}"
  done
} >"$T/site.yaml"
DB="$T/readings.db"

start_broker broker "$MQTT_PORT"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"

# A mag-00h poll is 8 + 45 bytes at 1200 baud: about 0.45 s of line time, so
# the line carries about two polls a second against the thirty asked for.
skipped() {
  [ "$(sql "$DB" 'SELECT coalesce(sum(skipped), 0) FROM poll_stats')" -ge 30 ] &&
    [ "$(sql "$DB" 'SELECT count(*) FROM readings')" -ge 6 ]
}
wait_until 20 "skipped slots counted" skipped
ok "skipped slots are counted in poll_stats"
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
polls=$(sql "$DB" 'SELECT sum(polls) FROM poll_stats')
readings=$(sql "$DB" 'SELECT count(*) FROM readings')
expect_eq "every poll that ran gave a reading (none failed for queueing)" "$polls" "$readings"
check "polls kept running on the overloaded line ($readings readings)" test "$readings" -ge 6
check "the stop summary is logged" grep -q "stopped after" "$T/collector.log"
finish
