#!/usr/bin/env bash
# The metrics endpoint (metrics.listen): /metrics in the Prometheus text
# format, which promtool accepts and a real Prometheus server scrapes; its
# counters move with the polls and a meter that stops answering shows as
# offline; /status is the gateway state; and abuse (10,000 connections
# trickling heads that never end, a huge request line, garbage) neither
# stops it answering nor delays the polling.
source "$(dirname "$0")/lib.sh"

for tool in curl promtool prometheus; do
  command -v "$tool" >/dev/null || { echo "not ok - $tool is not installed (scripts/deps.sh)"; exit 1; }
done

read -r MQTT_PORT TCP_PORT METRICS_PORT PROM_PORT < <(free_ports 4)
cat >"$T/site.yaml" <<YAML
site: {id: mtest}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
sim: {control: ./sim.sock}
metrics: {listen: "127.0.0.1:$METRICS_PORT"}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
  - {id: M-1, bus: plc, unit: 1, profile: mag-00h, interval: 1s}
  - {id: M-2, bus: plc, unit: 2, profile: tuf2000m, interval: 1s}
YAML
URL="http://127.0.0.1:$METRICS_PORT"

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/#'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
check "the collector says where the metrics are" \
  grep -q "metrics: listening on $URL/metrics" "$T/collector.log"

# scrape FILE: GET /metrics into FILE; fails unless 200.
scrape() { [ "$(curl -s -m 5 -o "$1" -w '%{http_code}' "$URL/metrics")" = 200 ]; }
# value FILE SERIES: the value of one series (name and labels as written).
value() { awk -v s="$2" '$1 == s {print $2}' "$1"; }
polls_of() { value "$1" "intake_polls_total{site=\"mtest\",meter=\"$2\"}"; }

two_online() { scrape "$T/m0.txt" && [ "$(value "$T/m0.txt" 'intake_site_online_ratio{site="mtest"}')" = 1 ]; }
wait_until 20 "both meters online in the metrics" two_online

# (a) The families, the text format, counters that move.
check "/metrics answers 200" scrape "$T/m1.txt"
ctype=$(curl -s -m 5 -o /dev/null -w '%{content_type}' "$URL/metrics")
expect_eq "the content type is the text format 0.0.4" "text/plain; version=0.0.4; charset=utf-8" "$ctype"
for f in intake_polls_total intake_poll_failures_total intake_readings_stored_total \
  intake_readings_published_total intake_readings_delivered_total intake_readings_refused_total \
  intake_readings_historical_total intake_outbox_readings intake_replay_active \
  intake_meter_online intake_site_online_ratio intake_storage_bytes intake_storage_errors_total \
  intake_broker_connected intake_process_start_time_seconds intake_poll_duration_seconds \
  intake_storage_rows_removed_total intake_readings_dropped_total intake_bus_line_load_ratio \
  intake_config_reloads_total intake_config_applied_timestamp_seconds; do
  check "family $f has HELP and TYPE" bash -c \
    "grep -q '^# HELP $f ' '$T/m1.txt' && grep -q '^# TYPE $f ' '$T/m1.txt'"
done
check "promtool check metrics accepts the text" bash -c "promtool check metrics <'$T/m1.txt' >'$T/promtool.out' 2>&1"
cat "$T/promtool.out"
expect_eq "the broker is connected" 1 "$(value "$T/m1.txt" 'intake_broker_connected{site="mtest"}')"
expect_eq "a failure kind is a label" 1 \
  "$(grep -c '^intake_poll_failures_total{site="mtest",meter="M-1",kind="timeout"} ' "$T/m1.txt")"
check "the poll-duration histogram has its +Inf bucket for the bus" \
  grep -q '^intake_poll_duration_seconds_bucket{site="mtest",bus="plc",le="+Inf"} [1-9]' "$T/m1.txt"
start_s=$(value "$T/m1.txt" 'intake_process_start_time_seconds{site="mtest"}')
check "the start time is within the last minute" test "$(( $(date +%s) - start_s ))" -lt 60
p1=$(polls_of "$T/m1.txt" M-1)
s1=$(value "$T/m1.txt" 'intake_readings_stored_total{site="mtest"}')
moved() {
  scrape "$T/m2.txt" && [ "$(polls_of "$T/m2.txt" M-1)" -gt "$p1" ] &&
    [ "$(value "$T/m2.txt" 'intake_readings_stored_total{site="mtest"}')" -gt "$s1" ]
}
wait_until 20 "the counters move" moved || true
p2=$(polls_of "$T/m2.txt" M-1)
check "M-1's poll counter increases between two scrapes ($p1 -> $p2)" test "$p2" -gt "$p1"
s2=$(value "$T/m2.txt" 'intake_readings_stored_total{site="mtest"}')
check "the stored readings increase ($s1 -> $s2)" test "$s2" -gt "$s1"
d2=$(value "$T/m2.txt" 'intake_readings_delivered_total{site="mtest"}')
check "readings are delivered ($d2)" test "$d2" -gt 0

status=$(curl -s -m 5 "$URL/status")
expect_eq "/status is the gateway state" "true 2 mtest" \
  "$(jq -r '"\(.online) \(.meters_total) mtest"' <<<"$status")"
check "/status carries the counters" jq -e '.counters.polls > 0' <<<"$status"
expect_eq "an unknown path is 404" 404 "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$URL/nope")"
expect_eq "POST is 405" 405 "$(curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST "$URL/metrics")"

"$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" fault M-2 offline >/dev/null
m2_offline() {
  scrape "$T/m3.txt" && [ "$(value "$T/m3.txt" 'intake_meter_online{site="mtest",meter="M-2"}')" = 0 ]
}
check "M-2 shows offline after it stops answering" wait_until 20 "M-2 offline" m2_offline
expect_eq "M-1 stays online" 1 "$(value "$T/m3.txt" 'intake_meter_online{site="mtest",meter="M-1"}')"
expect_eq "the online ratio is a half" 0.5 "$(value "$T/m3.txt" 'intake_site_online_ratio{site="mtest"}')"
f3=$(value "$T/m3.txt" 'intake_poll_failures_total{site="mtest",meter="M-2",kind="timeout"}')
check "M-2's timeouts are counted ($f3)" test "$f3" -ge 3

# (b) A real Prometheus server scrapes it every second.
cat >"$T/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: intake
    static_configs: [{targets: ["127.0.0.1:$METRICS_PORT"]}]
YAML
start prometheus prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT"
PROM="http://127.0.0.1:$PROM_PORT"
query() { curl -s -m 5 --get --data-urlencode "query=$1" "$PROM/api/v1/query" | jq -r '.data.result[0].value[1] // empty' 2>/dev/null; }
up_one() { [ "$(query 'up{job="intake"}')" = 1 ]; }
check "Prometheus scrapes the gateway: up is 1" wait_until 60 "up == 1" up_one
q1=$(query 'intake_polls_total{meter="M-1"}')
more_polls() { local q; q=$(query 'intake_polls_total{meter="M-1"}'); [ -n "$q" ] && [ -n "$q1" ] && [ "$q" -gt "$q1" ]; }
check "Prometheus sees the polls counter increase (from $q1)" wait_until 20 "polls increase" more_polls
# M-2 was switched offline in intake-sim above: Prometheus holds it at 0.
expect_eq "Prometheus: M-2 is offline (intake_meter_online 0)" 0 \
  "$(query 'intake_meter_online{meter="M-2"}')"
expect_eq "Prometheus: M-1 is online (intake_meter_online 1)" 1 \
  "$(query 'intake_meter_online{meter="M-1"}')"
expect_eq "Prometheus: the site's online ratio is a half" 0.5 \
  "$(query 'intake_site_online_ratio')"
stop_pid "$prometheus_PID"

# (c) Abuse, while M-1 is polled every second on a 300 ms bus timeout. Its
# lateness (a reading's time past its slot: its ms within the second, less
# the meter's phase) is measured before and during the abuse.
ts_ms() { jq -r --arg m M-1 'select(.meter == $m) | .ts' |
  while read -r t; do echo $(( $(date -u -d "$t" +%s%3N) )); done; }
# late_p99 FROM_MS TO_MS: p99 of M-1's ms-within-the-second over readings in
# [FROM, TO), and how many there are.
late_p99() {
  messages sub reading | ts_ms | awk -v f="$1" -v t="$2" '$1 >= f && $1 < t {print $1 % 1000}' |
    sort -n | awk '{v[NR] = $1} END {if (NR == 0) {print "none 0"; exit}
                   i = int(NR * 0.99); if (i < 1) i = 1; print v[i], NR}'
}
m1_count() { messages sub reading | jq -s '[.[] | select(.meter == "M-1")] | length'; }
b0=$(now_ms)
c0=$(m1_count)
# sockets: the collector's sockets now. Under a flood they come and go
# while find reads the folder: one gone between its listing and its link
# is not counted, and is no error.
sockets() { { find "/proc/$collector_PID/fd" -lname 'socket:*' 2>/dev/null || true; } | wc -l; }
socks0=$(sockets)
five_more() { [ "$(m1_count)" -ge $((c0 + 6)) ]; }
wait_until 20 "six readings of M-1 before the abuse" five_more
b1=$(now_ms)
read -r before_p99 before_n < <(late_p99 "$b0" "$b1")

# 10,000 connections at once, each trickling a request head that never
# ends (slowloris): the gateway holds 64 of them at most.
start flood python3 "$IC_SOURCE_DIR/tests/tools/httpflood.py" "$METRICS_PORT" 10000 --slow
wait_for "$T/flood.out" '^settled ' 180 "$flood_PID"
read -r _ held closed failed < <(grep '^settled ' "$T/flood.out")
echo "# the flood settled: $held connected, $closed closed by the gateway, $failed never connected"
socks=$(sockets)
# 64 slots, up to 64 newcomers on probation for 50 ms (while the flood's
# last connections are still being accepted), and a few more a moment: a
# connection closed for room lets go of its socket on the loop's next turn.
check "the gateway holds at most 64 of them and 64 on probation, not thousands (it has $socks sockets, $socks0 before)" \
  test "$socks" -le $((socks0 + 64 + 64 + 8))
# scrapes N FILE: N scrapes in a row; prints how many were answered 200 and
# the slowest time, and says how any other ended (curl's exit code).
scrapes() {
  local n=0 slowest=0 t rc
  for _ in $(seq "$1"); do
    rc=0
    t=$(curl -s -m 5 -o "$2" -w '%{http_code} %{time_total}' "$URL/metrics") || rc=$?
    if [ "${t%% *}" = 200 ]; then n=$((n + 1)); else echo "# a scrape ended with HTTP ${t%% *}, curl exit $rc" >&2; fi
    slowest=$(awk -v a="$slowest" -v b="${t##* }" 'BEGIN {print (b > a) ? b : a}')
  done
  echo "$n $slowest"
}
a0=$(now_ms)
c1=$(m1_count)
read -r answered slowest < <(scrapes 5 "$T/m4.txt")
echo "# the slowest of 5 scrapes under the flood took $slowest s"
expect_eq "under the flood, 5 scrapes in a row are answered (each within 5 s)" 5 "$answered"
flood_more() { [ "$(m1_count)" -ge $((c1 + 6)) ]; }
check "M-1 is polled on during the flood" wait_until 30 "six readings of M-1 in the flood" flood_more
a1=$(now_ms)
read -r during_p99 during_n < <(late_p99 "$a0" "$a1")
kill -TERM "$flood_PID"
reap "$flood_PID"
echo "# lateness p99: before ${before_p99} ms ($before_n readings), during ${during_p99} ms ($during_n readings)"
check "poll lateness p99 under the flood stays within the bus timeout of before ($before_p99 -> $during_p99 ms)" \
  test "$during_p99" -le $((before_p99 + 300))
dur_s=$(( (a1 - a0) / 1000 ))
check "no slot of M-1 was missed during the flood ($during_n readings in ${dur_s} s)" \
  test "$during_n" -ge $((dur_s - 1))

# A steady stream of new connections (2,000 a second, each trickling a head
# that never ends): every slot is always held by a client within its grace,
# and a scraper's connection is accepted the instant it is made, a moment
# before its request comes. It is answered all the same (on probation).
start stream python3 "$IC_SOURCE_DIR/tests/tools/httpflood.py" "$METRICS_PORT" 60000 --slow --rate 2000
wait_for "$T/stream.out" '^streaming' 60 "$stream_PID"
read -r answered slowest < <(scrapes 20 "$T/m6.txt")
echo "# the slowest of 20 scrapes under the stream took $slowest s"
expect_eq "under a stream of new connections, 20 scrapes in a row are answered (each within 5 s)" 20 "$answered"
socks=$(sockets)
check "under the stream the gateway holds at most 64 + 64 on probation ($socks sockets, $socks0 before)" \
  test "$socks" -le $((socks0 + 64 + 64 + 8))
kill -TERM "$stream_PID"
reap "$stream_PID"

# A 1 MB request line.
exec {big}<>"/dev/tcp/127.0.0.1/$METRICS_PORT"
( { printf 'GET /'; head -c 1048576 /dev/zero | tr '\0' a; printf ' HTTP/1.1\r\n\r\n'; } >&"$big" ) 2>/dev/null &
writer=$!
line=$(timeout 5 head -n 1 <&"$big" | tr -d '\r' || true)
wait "$writer" 2>/dev/null || true
exec {big}>&-
expect_eq "a 1 MB request line is answered 431" "HTTP/1.1 431 Request Header Fields Too Large" "$line"
# Garbage: random bytes, then garbage ending a head.
exec {g}<>"/dev/tcp/127.0.0.1/$METRICS_PORT"
( head -c 100000 /dev/urandom >&"$g" ) 2>/dev/null || true
exec {g}>&-
exec {g}<>"/dev/tcp/127.0.0.1/$METRICS_PORT"
printf '\x01\x02 garbage \xff\r\n\r\n' >&"$g"
line=$(timeout 5 head -n 1 <&"$g" | tr -d '\r' || true)
exec {g}>&-
expect_eq "a garbage head is answered 400" "HTTP/1.1 400 Bad Request" "$line"
check "a normal scrape is answered after the abuse" scrape "$T/m5.txt"
messages sub reading >"$T/all.json"
last=$(jq -s '[.[] | select(.meter == "M-1") | .seq] | max' "$T/all.json")
expect_eq "M-1's readings 1..$last all arrived: none lost to the abuse" 0 \
  "$(missing_seqs "$T/all.json" M-1 "$last")"
check "the collector still runs" kill -0 "$collector_PID"

stop_pid "$collector_PID"
expect_eq "the collector exits 0 on SIGTERM" 0 "$STOP_RC"
finish
