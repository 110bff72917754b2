#!/usr/bin/env bash
# The uplink to the bureau's monitoring centre (SZY206), against intake-sim
# meters with fixed values and the centre simulator (ic-centre):
#  - a login (AFN 02H F0) per station on connect, heartbeats (F2) when idle;
#  - at each 10 s slot, one C0H report a station, byte for byte the frame a
#    reference encoder written here (CRC-8 0xE5, BCD) makes of the slot's
#    local time and the meters' values: flow m3/s rounded to 3 decimals,
#    volume truncated, in the station's meter order;
#  - a meter taken offline is sent as AA AA AA AA AA with alarm D5;
#  - the centre silent for three slots, then back: every report arrives,
#    in slot order, is confirmed once and never sent after its confirm;
#  - the gateway killed (-9) while the centre refuses connections: the
#    reports stored meanwhile arrive after the restart, byte for byte, first;
#  - the counters in the gateway state topic, /status and /metrics.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT CENTRE_PORT METRICS_PORT < <(free_ports 4)
cat >"$T/site.yaml" <<YAML
site: {id: uptest, timezone: Asia/Shanghai}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
sim: {control: ./sim.sock}
metrics: {listen: "127.0.0.1:$METRICS_PORT"}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
  - {id: M1, bus: plc, unit: 1, profile: tuf2000m, interval: 1s,
     sim: {fixed: {flow_m3h: 1801.9, total_m3: 106182.9}}}
  - {id: M2, bus: plc, unit: 2, profile: tuf2000m, interval: 1s,
     sim: {fixed: {flow_m3h: 21240, total_m3: 8.25}}}
  - {id: M3, bus: plc, unit: 3, profile: tuf2000m, interval: 1s,
     sim: {fixed: {flow_m3h: 2102.4, total_m3: 0}}}
uplink:
  protocol: szy206
  host: localhost             # a name: looked up off the loop, each address tried
  port: $CENTRE_PORT
  report_interval: 10s
  heartbeat: 3s
  confirm_timeout: 1s
  delay_minutes: 10
  stations:
    - {admin: "530381", station: 13, meters: [M2, M1]}
    - {raw_address: "140431591B", meters: [M3]}
YAML
URL="http://127.0.0.1:$METRICS_PORT"

# The reference encoder (tests/integration/szy206_ref.py): the report frame
# of a slot (epoch seconds) for a station's (flow, volume) pairs, in the
# site's time zone with the 5-byte time label and a delay of 10 minutes.
expect_frame() {
  local addr=$1 slot=$2
  shift 2
  python3 "$IC_SOURCE_DIR/tests/integration/szy206_ref.py" "$addr" "$slot" Asia/Shanghai 5 10 "$@"
}
S1=5303810D00
S2=140431591B
# M2 then M1: 21240/3600 = 5.900; 1801.9/3600 = 0.50053 -> 0.501 (rounded);
# 106182.9 -> 106182 and 8.25 -> 8 (truncated). M3: 2102.4/3600 = 0.584.
S1_PAIRS=(5.900/8 0.501/106182)
S2_PAIRS=(0.584/0)

echo confirm >"$T/mode"
start centre "$IC_TEST_BIN/ic-centre" "$CENTRE_PORT" "$T/mode" --station "$S1" --station "$S2"
wait_for "$T/centre.out" '^ready' 10 "$centre_PID"
start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/uptest/gateway/state'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
wait_for "$T/collector.log" 'uplink: connected to localhost:' 20 "$collector_PID"

# frames FILTER: the centre's frame lines (jq -c) that FILTER selects.
frames() { grep '"event":"frame"' "$T/centre.out" | jq -c "select($1)"; }
reports() { frames '.frame.function == "report"'; }
nreports() { reports | wc -l; }

# (1) Login per station, then the first two slots' reports, exactly.
logins=$(frames '.frame.link == "login"' | jq -r '.frame.address' | sort | paste -sd' ')
expect_eq "a login (02H F0) for each station on connect" "$(printf '%s\n' $S1 $S2 | sort | paste -sd' ')" "$logins"
have_reports() { [ "$(nreports)" -ge "$1" ]; }
wait_until 40 "four reports (two slots)" have_reports 4
# check_slot_reports N: the N-th slot's two reports (1-based) are the
# reference frames of their slot: derived from the time label's place in
# the 10 s grid nearest to when they arrived (the slot plus 1.5 s).
check_report() {
  local line=$1 addr=$2 shift_pairs
  shift 2
  local hex ms slot want
  hex=$(jq -r .hex <<<"$line")
  ms=$(jq -r .ms <<<"$line")
  slot=$(( (ms - 1500) / 10000 * 10 ))
  want=$(expect_frame "$addr" "$slot" "$@")
  expect_eq "report of station $addr for slot $(TZ=Asia/Shanghai date -d @"$slot" +%T) ($*)" "$want" "$hex"
}
for i in 1 2 3 4; do
  line=$(reports | sed -n "${i}p")
  addr=$(jq -r .frame.address <<<"$line")
  if [ "$addr" = "$S1" ]; then check_report "$line" "$S1" "${S1_PAIRS[@]}"; else check_report "$line" "$S2" "${S2_PAIRS[@]}"; fi
done
check "every report so far confirmed" test "$(reports | jq -r .answer | sort -u)" = confirmed
check "heartbeats (02H F2) between the slots" test "$(frames '.frame.link == "heartbeat"' | wc -l)" -ge 2

# A reload that puts M3 first among the meters (every meter's index moves;
# the uplink section is the same): each station still reports its own
# meters' values.
python3 - "$T/site.yaml" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
m3 = s[s.index("  - {id: M3,"):s.index("uplink:")]
s = s.replace(m3, "").replace("meters:\n  - {id: M1,", "meters:\n" + m3 + "  - {id: M1,", 1)
open(p, "w").write(s)
PY
n=$(nreports)
kill -HUP "$collector_PID"
wait_for "$T/collector.log" 'reload: applied' 10 "$collector_PID"
wait_until 40 "two slots' reports after the reload" have_reports $((n + 4))
for line in "$(reports | sed -n "$((n + 3))p")" "$(reports | sed -n "$((n + 4))p")"; do
  addr=$(jq -r .frame.address <<<"$line")
  if [ "$addr" = "$S1" ]; then check_report "$line" "$S1" "${S1_PAIRS[@]}"; else check_report "$line" "$S2" "${S2_PAIRS[@]}"; fi
done

# (2) A meter offline: its pair is AA, and alarm D5 is set. A meter that
# reports a fault of its own (TUF-2000M error bits, its status field): its
# values, and alarm D5.
"$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" fault M3 offline >/dev/null
"$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" pin M1 error_bits 4 >/dev/null
s2_alarm() { [ "$(reports | jq -r "select(.frame.address == \"$S2\" and .frame.alarm == \"$1\") | .ms" | wc -l)" -ge 1 ]; }
wait_until 40 "a report of station $S2 with alarm D5" s2_alarm 0020
check_report "$(reports | jq -c "select(.frame.address == \"$S2\" and .frame.alarm == \"0020\")" | head -1)" "$S2" -/-
expect_eq "the offline meter's flow and volume are null (AA) when decoded" "null null" \
  "$(reports | jq -r "select(.frame.address == \"$S2\" and .frame.alarm == \"0020\") | .frame.meters[0] | [.flow_m3s, .volume_m3] | map(tostring) | join(\" \")" | head -1)"
s1_fault() { reports | jq -c "select(.frame.address == \"$S1\" and .frame.alarm == \"0020\")" | head -1; }
has_s1_fault() { [ -n "$(s1_fault)" ]; }
wait_until 30 "a report of station $S1 with alarm D5 for M1's error bits" has_s1_fault
check_report "$(s1_fault)" "$S1" "${S1_PAIRS[0]}" "${S1_PAIRS[1]}!"
"$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" unpin M1 error_bits >/dev/null
n_before=$(reports | jq -r "select(.frame.address == \"$S2\" and .frame.alarm == \"0000\") | .ms" | wc -l)
"$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" fault M3 none >/dev/null
s2_back() { [ "$(reports | jq -r "select(.frame.address == \"$S2\" and .frame.alarm == \"0000\") | .ms" | wc -l)" -gt "$n_before" ]; }
wait_until 30 "station $S2 reported without the alarm once M3 answers again" s2_back
check_report "$(reports | jq -c "select(.frame.address == \"$S2\" and .frame.alarm == \"0000\")" | tail -1)" "$S2" "${S2_PAIRS[@]}"

# (3) The centre's B0H query is answered at once with the current values.
mode() { echo "$1" >"$T/mode.tmp" && mv "$T/mode.tmp" "$T/mode"; wait_for "$T/centre.out" "\"mode\":\"$1\"" 10 "$centre_PID"; }
mode query
answered() { [ "$(frames '.frame.function == "query" and .frame.dir == "up"' | wc -l)" -ge 2 ]; }
wait_until 5 "both stations answer the query" answered
expect_eq "the answers carry the current values" \
  "$S2 0.584/0 0000|$S1 5.9/8 0.501/106182 0000" \
  "$(frames '.frame.function == "query" and .frame.dir == "up"' | jq -r '[.frame.address, (.frame.meters | map("\(.flow_m3s)/\(.volume_m3)") | join(" ")), .frame.alarm] | join(" ")' | sort | paste -sd'|')"
# Noise, a confirm with a bad CS and a bad header before each confirm: the
# good confirm behind them still counts, the bad one does not.
status() { curl -s -m 5 "$URL/status"; }
mode garbage
n_garbage=$(nreports)
garbage_slot() { [ "$(nreports)" -ge $((n_garbage + 2)) ] && [ "$(status | jq -r '.uplink.pending')" = 0 ]; }
wait_until 25 "a slot's reports confirmed through the noise" garbage_slot
centre_confirmed() { reports | jq -r 'select(.answer == "confirmed") | .hex' | wc -l; }
expect_eq "the gateway counts exactly the confirms the centre sent" \
  "$(centre_confirmed)" "$(status | jq -r '.uplink.confirmed')"
g_from=$(grep '"mode":"garbage"' "$T/centre.out" | jq -r .ms)
expect_eq "each report confirmed through the noise at its first try (no resend)" "B3" \
  "$(reports | jq -r --argjson t "$g_from" 'select(.ms > $t) | .frame.c' | sort -u | paste -sd' ')"
check "the gateway never lost its connection to the noise" \
  test "$(grep -c 'uplink: connection to' "$T/collector.log" || true)" = 0
mode confirm

# (4) The centre silent for three slots, then back.
pending() { status | jq -r '.uplink.pending'; }
confirmed_before=$(status | jq -r '.uplink.confirmed')
readings_before=$(status | jq -r '.counters.readings')
silent_from=$SECONDS
mode silent
three_slots() { [ "$(pending)" -ge 6 ]; }
wait_until 45 "three slots of reports pending while the centre is silent" three_slots
check "the centre saw resends with the FCB counting down (A3, 93, 83)" \
  test "$(reports | jq -r '.frame.c' | sort -u | paste -sd' ')" = "83 93 A3 B3"
readings_during=$(( $(status | jq -r '.counters.readings') - readings_before ))
silent_s=$((SECONDS - silent_from))
check "a silent centre delays no poll: $readings_during readings of 3 meters in ${silent_s}s" \
  test "$readings_during" -ge $(( 3 * (silent_s - 2) ))
mode confirm
drained() { [ "$(pending)" = 0 ]; }
wait_until 90 "every pending report confirmed once the centre is back" drained
# key: a report without its FCB and CS, so that its resends count as one.
keyed() { reports | jq -c '{key: (.hex[8:] | .[:-4]), slot: "\(.frame.tp.day) \(.frame.tp.time)", addr: .frame.address, answer, conn}'; }
keyed >"$T/keyed.jsonl"
expect_eq "every report was confirmed exactly once" "" \
  "$(jq -s -r 'group_by(.key) | map(select(map(select(.answer == "confirmed")) | length != 1)) | map(.[0].slot) | join(",")' "$T/keyed.jsonl")"
expect_eq "no report was sent again after its confirm" "" \
  "$(jq -s -r '[to_entries[] | .value + {i: .key}] | group_by(.key) | map(select((map(select(.answer == "confirmed")) | .[0].i) < (map(.i) | max))) | map(.[0].slot) | join(",")' "$T/keyed.jsonl")"
expect_eq "confirmed in slot order, station 1 before station 2 in each slot" "" \
  "$(jq -s -r --arg s1 "$S1" '[.[] | select(.answer == "confirmed") | .rank = (if .addr == $s1 then 0 else 1 end)] as $c | [range(1; $c | length) | select([$c[. - 1].slot, $c[. - 1].rank] > [$c[.].slot, $c[.].rank])] | map($c[.].slot) | join(",")' "$T/keyed.jsonl")"
confirmed_after=$(status | jq -r '.uplink.confirmed')
check "at least six reports confirmed after the silence ($confirmed_before -> $confirmed_after)" \
  test "$confirmed_after" -ge $((confirmed_before + 6))
expect_eq "no slot is missing: two reports a slot, slots 10 s apart" "" \
  "$(jq -s -r '[.[] | select(.answer == "confirmed")] | group_by(.slot) | map(select(length != 2)) | map(.[0].slot) | join(",")' "$T/keyed.jsonl")"
slots=$(jq -s -r '[.[] | select(.answer == "confirmed") | .slot] | unique | .[]' "$T/keyed.jsonl")
gaps=$(python3 -c '
import sys
ts = [int(d) * 86400 + int(h) * 3600 + int(m) * 60 + int(s) for d, t in (l.split() for l in sys.stdin if l.strip()) for h, m, s in [t.split(":")]]
print(",".join(str(b - a) for a, b in zip(ts, ts[1:]) if b - a != 10))' <<<"$slots")
expect_eq "the confirmed slots are 10 s apart without a gap" "" "$gaps"

# (5) Killed (-9) with reports stored and unconfirmed: delivered after the restart.
mode refuse
DB="$T/readings.db"
stored() { [ "$(sql "$DB" 'SELECT count(*) FROM uplink_reports')" -ge 4 ]; }
wait_until 40 "four reports stored while the centre refuses connections" stored
sql "$DB" 'SELECT hex(frame) FROM uplink_reports ORDER BY id' >"$T/kept.txt"
kill -KILL "$collector_PID"
reap "$collector_PID"
expect_eq "the gateway was killed" 137 "$REAP_RC"
kept=$(wc -l <"$T/kept.txt")
# And a row that is no frame, first in line (a damaged database): it is
# removed and said, and does not stop the queue behind it.
sql "$DB" "INSERT INTO uplink_reports (id, slot_ms, frame) VALUES (0, 0, X'6803')"
mode confirm
lines_before=$(grep -c '"event":"frame"' "$T/centre.out")
start collector2 "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector2.out" '^ready' 20 "$collector2_PID"
wait_for "$T/collector2.log" "uplink: [0-9]+ reports kept from before are sent first" 10 "$collector2_PID"
check "the damaged row is said and removed" grep -q "uplink: kept report 0 is not a frame; removed" "$T/collector2.log"
after() { grep '"event":"frame"' "$T/centre.out" | tail -n +$((lines_before + 1)) | jq -c 'select(.frame.function == "report")'; }
all_kept() { [ "$(after | jq -r 'select(.answer == "confirmed") | .hex' | head -n "$kept" | wc -l)" -ge "$kept" ]; }
wait_until 30 "the $kept kept reports confirmed after the restart" all_kept
expect_eq "the kept reports arrive first, oldest first, byte for byte with their time labels" \
  "$(cat "$T/kept.txt")" "$(after | jq -r 'select(.answer == "confirmed") | .hex' | head -n "$kept")"
wait_until 30 "nothing left in uplink_reports" bash -c "[ \"\$(sqlite3 '$DB' 'SELECT count(*) FROM uplink_reports')\" = 0 ]"

# (6) The counters: /status, /metrics and the gateway state topic.
st=$(status)
expect_eq "/status: connected, nothing pending, confirms counted, the last one's time" \
  "true 0 true true" \
  "$(jq -r '.uplink | [.connected, .pending, (.confirmed > 0), (.last_confirm | test("^20..-..-..T"))] | map(tostring) | join(" ")' <<<"$st")"
curl -s -m 5 "$URL/metrics" >"$T/metrics.txt"
for f in intake_uplink_connected intake_uplink_reports_pending intake_uplink_reports_sent_total \
  intake_uplink_reports_confirmed_total intake_uplink_reports_dropped_total \
  intake_uplink_last_confirm_time_seconds; do
  check "/metrics has $f" grep -q "^$f{site=\"uptest\"} " "$T/metrics.txt"
done
if command -v promtool >/dev/null; then
  check "promtool check metrics accepts the text with the uplink's families" \
    bash -c "promtool check metrics <'$T/metrics.txt' >'$T/promtool.out' 2>&1"
fi
expect_eq "/metrics: connected" 1 "$(awk '$1 == "intake_uplink_connected{site=\"uptest\"}" {print $2}' "$T/metrics.txt")"
states() { messages sub state | jq -e -s "map(select($1)) | length > 0" >/dev/null; }
check "the gateway state topic carries the uplink's counters" \
  states '.uplink.connected == true and .uplink.confirmed > 0 and .uplink.sent >= .uplink.confirmed'
check "the gateway state topic said when the centre was away, with reports pending" \
  states '.uplink.connected == false and .uplink.pending > 0 and .uplink.resent > 0'
stop_pid "$collector2_PID"
expect_eq "the gateway stops cleanly" 0 "$STOP_RC"
finish
