#!/usr/bin/env bash
# A concentrator's buses each hold a descriptor. Started under a soft
# open-file limit too small for its 60 Modbus TCP endpoints, the daemon
# raises it and reads every meter; under a hard limit too small it says so
# at start, keeps running and reads the meters it has room for.
source "$(dirname "$0")/lib.sh"

N=60
read -r MQTT_PORT rest < <(free_ports $((N + 1)))
read -r -a PORTS <<<"$rest"
{
  cat <<YAML
site: {id: fds}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
buses:
YAML
  for i in $(seq 0 $((N - 1))); do
    echo "  - {id: e$i, transport: tcp, host: 127.0.0.1, port: ${PORTS[$i]}, timeout: 300ms}"
  done
  echo "meters:"
  for i in $(seq 0 $((N - 1))); do
    echo "  - {id: m$i, bus: e$i, unit: 1, profile: mag-00h, interval: 500ms}"
  done
} >"$T/site.yaml"
DB="$T/readings.db"

start_broker broker "$MQTT_PORT"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"

# A soft limit of 40 under a higher hard one: raised to what the buses need.
start collector bash -c "ulimit -Sn 40 && exec \"\$0\" --config \"\$1\"" \
  "$IC_BIN/intake-collector" "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
check "the raise is logged" grep -q "open-file limit raised from 40 to $((N + 64)) for $N buses" "$T/collector.log"
all_read() { [ "$(sql "$DB" 'SELECT count(DISTINCT meter) FROM readings')" -eq $N ]; }
wait_until 20 "every meter read" all_read
ok "all $N meters were read under a soft limit of 40"
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"

# A hard limit of 50: not enough. The daemon says so, and the buses past
# the limit fail with the reason while the others are read.
rm -f "$DB" "$DB-wal" "$DB-shm"
start collector2 bash -c "ulimit -n 50 && exec \"\$0\" --config \"\$1\"" \
  "$IC_BIN/intake-collector" "$T/site.yaml"
wait_for "$T/collector2.out" '^ready' 20 "$collector2_PID"
check "the shortfall is logged at start" grep -q "$N buses need about $((N + 64)) open files, but the limit is 50" "$T/collector2.log"
some_offline() { [ "$(grep -c 'offline after' "$T/collector2.log" || true)" -ge 1 ]; }
wait_until 20 "the meters past the limit go offline" some_offline
check "they fail with the reason" grep -q "Too many open files" "$T/collector2.log"
read_some() { [ "$(sql "$DB" 'SELECT count(DISTINCT meter) FROM readings')" -ge 10 ]; }
wait_until 20 "the meters within the limit are read" read_some
check "the daemon keeps running" kill -0 "$collector2_PID"
stop_pid "$collector2_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
finish
