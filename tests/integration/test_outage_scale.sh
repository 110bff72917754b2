#!/usr/bin/env bash
# A broker outage under load: fifty meters polled five times a second (250
# readings/s) while the broker is stopped for a minute and restarted.
# Afterwards the broker has seen every sequence number of every meter, each
# stream (live, historical) in order, the replays flagged historical, and
# live readings were not starved by the replay: each arrived within a few
# seconds of its poll.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT P1 P2 P3 P4 P5 < <(free_ports 6)
{
  cat <<YAML
site: {id: scale}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT", keepalive: 5s}
storage: {path: ./readings.db}
reports: {periods: [hourly]}
buses:
YAML
  b=1
  for p in $P1 $P2 $P3 $P4 $P5; do
    echo "  - {id: plc$b, transport: tcp, host: 127.0.0.1, port: $p, timeout: 500ms}"
    b=$((b + 1))
  done
  echo "meters:"
  for b in 1 2 3 4 5; do
    for u in $(seq 1 10); do
      echo "  - {id: M$b-$u, bus: plc$b, unit: $u, profile: mag-00h, interval: 200ms}"
    done
  done
} >"$T/site.yaml"
DB="$T/readings.db"

start_broker broker "$MQTT_PORT"
# A subscriber that stamps each message's arrival (unix time, ns).
start sub stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -q 1 -c -i "ic-scale-$$" \
  -t 'water/scale/+/reading' -F '%U %t %p' -d
wait_for "$T/sub.out" "received SUBACK" 10 "$sub_PID"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.log" "broker connected" 20 "$collector_PID"
warm() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 1')" -ge 1000 ]; }
wait_until 30 "live readings before the outage" warm

stop_pid "$broker_PID"
expect_eq "the broker stopped" 0 "$STOP_RC"
t_back=$(( $(now_ms) + 60000 ))
minute() { [ "$(now_ms)" -ge "$t_back" ]; }
wait_until 70 "a minute of outage" minute
pending=$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')
check "readings piled up during the minute ($pending)" test "$pending" -ge 10000

start_broker broker2 "$MQTT_PORT"
reconnect_ms=$(now_ms)
# Drained: nothing older than two seconds waits (younger rows are live
# readings on their way).
drained() {
  [ "$(sql "$DB" "SELECT count(*) FROM readings WHERE delivered = 0
                  AND ts_ms < $(( $(now_ms) - 2000 ))")" -eq 0 ]
}
wait_until 120 "the outbox drained while live polling goes on" drained
drained_ms=$(now_ms)
ok "the backlog of $pending readings went out in $(( (drained_ms - reconnect_ms) / 1000 )) s"
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
# Deliver the last live readings that were in flight at the stop: a run
# with the meters silent sends what is left.
stop_pid "$sim_PID"
start collector2 "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector2.log" "broker connected" 20 "$collector2_PID"
all_out() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -eq 0 ]; }
wait_until 60 "every reading delivered" all_out
stop_pid "$collector2_PID"

rows=$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 1')
grep -E '^[0-9]+\.[0-9]+ water/' "$T/sub.out" | jq -R -c '
  capture("^(?<at>[0-9.]+) (?<topic>[^ ]+) (?<p>.*)$")
  | (.p | fromjson) + {meter: (.topic | split("/") | .[-2]), at: (.at | tonumber)}' \
  >"$T/readings.json"
have() { [ "$(jq -s 'unique_by(.meter, .seq) | length' "$T/readings.json")" -ge "$rows" ]; }
if ! have; then
  # Messages still in flight to the subscriber: read again once they arrive.
  more() {
    grep -E '^[0-9]+\.[0-9]+ water/' "$T/sub.out" | jq -R -c '
      capture("^(?<at>[0-9.]+) (?<topic>[^ ]+) (?<p>.*)$")
      | (.p | fromjson) + {meter: (.topic | split("/") | .[-2]), at: (.at | tonumber)}' \
      >"$T/readings.json"
    have
  }
  wait_until 30 "the subscriber caught up" more
fi

gaps=0
for b in 1 3 5; do
  for u in 1 10; do
    m="M$b-$u"
    last=$(sql "$DB" "SELECT max(seq) FROM readings WHERE meter = '$m' AND delivered = 1")
    n=$(missing_seqs "$T/readings.json" "$m" "$last")
    [ "$n" -eq 0 ] || { gaps=$((gaps + n)); echo "meter $m misses $n of 1..$last" >&2; }
  done
done
expect_eq "every delivered seq of the sampled meters reached the broker" 0 "$gaps"
all=$(jq -s '
  group_by(.meter) | map((map(.seq) | unique) as $s | ($s | max) - ($s | length)) | add' "$T/readings.json")
expect_eq "no meter has a hole in its sequence on the broker" 0 "$all"
disorder=$(jq -s '
  [group_by(.meter)[] | (map(select(.historical == true) | .seq), map(select(.historical != true) | .seq))
   | . as $s | range(1; length) | select($s[.] < $s[. - 1])] | length' "$T/readings.json")
expect_eq "live and historical streams are each in seq order" 0 "$disorder"
hist=$(jq -s '[.[] | select(.historical == true)] | length' "$T/readings.json")
check "the outage's readings were replayed as historical ($hist)" test "$hist" -ge 10000
# Live readings polled while the replay ran arrived within seconds.
slow=$(jq -s --argjson a "$reconnect_ms" --argjson b "$drained_ms" '
  def ms: (.ts[0:19] + "Z" | fromdate) * 1000 + (.ts[20:23] | tonumber);
  [.[] | select(.historical != true) | select(ms >= $a and ms <= $b)
       | (.at * 1000 - ms)] | {n: length, worst: (max // 0)}' "$T/readings.json")
n_live=$(jq -r .n <<<"$slow")
worst=$(jq -r '.worst | floor' <<<"$slow")
check "live readings kept flowing during the replay ($n_live)" test "$n_live" -ge 100
check "each within 5 s of its poll (worst $worst ms)" test "$worst" -le 5000
finish
