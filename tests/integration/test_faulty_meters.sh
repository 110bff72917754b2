#!/usr/bin/env bash
# Faulty meters on a shared RS-485 line with wire-time emulation: every
# healthy meter starts each poll within one bus timeout plus 100 ms of its
# slot, each faulted meter is classified by its fault (crc, exception,
# timeout), an offline meter is retried on its back-off rather than every
# slot, and recovery is detected once the faults clear. (The slow meter
# answers 1.5 s late, between two polls: an answer later still would meet
# the next request on the line and be taken for its answer, as on a real
# RS-485 line, where RTU frames carry no transaction id.)
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT < <(free_ports 1)
TIMEOUT_MS=300
cat >"$T/site.yaml" <<YAML
site: {id: faulty}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
sim: {control: ./sim.sock}
online: {offline_after: 3, backoff_max: 4s}
buses:
  - {id: line1, transport: rtu, device: ./ttySIM0, baud: 19200, timeout: ${TIMEOUT_MS}ms,
     sim_wire_time: true}
meters:
  - {id: H1, bus: line1, unit: 1, profile: mag-00h, interval: 1s}
  - {id: FCRC, bus: line1, unit: 2, profile: mag-00h, interval: 1s, sim: {fault: crc}}
  - {id: FEXC, bus: line1, unit: 3, profile: mag-00h, interval: 1s, sim: {fault: exception}}
  - {id: FSLOW, bus: line1, unit: 4, profile: mag-00h, interval: 1s,
     sim: {fault: slow, slow_delay: 1500ms}}
  - {id: FGARB, bus: line1, unit: 5, profile: mag-00h, interval: 1s, sim: {fault: garbage}}
  - {id: H2, bus: line1, unit: 6, profile: tuf2000m, interval: 1s}
YAML
DB="$T/readings.db"

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/faulty/#'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"

state_of() { messages sub state | jq -r -s --arg m "$1" 'map(select(.meter == $m)) | last | "\(.online) \(.last_error.kind)"'; }
all_off() {
  [ "$(state_of FCRC)" = "false crc" ] && [ "$(state_of FEXC)" = "false exception" ] &&
    [ "$(state_of FSLOW)" = "false timeout" ] && [ "$(state_of FGARB | cut -d' ' -f1)" = false ]
}
wait_until 30 "the four faulted meters offline" all_off
ok "a corrupted CRC is classified crc, an exception exception, a slow meter timeout"
garb=$(state_of FGARB | cut -d' ' -f2)
case "$garb" in
  crc|malformed|timeout) ok "noise on the line is a failed poll ($garb)" ;;
  *) not_ok "noise classified as $garb" ;;
esac
expect_eq "the exception code is in the detail" 1 \
  "$(messages sub state | jq -s 'map(select(.meter == "FEXC" and .online == false)) | last | .last_error.detail | test("0x04")' | grep -c true)"

# Twelve seconds in the offline state: the back-off (1, 2, 4, 4 s ...)
# allows at most five tries, against twelve slots.
before=$(sql "$DB" "SELECT coalesce(sum(timeout), 0) FROM poll_stats WHERE meter = 'FSLOW'")
t_end=$(( $(now_ms) + 12000 ))
later() { [ "$(now_ms)" -ge "$t_end" ]; }
wait_until 20 "twelve seconds" later
after=$(sql "$DB" "SELECT coalesce(sum(timeout), 0) FROM poll_stats WHERE meter = 'FSLOW'")
tries=$((after - before))
check "the slow meter was retried on its back-off ($tries tries in 12 s)" test "$tries" -le 5 -a "$tries" -ge 2

for m in FCRC FEXC FSLOW FGARB; do "$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" fault "$m" none >/dev/null; done
back() { for m in FCRC FEXC FSLOW FGARB; do [ "$(state_of "$m" | cut -d' ' -f1)" = true ] || return 1; done; }
wait_until 30 "every meter back online" back
ok "recovery is detected for every meter"
stop_pid "$collector_PID"

# The healthy meters kept their slots throughout (phases k x 100 ms).
messages sub reading >"$T/readings.json"
late=$(jq -s --argjson lim $((TIMEOUT_MS + 100)) '
  def ms: (.ts[0:19] + "Z" | fromdate) * 1000 + (.ts[20:23] | tonumber);
  def phase: if .meter == "H1" then 0 else 500 end;
  [.[] | select(.meter == "H1" or .meter == "H2")
       | ((((ms - phase) % 1000) + 1000) % 1000) as $m
       | (if $m > 700 then $m - 1000 else $m end) as $late
       | select($late > $lim or $late < 0) | {meter, ts, late_ms: $late}]' "$T/readings.json")
expect_eq "H1 and H2 start every poll within ${TIMEOUT_MS} ms + 100 ms of their slots" "[]" "$(jq -c . <<<"$late")"
n=$(jq -s '[.[] | select(.meter == "H2")] | length' "$T/readings.json")
check "H2 kept polling ($n readings)" test "$n" -ge 15
finish
