#!/usr/bin/env bash
# DTUs and serial servers close idle links. Between polls, relays owned by
# the test hang up every connection to a rtu-over-tcp DTU (named by host
# name, so it is resolved) and to a Modbus TCP meter, five times. The daemon
# connects again for the next poll: no poll fails, no meter goes offline,
# and every slot has its reading.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT DTU_RELAY PLC_RELAY ROT_PORT TCP_PORT < <(free_ports 5)
head_yaml() {
  cat <<YAML
site: {id: hang}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
YAML
}
meters_yaml() {
  cat <<YAML
meters:
  - {id: A, bus: dtu, unit: 1, profile: tuf2000m, interval: 1s}
  - {id: B, bus: dtu, unit: 2, profile: mag-00h, interval: 1s}
  - {id: C, bus: plc, unit: 1, profile: mag-00h, interval: 1s}
YAML
}
# The meters listen on their own ports; the daemon reaches them through the
# relays.
{ head_yaml; cat <<YAML; meters_yaml; } >"$T/sim.yaml"
buses:
  - {id: dtu, transport: rtu-over-tcp, host: 127.0.0.1, port: $ROT_PORT}
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT}
YAML
{ head_yaml; cat <<YAML; meters_yaml; } >"$T/site.yaml"
buses:
  - {id: dtu, transport: rtu-over-tcp, host: localhost, port: $DTU_RELAY, timeout: 500ms}
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $PLC_RELAY, timeout: 500ms}
YAML
DB="$T/readings.db"
mkdir -p "$T/dtu" "$T/plc"

start_broker broker "$MQTT_PORT"
start dturelay "$IC_TEST_BIN/ic-tcprelay" "$DTU_RELAY" "$ROT_PORT" "$T/dtu"
start plcrelay "$IC_TEST_BIN/ic-tcprelay" "$PLC_RELAY" "$TCP_PORT" "$T/plc"
wait_for "$T/dturelay.out" '^ready' 10 "$dturelay_PID"
wait_for "$T/plcrelay.out" '^ready' 10 "$plcrelay_PID"
start sim "$IC_BIN/intake-sim" --config "$T/sim.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"

rows() { sql "$DB" 'SELECT count(*) FROM readings'; }
each_read() { [ "$(sql "$DB" 'SELECT count(DISTINCT meter) FROM readings')" -eq 3 ]; }
wait_until 20 "every meter read once" each_read
t0=$(now_ms)

# The meter of the newest reading stored.
newest() { sql "$DB" 'SELECT meter FROM readings ORDER BY rowid DESC LIMIT 1'; }
for i in 1 2 3 4 5; do
  # Right after a round of polls (A, C, then B 100 ms later): the next
  # round is most of a second away. Three more readings, the newest B's:
  # the count alone can end between A and B of a round, when B's poll is
  # about to go out.
  n=$(rows)
  round() { [ "$(rows)" -ge $((n + 3)) ] && [ "$(newest)" = B ]; }
  wait_until 10 "round $i polled" round
  touch "$T/dtu/hangup" "$T/plc/hangup"
  wait_for "$T/dturelay.out" "^hangup $i\$" 5 "$dturelay_PID"
  wait_for "$T/plcrelay.out" "^hangup $i\$" 5 "$plcrelay_PID"
done
n=$(rows)
after() { [ "$(rows)" -ge $((n + 6)) ]; }
wait_until 10 "two rounds after the last hang-up" after
t1=$(now_ms)
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"

for r in dturelay plcrelay; do
  acc=$(grep -c '^accepted' "$T/$r.out")
  check "$r: the daemon connected again after each hang-up ($acc connections)" test "$acc" -ge 6
done
failed=$(sql "$DB" 'SELECT coalesce(sum(skipped + timeout + crc + exception + connection_refused
  + connection_reset + malformed + io + decode), 0) FROM poll_stats')
expect_eq "no poll failed across the hang-ups" 0 "$failed"
expect_eq "no meter went offline" 0 "$(sql "$DB" 'SELECT count(*) FROM state_changes WHERE online = 0')"
secs=$(( (t1 - t0) / 1000 ))
for m in A B C; do
  got=$(sql "$DB" "SELECT count(*) FROM readings WHERE meter = '$m' AND ts_ms BETWEEN $t0 AND $t1")
  check "meter $m: a reading for every second of the $secs s ($got)" test "$got" -ge $((secs - 1))
done
finish
