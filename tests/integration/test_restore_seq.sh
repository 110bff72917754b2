#!/usr/bin/env bash
# A database restored from an older copy must not give a published
# (meter, seq) to another reading. Run 1 publishes, with a backup taken part
# way; run 2 is a plain restart (no warning, numbering goes on); then the
# backup replaces the database and run 3 starts from it: it reads the
# meters' retained reservations back, warns, and numbers its readings above
# everything published. On the broker, every (meter, seq) names one reading
# (same ts and fields wherever it repeats). Numbers are reserved a block
# at a time (about 10 s of a meter's readings), announced before use; a plain
# restart or a crash stays within the database's own reservation.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
cat >"$T/site.yaml" <<YAML
site: {id: rs}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
reports: {periods: [hourly]}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
  - {id: A, bus: plc, unit: 1, profile: mag-00h, interval: 100ms}
  - {id: B, bus: plc, unit: 2, profile: tuf2000m, interval: 200ms}
YAML
DB="$T/readings.db"

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/rs/+/reading'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"

# max_seq METER: the highest seq of METER the subscriber has.
max_seq() { messages sub reading | jq -s --arg m "$1" '[.[] | select(.meter == $m) | .seq] | max // 0'; }
# run_until N: start the collector, wait until A's seq N reached the
# subscriber.
run_until() {
  local n=$1 log=$2
  "$IC_BIN/intake-collector" --config "$T/site.yaml" >"$T/$log.out" 2>"$T/$log.log" &
  collector_PID=$!
  wait_for "$T/$log.out" '^ready' 20 "$collector_PID"
  _past() { [ "$(max_seq A)" -ge "$n" ]; }
  wait_until 30 "meter A's seq $n on the broker" _past
}

# Run 1: a backup part way (SQLite's online backup, as an operator's
# nightly copy would be), then more readings.
run_until 10 run1
sqlite3 "$DB" ".backup '$T/backup.db'"
b_a=$(sql "$T/backup.db" "SELECT last_seq FROM meters WHERE id = 'A'")
# Numbers are reserved about 10 s of readings at a time (100 for A, 50 for
# B); a copy is told apart once the numbering has left its block.
run_until_more() { [ "$(max_seq A)" -ge $((b_a + 110)) ]; }
wait_until 40 "110 readings of A past the backup" run_until_more
stop_pid "$collector_PID"
expect_eq "run 1 exits 0" 0 "$STOP_RC"
res=$(mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t water/rs/A/seq -C 1 -W 5 | jq .reserved)
last1=$(sql "$DB" "SELECT last_seq FROM meters WHERE id = 'A'")
check "A's retained reservation ($res) covers its last published seq ($last1)" \
  test "${res:-0}" -ge "$last1"

# Run 2: a plain restart. Nothing to warn about; numbering goes on.
run_until $((last1 + 10)) run2
stop_pid "$collector_PID"
expect_eq "run 2 exits 0" 0 "$STOP_RC"
quiet() { ! grep -q "beyond this database" "$T/run2.log"; }
check "a plain restart says nothing about sequence numbers" quiet
last2=$(sql "$DB" "SELECT last_seq FROM meters WHERE id = 'A'")
published=$(max_seq A)
check "run 2 went on from run 1's numbers" test "$(sql "$DB" \
  "SELECT min(seq) FROM readings WHERE meter = 'A' AND id > (SELECT max(id) FROM readings WHERE meter = 'A' AND seq = $last1)")" -eq $((last1 + 1))

# Run 3 from the backup: behind what the broker has seen.
rm -f "$DB" "$DB-wal" "$DB-shm"
cp "$T/backup.db" "$DB"
check "the restored database is behind the broker (A: $b_a < $published)" \
  test "$b_a" -lt "$published"
run_until $((published + 10)) run3
check "run 3 warns that the broker has seen more of meter A" \
  grep -q "meter A: the broker has seen sequence numbers up to .* beyond this database's" \
  "$T/run3.log"
check "... and of meter B" \
  grep -q "meter B: the broker has seen sequence numbers up to .* beyond this database's" \
  "$T/run3.log"
# The meters stop so that the outbox drains, then the collector.
stop_meters "$T/run3.log" 2
drained() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -eq 0 ]; }
wait_until 30 "the outbox drained" drained
stop_pid "$collector_PID"
expect_eq "run 3 exits 0" 0 "$STOP_RC"

messages sub reading >"$T/readings.json"
clash=$(jq -s '[group_by(.meter, .seq)[] | select((map({ts, fields}) | unique | length) > 1)
               | {meter: .[0].meter, seq: .[0].seq}]' "$T/readings.json")
expect_eq "no (meter, seq) names two readings on the broker" 0 "$(jq length <<<"$clash")"
[ "$(jq length <<<"$clash")" -eq 0 ] || echo "# clashes: $(jq -c '.[:10]' <<<"$clash")"
new_min=$(sql "$DB" "SELECT min(seq) FROM readings WHERE meter = 'A' AND seq > $b_a")
check "run 3's readings of A are numbered above all published ($new_min > $published)" \
  test "$new_min" -gt "$published"
finish
