#!/usr/bin/env bash
# Flow control: against a broker whose MQTT 5 CONNACK gives a Receive
# Maximum of 10 (mosquitto's max_inflight_messages 10, the only setting
# changed), a fleet polled at 300 readings a second is delivered in full,
# each reading within its interval plus one second (p99), and a backlog of
# 100,000 stored readings drains at least ten times faster than one window
# per 100 ms (100 messages a second) would allow.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT P1 P2 P3 < <(free_ports 4)
{
  cat <<YAML
site: {id: window}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT", client_id: window-gw, version: 5}
storage: {path: ./readings.db}
buses:
  - {id: plc1, transport: tcp, host: 127.0.0.1, port: $P1, timeout: 1s}
  - {id: plc2, transport: tcp, host: 127.0.0.1, port: $P2, timeout: 1s}
  - {id: plc3, transport: tcp, host: 127.0.0.1, port: $P3, timeout: 1s}
meters:
YAML
  for b in 1 2 3; do
    for u in $(seq 1 20); do
      echo "  - {id: M$b-$u, bus: plc$b, unit: $u, profile: mag-00h, interval: 200ms}"
    done
  done
} >"$T/site.yaml"
DB="$T/readings.db"

start_broker broker "$MQTT_PORT" "max_inflight_messages 10"
# Stamps each message's arrival (unix time, ns).
start sub stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -q 1 -c -i "ic-window-$$" \
  -t 'water/window/+/reading' -F '%U %t %p' -d
wait_for "$T/sub.out" "received SUBACK" 10 "$sub_PID"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.log" "broker connected" 20 "$collector_PID"
check "the daemon saw the broker's window of 10" \
  grep -q "mqtt: MQTT 5, receive maximum 10," "$T/collector.log"

# 20 seconds of live polling: 60 meters every 200 ms.
t_end=$(( $(now_ms) + 20000 ))
past() { [ "$(now_ms)" -ge "$t_end" ]; }
wait_until 30 "20 s of live polling" past
stop_meters "$T/collector.log" 60
all_out() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -eq 0 ]; }
wait_until 30 "every reading delivered" all_out
rows=$(sql "$DB" 'SELECT count(*) FROM readings')
check "several hundred readings a second were taken ($rows in ~20 s)" test "$rows" -ge 5000

parse() {
  grep -E '^[0-9]+\.[0-9]+ water/' "$T/sub.out" | jq -R -c '
    capture("^(?<at>[0-9.]+) (?<topic>[^ ]+) (?<p>.*)$")
    | (.p | fromjson) + {meter: (.topic | split("/") | .[-2]), at: (.at | tonumber)}'
}
# Every stored reading, once: those polled before the first connect went
# out as historical.
have_all() {
  parse >"$T/live.json"
  [ "$(jq -s 'unique_by(.meter, .seq) | length' "$T/live.json")" -ge "$rows" ]
}
wait_until 30 "the subscriber has every reading" have_all || true
expect_eq "every stored reading reached the subscriber" "$rows" \
  "$(jq -s 'unique_by(.meter, .seq) | length' "$T/live.json")"
# Poll start (ts) to arrival, per reading, in ms.
p99=$(jq -s '
  def ms: (.ts[0:19] + "Z" | fromdate) * 1000 + (.ts[20:23] | tonumber);
  map(select(.historical != true) | (.at * 1000 - ms))
  | sort | .[(length * 99 / 100 | floor)] | floor' "$T/live.json")
check "p99 poll-to-subscriber latency ${p99} ms is within the interval plus 1 s" \
  test "$p99" -le 1200

# A backlog of 100,000 stored readings, undelivered (as a long outage leaves
# them), for one meter that keeps its numbering; sent at the next start.
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
last=$(sql "$DB" "SELECT last_seq FROM meters WHERE id = 'M1-1'")
fields=$(sql "$DB" "SELECT fields FROM readings WHERE meter = 'M1-1' ORDER BY seq DESC LIMIT 1")
sql "$DB" "
  WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 100000)
  INSERT INTO readings (meter, seq, ts_ms, fields, quality, delivered)
    SELECT 'M1-1', $last + k, (strftime('%s','now') - 3600) * 1000 + k, '$fields', 'good', 0 FROM n;
  UPDATE meters SET last_seq = $last + 100000 WHERE id = 'M1-1';"
expect_eq "the backlog is in the outbox" 100000 \
  "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')"
before=$(grep -c ' water/' "$T/sub.out" || true)
start collector2 "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector2.log" "broker connected" 20 "$collector2_PID"
t0=$(now_ms)
wait_until 100 "the backlog delivered" all_out
t1=$(now_ms)
rate=$(( 100000 * 1000 / (t1 - t0 > 0 ? t1 - t0 : 1) ))
check "the backlog drained at $rate readings/s, at least ten times one window per 100 ms (1,000/s)" \
  test "$rate" -ge 1000
stop_pid "$collector2_PID"
expect_eq "the second run exits 0" 0 "$STOP_RC"
arrived() { [ "$(grep -c ' water/' "$T/sub.out")" -ge $((before + 100000)) ]; }
wait_until 30 "the subscriber has the backlog" arrived
parse | jq -c 'select(.meter == "M1-1" and .historical == true)' >"$T/backlog.json"
expect_eq "the subscriber got every backlog reading, flagged historical" 100000 \
  "$(jq -s --argjson from "$((last + 1))" --argjson to "$((last + 100000))" '
      [.[] | .seq | select(. >= $from and . <= $to)] | unique | length' "$T/backlog.json")"
finish
