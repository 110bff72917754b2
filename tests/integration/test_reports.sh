#!/usr/bin/env bash
# Reports follow a fault schedule exactly: three meters polled every second
# with 10-second report windows; B never answers, C is switched offline for
# one whole window and back; the gateway itself is then stopped for two
# windows. Every closed window is published retained on report/10s, in
# order, those missed while the gateway was down included, with the counts,
# rates, repair list and volumes the schedule implies. The online-rate topic
# and `intake-collector report` agree.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
cat >"$T/site.yaml" <<YAML
site: {id: rep, name: "报告测试", timezone: Asia/Shanghai}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
sim: {control: ./sim.sock}
online: {offline_after: 3, backoff_max: 1s}
reports: {periods: [10s]}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 200ms}
meters:
  - {id: A, bus: plc, unit: 1, profile: mag-00h, interval: 1s, sim: {fixed: {flow_m3h: 3600}}}
  - {id: B, bus: plc, unit: 2, profile: mag-00h, interval: 1s, sim: {fault: offline}}
  - {id: C, bus: plc, unit: 3, profile: mag-00h, interval: 1s, sim: {fixed: {flow_m3h: 360}}}
YAML
DB="$T/readings.db"
ctl() { "$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" "$@" >/dev/null; }

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/rep/#'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"

# Ten-second windows are aligned to local midnight, and UTC+8 is a whole
# number of them, so a window starts at every multiple of 10 s.
next_window() { echo $(( ($(now_ms) / 10000 + 1) * 10000 )); }
until_ms() { local t=$1; at() { [ "$(now_ms)" -ge "$t" ]; }; wait_until 60 "time $t" at; }

# W1: a full window with A and C answering. C goes offline half a second into
# W2 (its 200 ms slot still answers), stays so through W3, and is back half a
# second into W4.
W1=$(( $(next_window) + 10000 ))
W2=$((W1 + 10000)); W3=$((W2 + 10000)); W4=$((W3 + 10000)); W5=$((W4 + 10000))
until_ms $((W2 + 500)); ctl fault C offline
until_ms $((W4 + 500)); ctl fault C none
until_ms $((W5 + 3000))

# The gateway goes down for two whole windows (W6, W7) and comes back in W8.
stop_pid "$collector_PID"
expect_eq "the daemon stops cleanly" 0 "$STOP_RC"
W6=$((W5 + 10000)); W8=$((W6 + 20000))
until_ms $((W8 + 200))
start collector2 "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector2.out" '^ready' 20 "$collector2_PID"
got_w7() {
  messages sub "report/10s" | jq -e -s --arg s "$(TZ=Asia/Shanghai date -d @$(( (W6 + 10000) / 1000 )) +%Y-%m-%dT%H:%M:%S+08:00)" \
    'map(select(.window.start == $s)) | length > 0' >/dev/null
}
wait_until 20 "the reports missed while down" got_w7
stop_pid "$collector2_PID"

messages sub "report/10s" >"$T/reports.json"
local_ts() { TZ=Asia/Shanghai date -d "@$(($1 / 1000))" +%Y-%m-%dT%H:%M:%S+08:00; }
report() { jq -c -s --arg s "$(local_ts "$1")" 'map(select(.window.start == $s)) | last' "$T/reports.json"; }
field() { jq -r "$2" <<<"$1"; }

for w in W1 W2 W3 W4 W5 W6 W7; do
  case $w in W7) t=$((W6 + 10000)) ;; *) t=${!w} ;; esac
  r=$(report "$t")
  if [ "$r" = null ]; then not_ok "$w: a report was published"; continue; fi
  case $w in
    W1|W2|W4|W5) want_on=2; want_repair='["B"]' ;;
    W3) want_on=1; want_repair='["B","C"]' ;;
    W6|W7) want_on=0; want_repair='["A","B","C"]' ;;
  esac
  expect_eq "$w: meters online" "$want_on" "$(field "$r" .meters_online)"
  expect_eq "$w: meters total" 3 "$(field "$r" .meters_total)"
  rate=$(jq -n "$want_on / 3 * 1000000 | round / 1000000")
  expect_eq "$w: online rate" "$rate" "$(field "$r" .online_rate)"
  expect_eq "$w: delta in percentage points" "$(jq -n "(($want_on / 3 - 0.9468) * 10000 | round) / 100")" "$(field "$r" .delta_pp)"
  expect_eq "$w: below the baseline" false "$(field "$r" .meets_baseline)"
  expect_eq "$w: repair list, longest outage first" "$want_repair" "$(field "$r" '[.repair[].id] | if length == 3 then sort else . end' | jq -c .)"
  expect_eq "$w: B is repaired for timeouts" timeout "$(field "$r" '.repair[] | select(.id == "B") | .last_error')"
  expect_eq "$w: B was never seen" null "$(field "$r" '.meters[] | select(.id == "B") | .last_seen')"
done

# Volumes, by the definition, from the stored rows: the totalizer at the last
# reading at or before the window's end minus the same at or before its
# start; and by the physics, the flow times the time between those readings
# (A at 3600 m3/h, C at 360 m3/h, C flowing on while it could not be read).
edge() { # meter t_ms -> "ts total" of the last reading at or before t
  sql "$DB" "SELECT ts_ms, json_extract(fields, '\$.total_m3') FROM readings
             WHERE meter = '$1' AND ts_ms <= $2 ORDER BY ts_ms DESC LIMIT 1" | tr '|' ' '
}
for w in W1 W2 W3 W4 W5; do
  r=$(report "${!w}")
  end=$(( ${!w} + 10000 ))
  for pair in "A 3600" "C 360"; do
    set -- $pair
    read -r t0 v0 < <(edge "$1" "${!w}")
    read -r t1 v1 < <(edge "$1" "$end")
    got=$(field "$r" ".meters[] | select(.id == \"$1\") | .volume_m3")
    if jq -e -n --argjson g "$got" --argjson a "$v0" --argjson b "$v1" \
         --argjson t0 "$t0" --argjson t1 "$t1" --argjson f "$2" '
         (($g - ($b - $a)) | fabs < 1e-5) and
         (($g - $f * ($t1 - $t0) / 3600000) | fabs < 0.01 * ([$g, 1] | max))' >/dev/null; then
      ok "$w: volume of $1 is $got m3, as stored and as the flow implies"
    else
      not_ok "$w: volume of $1 is $got m3; rows say $v0 at $t0 and $v1 at $t1, flow $2 m3/h"
    fi
  done
done
r=$(report "$W3")
expect_eq "W3: C is repaired for a timeout" timeout "$(field "$r" '.repair[] | select(.id == "C") | .last_error')"
expect_eq "W3: C has no readings" 0 "$(field "$r" '.meters[] | select(.id == "C") | .valid_readings')"
expect_eq "W3: A has all ten" 10 "$(field "$r" '.meters[] | select(.id == "A") | .valid_readings')"
expect_eq "W3: A's completeness" 1 "$(field "$r" '.meters[] | select(.id == "A") | .completeness')"
expect_eq "W3: C's outage spans the window, a timeout" \
  "$(local_ts "$W3") $(local_ts "$W4") timeout" \
  "$(field "$r" '.meters[] | select(.id == "C") | .outages[] | "\(.start) \(.end) \(.error)"')"
expect_eq "W3: A had no outage" 0 "$(field "$r" '.meters[] | select(.id == "A") | .outages | length')"
r=$(report "$W6")
expect_eq "W6: the gateway's downtime is A's outage" "gateway_down" \
  "$(field "$r" '.meters[] | select(.id == "A") | .outages[0].error')"
expect_eq "W6 (gateway down): fleet completeness 0" 0 "$(field "$r" .completeness)"
expect_eq "W6 (gateway down): fleet availability 0" 0 "$(field "$r" .availability)"

# Each window once, in order of their windows (the missed ones at start-up).
order=$(jq -s '[.[].window.start] as $s | ($s == ($s | sort)) and ($s == ($s | unique))' "$T/reports.json")
expect_eq "every window reported once, in order" true "$order"

# The offline CLI reproduces the published report.
from=$(local_ts "$W3"); to=$(local_ts "$W4")
"$IC_BIN/intake-collector" report --config "$T/site.yaml" --from "$from" --to "$to" \
  --period 10s --format json >"$T/cli.json"
cli=$(jq -c '.[0] | {meters_online, online_rate, repair: [.repair[].id], volume_m3}' "$T/cli.json")
pub=$(jq -c '{meters_online, online_rate, repair: [.repair[].id], volume_m3}' <<<"$(report "$W3")")
expect_eq "intake-collector report gives the published figures" "$pub" "$cli"
"$IC_BIN/intake-collector" report --config "$T/site.yaml" --from "$from" --to "$to" \
  --period 10s --format csv >"$T/cli.csv"
expect_eq "the CSV has a site row and a row per meter" 5 "$(wc -l <"$T/cli.csv")"
check "the CSV names the offline meter's failure" grep -q ',meter,C,C,false,.*,timeout$' "$T/cli.csv"

# The retained online-rate topic names B for repair.
rate_msg=$(messages sub online-rate | tail -n 1)
check "the online-rate topic lists B for repair" jq -e '[.repair[].id] | index("B") != null' <<<"$rate_msg"
expect_eq "the online-rate topic states the baseline" 0.9468 "$(jq -r .baseline <<<"$rate_msg")"
finish
