#!/usr/bin/env bash
# SIGTERM while readings are taken but not yet committed, while a request is
# in flight on a serial line and while one waits on a slow meter of a network
# bus: the daemon abandons the queued polls and the network poll, lets the
# serial request finish, commits every reading taken (those of the group
# commit still open and the one the serial request brings in during the stop)
# and exits 0 within the longest bus timeout plus one second. The count is
# the database's rows and intake-sim's answers, not the daemon's counters;
# the broker holds only committed readings, and after the next start the
# readings committed at the stop reach it too, flagged historical, so that
# every meter's sequence numbers reach it without a gap.
source "$(dirname "$0")/lib.sh"

# A long group commit (10 s) holds the readings of the last seconds in the
# store's queue: at the stop there is a batch to commit.
COMMIT_MS=10000
read -r MQTT_PORT ROT_PORT < <(free_ports 2)
cat >"$T/site.yaml" <<YAML
site: {id: stoptest}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db, commit_interval: ${COMMIT_MS}ms}
sim: {control: ./sim.sock}
buses:
  - {id: line, transport: rtu, device: ./ttySIM0, baud: 9600, timeout: 2s}
  - {id: dtu, transport: rtu-over-tcp, host: 127.0.0.1, port: $ROT_PORT, timeout: 2s}
meters:
  # LATE answers every request 800 ms late: a request is in flight on the
  # line for 800 ms of every second. GOOD's poll waits behind it.
  - {id: LATE, bus: line, unit: 1, profile: mag-00h, interval: 1s,
     sim: {fault: slow, slow_delay: 800ms}}
  - {id: GOOD, bus: line, unit: 2, profile: mag-00h, interval: 1s}
  # SLOW never answers within the run: its requests run into the timeout.
  - {id: SLOW, bus: dtu, unit: 3, profile: mag-00h, interval: 1s,
     sim: {fault: slow, slow_delay: 60s}}
YAML
DB="$T/readings.db"
METERS="LATE GOOD"

# sim_field METER FIELD: a counter of METER in intake-sim's status (requests,
# answers, pending).
sim_field() {
  "$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" status |
    sed -nE "s/^$1 .* $2=([0-9]+).*/\\1/p"
}
rows() { sql "$DB" "SELECT count(*) FROM readings${1:+ WHERE meter = '$1'}"; }

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/stoptest/+/reading'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"

# A first group commit, so the broker has live readings before the stop.
committed() { [ "$(rows)" -ge 1 ]; }
wait_until $((COMMIT_MS / 1000 + 10)) "a first group commit" committed
# The moment to stop: a request to SLOW has just gone out (it waits 2 s for
# its timeout), LATE's request of the same second is in flight on the line
# (its answer due within 800 ms; both meters are first on their bus, so due
# at the same instant), and at least three readings answered since the last
# commit are taken but not yet in the database.
slow_seen=$(sim_field SLOW requests)
stop_moment() {
  local slow late_pend taken_now
  slow=$(sim_field SLOW requests)
  [ "${slow:-0}" -gt "$slow_seen" ] || return 1
  slow_seen=$slow # a later try needs a request newer than this one
  late_pend=$(sim_field LATE pending)
  [ "${late_pend:-0}" -ge 1 ] || return 1
  # intake-sim counts LATE's answer in flight already; it is not taken yet.
  taken_now=$(($(sim_field LATE answers) - late_pend + $(sim_field GOOD answers)))
  ROWS_NOW=$(rows)
  UNCOMMITTED=$((taken_now - ROWS_NOW))
  [ "$UNCOMMITTED" -ge 3 ]
}
wait_until $((COMMIT_MS / 1000 + 10)) "a request in flight with readings waiting for the group commit" stop_moment
stop_pid "$collector_PID"
ok "just before SIGTERM, $UNCOMMITTED readings taken were not yet committed ($ROWS_NOW rows in the database)"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
if [ "$STOP_MS" -le 3000 ]; then
  ok "it stopped in $STOP_MS ms with requests in flight (limit: 2 s timeout + 1 s)"
else
  not_ok "it took $STOP_MS ms to stop (limit 3000)"
fi

# Every answer intake-sim gave is a row: the readings of the open group
# commit and the one LATE's request brought in during the stop included.
# (One request per mag-00h poll; GOOD's poll queued behind LATE's is
# abandoned unsent.)
for m in $METERS; do
  ans=$(sim_field "$m" answers)
  expect_eq "every answer intake-sim gave $m is a row of the database" "$ans" "$(rows "$m")"
  expect_eq "$m: every request was answered (none dropped)" "$(sim_field "$m" requests)" "$ans"
done
check "the stop committed the readings that were waiting ($(rows) rows, $ROWS_NOW before it, $UNCOMMITTED waiting)" \
  test "$(rows)" -ge $((ROWS_NOW + UNCOMMITTED))
line=$(grep -E 'stopped after' "$T/collector.log" || true)
taken=$(sed -nE 's/.* ([0-9]+) readings taken.*/\1/p' <<<"$line")
expect_eq "the readings the stop line says were taken are the database's rows" "$(rows)" "${taken:-none}"
expect_eq "SLOW gave no reading" 0 "$(rows SLOW)"
declare -A LAST
for m in $METERS; do
  LAST[$m]=$(sql "$DB" "SELECT last_seq FROM meters WHERE id = '$m'")
  expect_eq "$m's rows are seq 1..last_seq, each once" "1 ${LAST[$m]} ${LAST[$m]}" \
    "$(sql "$DB" "SELECT min(seq), max(seq), count(DISTINCT seq) FROM readings WHERE meter = '$m'" | tr '|' ' ')"
done

# The broker holds committed readings only: each message is a row of the
# database (same meter, seq and ts).
rows_json() {
  sql "$DB" "SELECT meter, seq, ts_ms FROM readings ${1-}" |
    jq -R -c 'split("|") | {meter: .[0], seq: (.[1] | tonumber), ts_ms: (.[2] | tonumber)}'
}
# A message as {meter, seq, ts_ms}; ts is RFC 3339 UTC with milliseconds.
WITH_MS='{meter, seq, ts_ms: (((.ts | sub("\\.[0-9]{3}Z$"; "Z") | fromdateiso8601) * 1000)
                            + (.ts | capture("\\.(?<ms>[0-9]{3})Z$").ms | tonumber))}'
rows_json >"$T/rows.json"
rows_json "WHERE delivered = 0" >"$T/undelivered.json"
messages sub reading | jq -c "$WITH_MS" >"$T/pub-before.json"
expect_eq "every reading on the broker is a committed row" 0 \
  "$(jq -n --slurpfile r "$T/rows.json" --slurpfile p "$T/pub-before.json" '$p - $r | length')"
check "readings committed at the stop wait for delivery ($(jq -s length "$T/undelivered.json"))" \
  test "$(jq -s length "$T/undelivered.json")" -ge "$UNCOMMITTED"

# The next start replays them: every seq of every meter reaches the broker,
# each row left undelivered at the stop as a historical message of the same
# reading.
start collector2 "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector2.out" '^ready' 20 "$collector2_PID"
all_there() {
  messages sub reading >"$T/pub.json"
  local m
  for m in $METERS; do
    [ "$(missing_seqs "$T/pub.json" "$m" "${LAST[$m]}")" -eq 0 ] || return 1
  done
}
wait_until 30 "every seq committed before the stop on the broker" all_there
ok "after the next start the broker has LATE's seq 1..${LAST[LATE]} and GOOD's 1..${LAST[GOOD]}"
expect_eq "no seq names two readings" 0 "$(seq_clashes "$T/pub.json")"
jq -c "select(.historical == true) | $WITH_MS" "$T/pub.json" >"$T/historical.json"
expect_eq "every row undelivered at the stop was replayed as historical, same ts" 0 \
  "$(jq -n --slurpfile u "$T/undelivered.json" --slurpfile h "$T/historical.json" '$u - $h | length')"
finish
