#!/usr/bin/env bash
# The metrics endpoint (metrics.listen): /metrics in the Prometheus text
# format, which promtool accepts and a real Prometheus server scrapes; its
# counters move with the polls and a meter that stops answering shows as
# offline; /status is the gateway state; and abuse (idle connections past
# the limit, a huge request line, garbage) neither stops it answering nor
# stops the polling.
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
  intake_broker_connected intake_process_start_time_seconds intake_poll_duration_seconds; do
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
sleep 2.5
scrape "$T/m2.txt"
p2=$(polls_of "$T/m2.txt" M-1)
check "M-1's poll counter increases between two scrapes ($p1 -> $p2)" test "$p2" -gt "$p1"
s1=$(value "$T/m1.txt" 'intake_readings_stored_total{site="mtest"}')
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
stop_pid "$prometheus_PID"

# (c) Abuse. 200 connections opened and left idle: those over the limit of
# 64 are closed at once.
readings_now() { messages sub reading | wc -l; }
r0=$(readings_now)
fds=()
for _ in $(seq 200); do
  exec {fd}<>"/dev/tcp/127.0.0.1/$METRICS_PORT"
  fds+=("$fd")
done
sleep 0.5
closed=0
for fd in "${fds[@]}"; do
  st=0
  read -r -t 0.05 -u "$fd" _ || st=$?
  # 1: end of file (closed by the gateway); over 128: still open, silent.
  [ "$st" -ne 1 ] || closed=$((closed + 1))
done
check "the connections over the limit are closed at once ($closed of 200)" \
  test "$closed" -ge 136 -a "$closed" -lt 200
# 200 idle connections hold 64 slots: wait for the idle ones' 5 s limit.
sleep 5.5
for fd in "${fds[@]}"; do exec {fd}>&-; done
# Again a 1 MB request line now that there is room.
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
# Meanwhile, with idle connections holding slots again, a normal request is
# answered and the collector keeps polling.
fds=()
for _ in $(seq 50); do exec {fd}<>"/dev/tcp/127.0.0.1/$METRICS_PORT"; fds+=("$fd"); done
check "a normal scrape is answered with 50 idle connections open" scrape "$T/m4.txt"
p4=$(polls_of "$T/m4.txt" M-1)
sleep 2
check "polling goes on" bash -c "[ \$(awk '\$1 == \"intake_polls_total{site=\\\"mtest\\\",meter=\\\"M-1\\\"}\" {print \$2}' <(curl -s -m 5 '$URL/metrics')) -gt $p4 ]"
for fd in "${fds[@]}"; do exec {fd}>&-; done
more_readings() { [ "$(readings_now)" -gt "$((r0 + 5))" ]; }
check "readings still arrive at the broker" wait_until 10 "readings" more_readings
check "the collector still runs" kill -0 "$collector_PID"

stop_pid "$collector_PID"
expect_eq "the collector exits 0 on SIGTERM" 0 "$STOP_RC"
finish
