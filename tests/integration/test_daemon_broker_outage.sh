#!/usr/bin/env bash
# The broker stops for a while and comes back: readings keep being stored
# meanwhile; afterwards the broker has seen every sequence number of every
# meter, no sequence number naming two readings; every copy of a reading
# taken while the broker was away is flagged historical, and no copy of one
# taken well before the outage or well after the reconnect is; the live and
# the historical stream of each meter are each in sequence order.
source "$(dirname "$0")/lib.sh"

# flag_window JSONLINES FROM_MS TO_MS: the readings of JSONLINES (from
# `messages`) taken (their ts) within [FROM_MS, TO_MS], as one JSON object:
# how many readings (meter and seq) and how many copies, and the copies
# flagged historical and those not, as "meter:seq" lists.
flag_window() {
  jq -s -c --argjson from "$2" --argjson to "$3" '
    def ms: (.[0:19] + "Z" | fromdate) * 1000 + (.[20:23] | tonumber);
    [.[] | select(.seq != null) | (.ts | ms) as $t | select($t >= $from and $t <= $to)] as $w
    | {readings: ($w | unique_by(.meter, .seq) | length), copies: ($w | length),
       historical: [$w[] | select(.historical == true) | "\(.meter):\(.seq)"],
       live: [$w[] | select(.historical != true) | "\(.meter):\(.seq)"]}' "$1"
}

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
cat >"$T/site.yaml" <<YAML
site: {id: outage}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT", keepalive: 5s}
storage: {path: ./readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 1s}
meters:
  - {id: A, bus: plc, unit: 1, profile: mag-00h, interval: 200ms}
  - {id: B, bus: plc, unit: 2, profile: tuf2000m, interval: 200ms}
  - {id: C, bus: plc, unit: 3, profile: open-channel, interval: 500ms}
YAML
DB="$T/readings.db"

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/outage/+/reading'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"

nmsgs() { grep -c '^water/' "$T/sub.out" || true; }
some() { [ "$(nmsgs)" -ge 20 ]; }
wait_until 20 "live readings before the outage" some
# Readings taken from here on went out after the first connect's replay
# (readings taken before the gateway has checked its sequence numbers at its
# first connect go out as historical). Let a few seconds of them arrive.
t_live=$(($(now_ms) + 500))
live_before() {
  [ "$(messages sub reading | flag_window /dev/stdin "$t_live" 99999999999999 | jq .readings)" -ge 30 ]
}
wait_until 20 "seconds of live readings before the outage" live_before

# Stop the broker (it saves its sessions) and keep it away for a while.
t_stop=$(now_ms)
stop_pid "$broker_PID"
t_down=$(now_ms)
expect_eq "the broker stopped cleanly" 0 "$STOP_RC"
wait_for "$T/collector.log" "broker connection lost" 15 "$collector_PID"
before=$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')
piled() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -ge $((before + 40)) ]; }
wait_until 30 "readings piling up in the outbox during the outage" piled
ok "readings are stored while the broker is away"

# Back on the same port with the same persistence: the subscriber's session
# and everything queued for it survive.
t_up=$(now_ms)
start_broker broker2 "$MQTT_PORT"
reconnected() { [ "$(grep -c 'broker connected' "$T/collector.log")" -ge 2 ]; }
wait_until 30 "the daemon reconnected" reconnected
t_conn=$(now_ms) # the reconnect came before this
drained() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -eq 0 ]; }
wait_until 60 "the outbox drained after the broker came back" drained
check "the replay is logged" grep -q "replay done" "$T/collector.log"
live_after() {
  [ "$(messages sub reading | flag_window /dev/stdin $((t_conn + 1000)) 99999999999999 | jq .readings)" -ge 20 ]
}
wait_until 20 "live readings after the reconnect" live_after

# The meters stop, so that no reading is taken while the daemon stops (it
# would stay in the outbox for the next start, by design).
stop_meters "$T/collector.log" 3
wait_until 30 "the last readings delivered" drained
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
# Deliver whatever was acknowledged to the subscriber too.
max_rows=$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 1')
all_there() {
  [ "$(messages sub reading | jq -s 'unique_by(.meter, .seq) | length')" -ge "$max_rows" ]
}
wait_until 30 "the subscriber has every delivered reading" all_there
messages sub reading >"$T/readings.json"

for m in A B C; do
  last=$(sql "$DB" "SELECT max(seq) FROM readings WHERE meter = '$m'")
  expect_eq "meter $m: every seq 1..$last reached the broker" 0 \
    "$(missing_seqs "$T/readings.json" "$m" "$last")"
  for stream in false true; do
    disorder=$(jq -s --arg m "$m" --argjson h "$stream" '
      [.[] | select(.meter == $m and ((.historical // false) == $h)) | .seq] as $s
      | [range(1; $s | length) | select($s[.] < $s[. - 1])] | length' "$T/readings.json")
    expect_eq "meter $m: the $([ $stream = true ] && echo historical || echo live) stream is in seq order" 0 "$disorder"
  done
done
expect_eq "no (meter, seq) names two different readings on the broker" 0 \
  "$(seq_clashes "$T/readings.json")"
# Taken while the broker was away: from its exit until it was started again
# (less 1 s: a poll's answer and the group commit come before the reconnect),
# so none of them can have reached the broker live: every copy is a replay.
during=$(flag_window "$T/readings.json" "$t_down" $((t_up - 1000)))
check "readings taken during the outage reached the broker ($(jq .readings <<<"$during"))" \
  test "$(jq .readings <<<"$during")" -ge 20
expect_eq "every copy of a reading taken during the outage is flagged historical" "[]" \
  "$(jq -c .live <<<"$during")"
# Taken well before the outage (after the first connect's replay, 1 s before
# the broker stopped: acknowledged long before) or well after the reconnect
# (committed after the replay's last row was chosen): live, never replayed.
pre=$(flag_window "$T/readings.json" "$t_live" $((t_stop - 1000)))
post=$(flag_window "$T/readings.json" $((t_conn + 1000)) 99999999999999)
check "live readings were seen before the outage ($(jq .readings <<<"$pre")) and after it ($(jq .readings <<<"$post"))" \
  test "$(jq .readings <<<"$pre")" -ge 10 -a "$(jq .readings <<<"$post")" -ge 10
expect_eq "no reading taken before the outage went out as historical" "[]" \
  "$(jq -c .historical <<<"$pre")"
expect_eq "no reading taken after the reconnect went out as historical" "[]" \
  "$(jq -c .historical <<<"$post")"
dups=$(jq -s 'length - (unique_by(.meter, .seq) | length)' "$T/readings.json")
echo "# duplicates seen by the subscriber (allowed, at-least-once): $dups"
finish
