#!/usr/bin/env bash
# SIGTERM while a request waits on a slow meter: the daemon abandons the
# queued polls, lets the request in flight run into its timeout, commits the
# readings already taken and exits 0 within the longest bus timeout plus one
# second.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT ROT_PORT < <(free_ports 2)
cat >"$T/site.yaml" <<YAML
site: {id: stoptest}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
sim: {control: ./sim.sock}
buses:
  - {id: dtu, transport: rtu-over-tcp, host: 127.0.0.1, port: $ROT_PORT, timeout: 2s}
meters:
  - {id: GOOD, bus: dtu, unit: 1, profile: mag-00h, interval: 1s}
  - {id: SLOW, bus: dtu, unit: 2, profile: mag-00h, interval: 1s,
     sim: {fault: slow, slow_delay: 10s}}
YAML

start_broker broker "$MQTT_PORT"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"

requests() {
  "$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" status |
    sed -nE 's/^SLOW .* requests=([0-9]+).*/\1/p'
}
# A reading taken first, so there is something to commit at the stop.
one() { [ "$(sql "$T/readings.db" 'SELECT count(*) FROM readings')" -ge 1 ]; }
wait_until 10 "a reading from the good meter" one
seen=$(requests)
# Wait for the next request to SLOW: from then on one sits in flight for 2 s.
new_request() { [ "$(requests)" -gt "$seen" ]; }
wait_until 10 "a request to the slow meter" new_request
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
if [ "$STOP_MS" -le 3000 ]; then
  ok "it stopped in $STOP_MS ms with a request in flight (limit: 2 s timeout + 1 s)"
else
  not_ok "it took $STOP_MS ms to stop (limit 3000)"
fi
line=$(grep -E 'stopped after' "$T/collector.log" || true)
taken=$(sed -nE 's/.* ([0-9]+) readings taken.*/\1/p' <<<"$line")
committed=$(sed -nE 's/.*taken, ([0-9]+) committed.*/\1/p' <<<"$line")
check "some readings were taken ($taken)" test "${taken:-0}" -ge 1
expect_eq "every reading taken was committed" "$taken" "$committed"
expect_eq "the database holds them" "$taken" "$(sql "$T/readings.db" 'SELECT count(*) FROM readings')"
finish
