#!/usr/bin/env bash
# The daemon polls every meter of a site over all three transports on its
# interval, stores each reading and publishes it to a real broker; what a
# consumer sees matches intake-sim's pinned values and the database rows, all
# delivered; SIGTERM ends it with exit 0 within the longest bus timeout plus
# one second, with every reading taken committed.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT ROT_PORT < <(free_ports 3)
cat >"$T/site.yaml" <<YAML
site: {id: polltest, name: "轮询测试"}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT", client_id: polltest-gw}
storage: {path: ./readings.db}
sim: {control: ./sim.sock}
buses:
  - {id: line1, transport: rtu, device: ./ttySIM0, baud: 19200, timeout: 500ms, sim_wire_time: true}
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 1s}
  - {id: dtu, transport: rtu-over-tcp, host: 127.0.0.1, port: $ROT_PORT, timeout: 2s}
meters:
  - {id: R-TUF, bus: line1, unit: 1, profile: tuf2000m, interval: 1s,
     sim: {fixed: {flow_m3h: 36.625, total_m3: 1234.5, net_total_m3: 1000.25}}}
  - {id: R-MAG, bus: line1, unit: 2, profile: mag-00h, interval: 2s,
     sim: {fixed: {flow_m3h: 250, total_m3: 98765.25, velocity_ms: 0.75}}}
  - {id: T-MAG, bus: plc, unit: 1, profile: mag-00h, interval: 1s,
     sim: {fixed: {flow_m3h: 80.5, total_m3: 4321, velocity_ms: 0.5}}}
  - {id: T-OC, bus: plc, unit: 2, profile: open-channel, interval: 1s,
     sim: {fixed: {flow_m3h: 720, level_m: 1.25, velocity_ms: 1.5, total_m3: 123456789}}}
  - {id: D-TUF, bus: dtu, unit: 5, profile: tuf2000m, interval: 1s,
     sim: {fixed: {flow_m3h: 12.5, total_m3: 7.75, net_total_m3: 7.75, velocity_ms: 0.25}}}
  - {id: D-OC, bus: dtu, unit: 6, profile: open-channel, interval: 2s,
     sim: {fixed: {flow_m3h: 3600, level_m: 2, velocity_ms: 1, total_m3: 200000001}}}
YAML

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/#'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
# No report push is configured: libcurl (and the TLS, Kerberos and LDAP
# libraries it brings) stays out of the gateway's memory.
check "the database commits durably (synchronous FULL, read back from the connection)" \
  grep -q "storage: WAL, synchronous FULL" "$T/collector.log"
check "without a push, libcurl is not mapped" bash -c "! grep -q libcurl /proc/$collector_PID/maps"

# At least four readings from every meter (two-second meters take longest).
enough() {
  [ "$(messages sub reading | jq -s 'group_by(.meter) | map(length >= 4) | length == 6 and all')" = true ]
}
wait_until 30 "four readings from each of the six meters" enough
messages sub reading >"$T/readings.json"

# Every value is the one intake-sim was told to hold.
expect_value() {
  local meter=$1 field=$2 want=$3
  local bad
  bad=$(jq -s --arg m "$meter" --arg f "$field" --argjson w "$want" \
    '[.[] | select(.meter == $m) | .[$f] | select(. != $w)] | length' "$T/readings.json")
  expect_eq "$meter $field is $want in every message" 0 "$bad"
}
expect_value R-TUF flow_m3h 36.625
expect_value R-TUF total_m3 1234.5
expect_value R-TUF net_total_m3 1000.25
expect_value R-MAG flow_m3h 250
expect_value R-MAG total_m3 98765.25
expect_value R-MAG velocity_ms 0.75
expect_value T-MAG flow_m3h 80.5
expect_value T-MAG total_m3 4321
expect_value T-OC flow_m3h 720
expect_value T-OC flow_m3s 0.2
expect_value T-OC level_m 1.25
expect_value T-OC total_m3 123456789
expect_value D-TUF flow_m3h 12.5
expect_value D-TUF total_m3 7.75
expect_value D-OC flow_m3h 3600
expect_value D-OC total_m3 200000001
expect_eq "every reading is good" 0 "$(jq -s '[.[] | select(.quality != "good")] | length' "$T/readings.json")"
# (A reading taken before the broker connection was up is sent as historical;
# that is covered by the outage test.)

# On its interval: consecutive readings of a meter one interval apart (within
# the slack of a bus timeout), each taken within a few hundred ms after its
# wall-clock slot, and sequence numbers without gaps.
# ts "2026-11-28T16:59:12.002Z" as epoch milliseconds.
JQ_DEFS='def ms: (.ts[0:19] + "Z" | fromdate) * 1000 + (.ts[20:23] | tonumber);
         def iv: if .meter == "R-MAG" or .meter == "D-OC" then 2000 else 1000 end;'
intervals=$(jq -s "$JQ_DEFS"'
  map(. + {ms: ms, iv: iv}) | group_by(.meter) | map(sort_by(.seq)) | map(
    . as $r | [range(1; length)] | map(
      ($r[.].ms - $r[. - 1].ms) as $d
      | select($r[.].seq != $r[. - 1].seq + 1 or $d < $r[.].iv - 300 or $d > $r[.].iv + 300)
      | {meter: $r[.].meter, seq: $r[.].seq, gap_ms: $d})) | flatten' "$T/readings.json")
expect_eq "readings arrive once per interval, seq without gaps" "[]" "$(jq -c . <<<"$intervals")"
# Slots are wall-clock aligned: a reading starts at most a few hundred ms
# after a multiple of its interval (the bus spread plus queueing).
late=$(jq -s "$JQ_DEFS"'[.[] | (ms % iv) as $m | select($m > 600) | {meter, ts, ms_after_slot: $m}]' "$T/readings.json")
expect_eq "readings are aligned to the wall-clock slots" "[]" "$(jq -c . <<<"$late")"

# The retained state topics say every meter is online.
states=$(messages sub state | jq -s 'map(select(.meter != "gateway")) | group_by(.meter) | map(last | .online) | all')
expect_eq "every meter's state topic says online" true "$states"
check "the gateway state is published and online" \
  grep -q '^water/polltest/gateway/state {"online":true' "$T/sub.out"

# Silence the meters (their polls now run into timeouts) so the outbox can
# drain, then compare the database with
# what the consumer received.
for m in R-TUF R-MAG T-MAG T-OC D-TUF D-OC; do
  "$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" fault "$m" offline >/dev/null
done
DB="$T/readings.db"
drained() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" = 0 ]; }
wait_until 20 "every stored reading delivered" drained
settled() {
  [ "$(messages sub reading | jq -s 'length')" = "$(sql "$DB" 'SELECT count(*) FROM readings')" ]
}
wait_until 20 "the subscriber has every stored reading" settled
sql "$DB" "SELECT json_object('meter', meter, 'seq', seq, 'ts', ts_ms, 'fields', json(fields), 'quality', quality, 'delivered', delivered) FROM readings" >"$T/rows.json"
messages sub reading >"$T/readings.json"
diff_out=$(jq -n --slurpfile rows "$T/rows.json" --slurpfile msgs "$T/readings.json" '
  ($rows | map({meter, seq, quality} + .fields) | sort_by(.meter, .seq)) as $a
  | ($msgs | map(del(.ts, .historical)) | unique_by(.meter, .seq) | sort_by(.meter, .seq)) as $b
  | if $a == $b then "same" else {rows: ($a - $b), msgs: ($b - $a)} end')
expect_eq "the readings table holds exactly what the broker delivered" '"same"' "$diff_out"
ts_ok=$(jq -n --slurpfile rows "$T/rows.json" --slurpfile msgs "$T/readings.json" "$JQ_DEFS"'
  ($rows | map({key: "\(.meter)/\(.seq)", value: .ts}) | from_entries) as $t
  | $msgs | all(ms == $t["\(.meter)/\(.seq)"])')
expect_eq "each message's ts is its row's ts_ms, in RFC 3339 with milliseconds" true "$ts_ok"
expect_eq "every row is delivered" 0 "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered != 1')"

# Stop with SIGTERM while polls wait out their timeouts: exit 0 within the longest bus
# timeout (2 s) plus one second, every reading taken committed.
stop_pid "$collector_PID"
expect_eq "the daemon exits 0 on SIGTERM" 0 "$STOP_RC"
if [ "$STOP_MS" -le 3000 ]; then ok "it stopped in $STOP_MS ms (limit 3000)"; else not_ok "it took $STOP_MS ms to stop (limit 3000)"; fi
line=$(grep -E 'stopped after [0-9]+ polls' "$T/collector.log" || true)
taken=$(sed -E 's/.* ([0-9]+) readings taken.*/\1/' <<<"$line")
committed=$(sed -E 's/.*taken, ([0-9]+) committed.*/\1/' <<<"$line")
check "the daemon reports what it took and committed" test -n "$line"
expect_eq "every reading taken was committed" "$taken" "$committed"
expect_eq "the database holds every reading taken" "$taken" "$(sql "$DB" 'SELECT count(*) FROM readings')"
expect_eq "gateway run recorded with its stop time" 1 "$(sql "$DB" 'SELECT count(*) FROM gateway_runs WHERE stop_ms IS NOT NULL')"
finish
