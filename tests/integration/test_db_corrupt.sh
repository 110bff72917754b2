#!/usr/bin/env bash
# A partly corrupt database is said so at start, at error level, and a
# statement that fails is never taken for "nothing left": with the oldest
# (delivered) readings' page garbled, the size bound's DELETE of delivered
# rows fails, and the undelivered readings, which can still be read, are
# kept rather than dropped next.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
site() { # max_size
  cat <<YAML
site: {id: corrupt}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT", client_id: corrupt-gw}
storage: {path: ./readings.db, max_size: $1}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 1s}
meters:
YAML
  for u in $(seq 1 10); do
    echo "  - {id: M$u, bus: plc, unit: $u, profile: mag-00h, interval: 100ms}"
  done
}
site 512MiB >"$T/site.yaml"
site 64KiB >"$T/small.yaml"
DB="$T/readings.db"

# Readings delivered first, then undelivered ones while the broker is away.
start_broker broker "$MQTT_PORT"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.log" "broker connected" 20 "$collector_PID"
delivered() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 1')" -ge 300 ]; }
wait_until 30 "300 readings delivered" delivered
stop_pid "$broker_PID"
undelivered() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -ge 300 ]; }
wait_until 30 "300 readings waiting" undelivered
stop_meters "$T/collector.log" 10
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"

# Garble the first leaf page of the readings table: the oldest rows, all
# delivered.
page=$(sql "$DB" "SELECT pageno FROM dbstat WHERE name = 'readings' AND pagetype = 'leaf'
                  ORDER BY pageno LIMIT 1")
size=$(sql "$DB" 'PRAGMA page_size')
waiting=$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')
check "a leaf page of the readings table was found ($page, $size bytes)" test -n "$page"
# Rows sit in id order; the first page's rows are among the 300 oldest.
expect_eq "the delivered readings are the oldest" 1 \
  "$(sql "$DB" 'SELECT (SELECT max(id) FROM readings WHERE delivered = 1) <
                       (SELECT min(id) FROM readings WHERE delivered = 0)')"
head -c "$size" /dev/urandom | dd of="$DB" bs="$size" seek=$((page - 1)) count=1 conv=notrunc \
  status=none
rm -f "$DB-wal" "$DB-shm"

# Start on the corrupt file with a size bound it is far over: maintenance
# runs at once.
start collector2 "$IC_BIN/intake-collector" --config "$T/small.yaml"
wait_for "$T/collector2.log" "failed its integrity check" 20 "$collector2_PID"
check "at error level" grep -q "^error storage: $DB failed its integrity check" "$T/collector2.log"
wait_for "$T/collector2.log" "maintenance stopped" 20 "$collector2_PID"
check "the failed statement is named, with SQLite's words" \
  grep -q "maintenance stopped: removing delivered readings for the size bound failed: database disk image is malformed" \
  "$T/collector2.log"
stop_pid "$collector2_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
expect_eq "no undelivered reading was dropped" 0 \
  "$(grep -c 'oldest undelivered readings' "$T/collector2.log" || true)"
expect_eq "every undelivered reading is still there ($waiting)" "$waiting" \
  "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')"
finish
