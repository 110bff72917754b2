#!/usr/bin/env bash
# A meter switched offline in intake-sim turns online:false on its state topic
# by its third failed poll (not before), while the other meters on the same
# RS-485 line (with wire-time emulation) keep starting their polls within one
# bus timeout plus 100 ms of their slots; it turns online again when the fault
# clears.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT < <(free_ports 1)
TIMEOUT_MS=300
cat >"$T/site.yaml" <<YAML
site: {id: offtest}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
sim: {control: ./sim.sock}
online: {offline_after: 3, backoff_max: 4s}
buses:
  - {id: line1, transport: rtu, device: ./ttySIM0, baud: 9600, timeout: ${TIMEOUT_MS}ms, sim_wire_time: true}
meters:
  - {id: M1, bus: line1, unit: 1, profile: mag-00h, interval: 1s, sim: {fixed: {flow_m3h: 10}}}
  - {id: M2, bus: line1, unit: 2, profile: mag-00h, interval: 1s, sim: {fixed: {flow_m3h: 20}}}
  - {id: M3, bus: line1, unit: 3, profile: tuf2000m, interval: 1s, sim: {fixed: {flow_m3h: 30}}}
YAML

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/#'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"

count() { messages sub reading | jq -s --arg m "$1" '[.[] | select(.meter == $m)] | length'; }
has_readings() { [ "$(count M2)" -ge 3 ]; }
wait_until 20 "three readings from M2" has_readings

"$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" fault M2 offline >/dev/null
state_is() {
  messages sub state | jq -e -s --arg m "$1" --argjson on "$2" \
    'map(select(.meter == $m)) | length > 0 and (last | .online == $on)' >/dev/null
}
wait_until 15 "M2's state topic says offline" state_is M2 false
offline_msg=$(messages sub state | jq -c -s 'map(select(.meter == "M2" and .online == false)) | first')
expect_eq "the offline state names the failure kind" timeout "$(jq -r '.last_error.kind' <<<"$offline_msg")"

# Let it stay dead for a while (it is retried on a back-off), then revive it.
sleep_until_ms=$(($(now_ms) + 5000))
keep_waiting() { [ "$(now_ms)" -ge "$sleep_until_ms" ]; }
wait_until 10 "five seconds of outage" keep_waiting
"$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" fault M2 none >/dev/null
wait_until 20 "M2's state topic says online again" state_is M2 true

stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
messages sub reading >"$T/readings.json"
JQ_MS='def ms: (.ts[0:19] + "Z" | fromdate) * 1000 + (.ts[20:23] | tonumber);'

# Offline by the third failed poll: its last good reading was at slot s; the
# polls of s+1 s, s+2 s and s+3 s failed, the third one after its timeout
# (so not at the slot of the third poll, before it could answer).
since=$(jq -r "$JQ_MS"'{ts: .since} | ms' <<<"$offline_msg")
last_ok=$(jq -s --argjson since "$since" "$JQ_MS"'
  [.[] | select(.meter == "M2") | ms | select(. < $since)] | max' "$T/readings.json")
gap=$((since - last_ok))
lo=$((3000 + TIMEOUT_MS - 50))
hi=$((3000 + TIMEOUT_MS + 400))
if [ "$gap" -ge "$lo" ] && [ "$gap" -le "$hi" ]; then
  ok "offline at the third failed poll: ${gap} ms after the last good reading (window $lo..$hi)"
else
  not_ok "offline ${gap} ms after the last good reading; the third failed poll ends in $lo..$hi"
fi
fails=$(sql "$T/readings.db" "SELECT sum(timeout) FROM poll_stats WHERE meter = 'M2'")
check "the failed polls are counted as timeouts ($fails)" test "$fails" -ge 3

# The other meters on the line kept their schedule: each poll started within
# one bus timeout plus 100 ms of its slot. Slots: every second, plus the
# meter's spread on the bus (k * 100 ms for the k-th meter, see the docs).
late=$(jq -s --argjson lim $((TIMEOUT_MS + 100)) "$JQ_MS"'
  def phase: if .meter == "M1" then 0 elif .meter == "M2" then 100 else 200 end;
  [.[] | select(.meter != "M2") | ((((ms - phase) % 1000) + 1000) % 1000) as $m
       | (if $m > 500 then $m - 1000 else $m end) as $late
       | select($late > $lim or $late < 0) | {meter, ts, late_ms: $late}]' "$T/readings.json")
expect_eq "M1 and M3 start every poll within ${TIMEOUT_MS} ms + 100 ms of their slots" "[]" "$(jq -c . <<<"$late")"
gaps=$(jq -s '[group_by(.meter)[] | select(.[0].meter != "M2") | sort_by(.seq)
               | . as $r | range(1; length) | select($r[.].seq != $r[. - 1].seq + 1)] | length' "$T/readings.json")
expect_eq "M1 and M3 lost no sequence number" 0 "$gaps"
n1=$(count M1)
check "M1 kept polling through the outage ($n1 readings)" test "$n1" -ge 8

check "the log says M2 went offline with the reason" grep -q "meter M2 offline after 3 failed polls: timeout" "$T/collector.log"
check "the log says M2 came back" grep -q "meter M2 online" "$T/collector.log"
expect_eq "state changes are stored: online, offline, online" "1 0 1" \
  "$(sql "$T/readings.db" "SELECT group_concat(online, ' ') FROM (SELECT online FROM state_changes WHERE meter = 'M2' ORDER BY id)")"
finish
