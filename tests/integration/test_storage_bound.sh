#!/usr/bin/env bash
# Bounded storage: with storage.max_size small, readings fill it while the
# broker is away. Delivered readings go first, then the oldest undelivered;
# every removal is counted and logged; the database files (with -wal and
# -shm), sampled every 100 ms from before the daemon starts until after it
# exits, never exceed the bound by more than the stated margin (an eighth for
# the write-ahead log plus what one maintenance interval writes), before the
# outage, while the bound is reached and pass after pass once it holds.
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
# The database files' sizes now: "TOTAL MAIN WAL SHM" (0 for a file absent).
sizes() {
  local f s t=0 out=""
  for f in "$DB" "$DB-wal" "$DB-shm"; do
    s=$(stat -c %s "$f" 2>/dev/null || echo 0)
    t=$((t + s))
    out="$out $s"
  done
  echo "$t$out"
}
# Sampled every 100 ms for the whole run, from before the daemon starts until
# after it exits: "MS TOTAL MAIN WAL SHM" lines in $T/sizes.out.
sample_sizes() { while :; do echo "$(now_ms) $(sizes)"; sleep 0.1; done; }
drops() { grep -c "dropped the [0-9]* oldest undelivered" "$T/collector.log" || true; }

start_broker broker "$MQTT_PORT"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start sizes sample_sizes
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
some_delivered() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 1')" -ge 200 ]; }
wait_until 30 "readings delivered before the outage" some_delivered

stop_pid "$broker_PID"
wait_for "$T/collector.log" "broker connection lost" 15 "$collector_PID"

# The outbox fills the bound: delivered readings go first.
first_drop() { [ "$(drops)" -ge 1 ]; }
wait_until 90 "undelivered readings dropped at the bound" first_drop
drop_ms=$(now_ms)
# When undelivered rows go, no delivered one may be left.
expect_eq "delivered readings went first" 0 \
  "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 1')"
check "the removal of delivered readings was logged" \
  grep -q "removed the [0-9]* oldest delivered readings" "$T/collector.log"
# Then the bound holds pass after pass, not only at the first: the outage
# goes on for 15 more maintenance passes that drop undelivered readings.
drops_at_first=$(drops)
more_passes() { [ "$(drops)" -ge $((drops_at_first + 15)) ]; }
wait_until 90 "15 more passes dropping undelivered readings" more_passes
ok "the bound was reached and held for $((($(now_ms) - drop_ms) / 1000)) s past the first drop ($(drops) passes dropped readings)"
# Stop just after a pass, once every meter has a reading stored since: what
# each meter keeps is judged below.
n=$(drops)
one_more() { [ "$(drops)" -gt "$n" ]; }
wait_until 10 "one more pass" one_more
every_meter() { [ "$(sql "$DB" 'SELECT count(DISTINCT meter) FROM readings')" -eq 8 ]; }
wait_until 10 "a reading of every meter kept" every_meter

stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
echo "$(now_ms) $(sizes)" >>"$T/sizes.out" # once more after the exit
kill -TERM "$sizes_PID"
reap "$sizes_PID"

# The stated margin (docs/daemon.md, Bounds): the write-ahead log (an eighth
# of the bound, at least 16 pages = 64 KiB) plus what one interval writes
# (8 meters x 10 readings/s x about 250 bytes = about 20 kB per 1 s
# interval; 64 KiB allowed), plus the log's index, the -shm file (32 KiB for
# up to 4,096 log pages), which the sizes below count too. It holds at every
# sample of the run.
wal=$((MAX / 8 > 65536 ? MAX / 8 : 65536))
limit=$((MAX + wal + 64 * 1024 + 32 * 1024))
read -r nsamples peak peak_ms < <(awk '{ n++; if ($2 > p) { p = $2; t = $1 } } END { printf "%d %.0f %.0f\n", n, p, t }' "$T/sizes.out")
over=$(awk -v l="$limit" '$2 > l' "$T/sizes.out")
if [ -z "$over" ]; then
  ok "all $nsamples samples within $limit bytes (bound $MAX plus margin); peak $peak bytes, $(((peak_ms - drop_ms) / 1000)) s from the first drop"
else
  not_ok "$(wc -l <<<"$over") of $nsamples samples over $limit bytes (bound $MAX plus margin), the first at $(((${over%% *} - drop_ms))) ms from the first drop: $(head -5 <<<"$over" | awk '{ printf "[%s: %s = main %s + wal %s + shm %s] ", $1, $2, $3, $4, $5 }')"
fi
# The samples cover the run: none more than a second apart.
gap=$(awk 'NR > 1 && $1 - p > g { g = $1 - p } { p = $1 } END { printf "%.0f\n", g }' "$T/sizes.out")
check "the samples cover the run without a gap over 1 s (largest $gap ms)" test "$gap" -le 1000
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
