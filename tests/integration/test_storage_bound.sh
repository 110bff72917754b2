#!/usr/bin/env bash
# Bounded storage: with storage.max_size small, readings fill it while the
# broker is away. Delivered readings go first, then the oldest undelivered;
# every removal is counted and logged; the database files (with -wal and
# -shm) never exceed the bound by more than the stated margin (an eighth for
# the write-ahead log plus what one maintenance interval writes).
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
MAX=262144
{
  cat <<YAML
site: {id: bound}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db, max_size: 256KiB, maintenance_interval: 1s}
reports: {periods: [hourly]}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
YAML
  for u in 1 2 3 4 5 6 7 8; do
    echo "  - {id: M$u, bus: plc, unit: $u, profile: tuf2000m, interval: 100ms}"
  done
} >"$T/site.yaml"
DB="$T/readings.db"
bytes() { local n=0 f; for f in "$DB" "$DB-wal" "$DB-shm"; do [ -f "$f" ] && n=$((n + $(stat -c %s "$f"))); done; echo "$n"; }

start_broker broker "$MQTT_PORT"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
some_delivered() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 1')" -ge 200 ]; }
wait_until 30 "readings delivered before the outage" some_delivered

stop_pid "$broker_PID"
wait_for "$T/collector.log" "broker connection lost" 15 "$collector_PID"

# Watch the files while the outbox fills the bound and beyond.
peak=0
first_drop() { grep -q "dropped the [0-9]* oldest undelivered" "$T/collector.log"; }
deadline=$((SECONDS + 90))
dropped_seen=0
while [ "$SECONDS" -lt "$deadline" ]; do
  b=$(bytes)
  [ "$b" -gt "$peak" ] && peak=$b
  if [ "$dropped_seen" = 0 ] && first_drop; then
    dropped_seen=1
    drop_deadline=$((SECONDS + 5))
    # When undelivered rows go, no delivered one may be left.
    expect_eq "delivered readings went first" 0 \
      "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 1')"
  fi
  if [ "$dropped_seen" = 1 ] && [ "$SECONDS" -ge "$drop_deadline" ]; then break; fi
  sleep 0.2
done
check "undelivered readings were dropped once nothing delivered was left" first_drop
check "the removal of delivered readings was logged" \
  grep -q "removed the [0-9]* oldest delivered readings" "$T/collector.log"
# The stated margin: the write-ahead log (an eighth of the bound, at least
# 16 pages = 64 KiB) plus what one interval writes (8 meters x 10 readings/s
# x about 250 bytes = about 20 kB per 1 s interval; 64 KiB allowed).
wal=$((MAX / 8 > 65536 ? MAX / 8 : 65536))
limit=$((MAX + wal + 64 * 1024))
if [ "$peak" -le "$limit" ]; then
  ok "the database files peaked at $peak bytes (bound $MAX, margin to $limit)"
else
  not_ok "the database files reached $peak bytes, over $limit"
fi

stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
# The oldest undelivered went first: what is left of each meter is its newest
# readings, contiguous up to its last sequence number.
for m in M1 M8; do
  read -r lo hi n < <(sql "$DB" "SELECT min(seq), max(seq), count(*) FROM readings WHERE meter = '$m'" | tr '|' ' ')
  last=$(sql "$DB" "SELECT last_seq FROM meters WHERE id = '$m'")
  expect_eq "meter $m keeps its newest readings, contiguous to its last seq" "$last $n" "$hi $((hi - lo + 1))"
  check "meter $m lost its oldest readings (kept from seq $lo)" test "$lo" -gt 1
done
# Every removal is counted: the stop summary's count is the rows missing.
line=$(grep -E "stopped after" "$T/collector.log")
removed=$(sed -E 's/.* ([0-9]+) removed by the size limit.*/\1/' <<<"$line")
total=$(sql "$DB" 'SELECT sum(last_seq) FROM meters')
present=$(sql "$DB" 'SELECT count(*) FROM readings')
expect_eq "every removed reading is counted" "$((total - present))" "$removed"
finish
