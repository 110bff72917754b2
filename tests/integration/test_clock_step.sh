#!/usr/bin/env bash
# Clock: the gateway boots with its wall clock an hour behind, then NTP steps
# it right (libfaketime, with the monotonic clock left alone as the kernel
# leaves it), later someone sets it half an hour back. Polling neither stalls
# nor bursts across either step, and the readings taken before a step are
# flagged with it ("clock_step_ms"): in the database, and on the broker when
# they go out after it: replayed after a broker outage that spans the step
# forward, or live across the step back. On the broker, a copy of a reading
# carries the step that followed it exactly when the gateway sent it after
# noticing that step; none taken after the last step carries any.
source "$(dirname "$0")/lib.sh"

# step_flags SUB_OUT STEP1_AT: judge every reading the subscriber received
# (SUB_OUT, "topic payload" lines in the order they arrived) against the
# clock steps: +1 h at about STEP1_AT (ms, real time), then -30 min. Which
# step followed a reading is told by its ts: an hour behind real time, it
# was taken before the first; on real time, between the two; half an hour
# behind, after both. The gateway publishes its state (counters.clock_steps)
# at every step it notices and at every connect, through the same ordered
# queue as the readings, so a copy received after the first state counting
# step K was sent after the gateway noticed step K: taken before step K, it
# must carry clock_step_ms = step K (within 1 s); sent before, or taken
# after, it must carry none. A copy identical to one received before (the
# broker, or delivery at least once, sending a message again) was judged at
# its first arrival and is only counted. Prints a JSON object: the copies
# judged per step, sent before and after it, and the wrong ones.
step_flags() {
  { grep -E '^water/clk/[^ ]+ ' "$1" || true; } |
    jq -R -c 'capture("^(?<topic>[^ ]+) (?<p>.*)$")' |
    jq -s -c --argjson s1 "$2" '
    def ms: (.[0:19] + "Z" | fromdate) * 1000 + (.[20:23] | tonumber);
    def sizes: {"1": 3600000, "2": -1800000};
    reduce .[] as $m ({steps: 0, seen: {}, repeats: 0,
                       n: {"1": {before: 0, after: 0}, "2": {before: 0, after: 0}, none: 0},
                       wrong: []};
      if ($m.topic | endswith("/gateway/state")) then
        .steps = ([.steps, ($m.p | fromjson | .counters.clock_steps // 0)] | max)
      elif ($m.topic | endswith("/reading")) | not then .
      elif .seen[$m.p] then .repeats += 1
      else
        .seen[$m.p] = true
        | ($m.p | fromjson) as $r
        | ($r.ts | ms) as $ts
        | (if $ts < $s1 - 1800000 then "1" elif $ts >= $s1 - 600000 then "2" else null end) as $k
        | (if $k != null and .steps >= ($k | tonumber) then sizes[$k] else null end) as $want
        | if $k == null then .n.none += 1
          elif $want == null then .n[$k].before += 1
          else .n[$k].after += 1 end
        | if ($want == null and $r.clock_step_ms != null)
             or ($want != null and ($r.clock_step_ms == null or (($r.clock_step_ms - $want) | fabs) > 1000))
          then .wrong += [{meter: ($m.topic | split("/") | .[-2]), seq: $r.seq, ts: $r.ts,
                           historical: ($r.historical // false), clock_step_ms: $r.clock_step_ms,
                           want: $want, steps_seen: .steps}]
          else . end
      end)
    | del(.seen)'
}

# The build machine's own libfaketime: with foreign architectures installed
# (scripts/cross.sh) /usr/lib holds other copies, which would not load into
# the daemon. intake-collector is built for the build machine.
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
FAKETIME_LIB=/usr/lib/$MULTIARCH/faketime/libfaketimeMT.so.1
[ -f "$FAKETIME_LIB" ] || { not_ok "libfaketime is not installed for $MULTIARCH (scripts/deps.sh)"; finish; }

read -r MQTT_PORT TCP_PORT SLOW_PORT < <(free_ports 3)
INTERVAL=200
# M5, alone on its line, answers 150 ms late: most of its polls are under way
# at any moment, so a step is likely to fall in one, whose reading, taken
# before the step, is committed and sent live after it.
{
  cat <<YAML
site: {id: clk}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
reports: {periods: [hourly]}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
  - {id: slow, transport: tcp, host: 127.0.0.1, port: $SLOW_PORT, timeout: 300ms}
meters:
YAML
  for u in 1 2 3 4; do
    echo "  - {id: M$u, bus: plc, unit: $u, profile: tuf2000m, interval: ${INTERVAL}ms}"
  done
  echo "  - {id: M5, bus: slow, unit: 5, profile: tuf2000m, interval: ${INTERVAL}ms,"
  echo "     sim: {fault: slow, slow_delay: 150ms}}"
} >"$T/site.yaml"
DB="$T/readings.db"

echo "-3600" >"$T/faketime"
start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" "water/clk/#"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
LD_PRELOAD="$FAKETIME_LIB" FAKETIME_TIMESTAMP_FILE="$T/faketime" \
  FAKETIME_CACHE_DURATION=1 DONT_FAKE_MONOTONIC=1 \
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
  start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"

rows() { sql "$DB" "SELECT count(*) FROM readings WHERE meter = 'M1'"; }
at_least() { [ "$("$1")" -ge "$2" ]; }
wait_until 20 "readings on the wrong clock" at_least rows 20
lag=$(( $(now_ms) - $(sql "$DB" "SELECT max(ts_ms) FROM readings") ))
check "the gateway's clock starts an hour behind (readings ${lag} ms old)" \
  test "$lag" -gt 3595000 -a "$lag" -lt 3605000

# Readings taken before the step stay in the outbox: the broker is away.
stop_pid "$broker_PID"
wait_for "$T/collector.log" "broker connection lost" 15 "$collector_PID"
undelivered() { sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0'; }
wait_until 20 "readings waiting in the outbox" at_least undelivered 20

# polls_across STEP: set the gateway's clock offset to STEP and count meter
# M1's readings over the 10 s of real time around it. At one reading per
# interval that is 50; a stall would make far fewer, catch-up polls more.
# (The step itself may cost the slot it lands in.)
polls_across() {
  local a b t0=$(now_ms)
  a=$(rows)
  until [ "$(now_ms)" -ge $((t0 + 5000)) ]; do sleep 0.05; done
  echo "$1" >"$T/faketime"
  now_ms >"$T/stepped_at"
  until [ "$(now_ms)" -ge $((t0 + 10000)) ]; do sleep 0.05; done
  b=$(rows)
  echo $((b - a))
}
n=$(polls_across "+0")
step_real=$(now_ms)
step1_at=$(cat "$T/stepped_at")
check "polling neither stalls nor bursts across the step forward ($n readings in 10 s, 50 expected)" \
  test "$n" -ge 46 -a "$n" -le 51
# (The step is measured between two clocks read one after the other: a
# millisecond either way.)
wait_for "$T/collector.log" "wall clock stepped by \+(3599[0-9]{3}|3600[0-9]{3}) ms" 5 "$collector_PID"

# The flags in the database: every reading taken on the wrong clock carries
# the step; none taken after it does.
expect_eq "readings taken before the step are flagged in the database" 0 \
  "$(sql "$DB" "SELECT count(*) FROM readings WHERE ts_ms < $step_real - 3600000 - 2000 AND (clock_step_ms IS NULL OR abs(clock_step_ms - 3600000) > 1000)")"
expect_eq "readings taken after it are not" 0 \
  "$(sql "$DB" "SELECT count(*) FROM readings WHERE ts_ms > $step_real AND clock_step_ms IS NOT NULL")"
flagged=$(sql "$DB" "SELECT count(*) FROM readings WHERE clock_step_ms IS NOT NULL")
check "there are flagged readings ($flagged)" test "$flagged" -ge 20

# The broker comes back: the outbox drains, and what was taken before the
# step goes out flagged (judged with the rest at the end).
# (Live readings keep the outbox from ever being quite empty: the meters'
# slots are spread over the interval, a commit every few tens of ms.)
last_id=$(sql "$DB" 'SELECT max(id) FROM readings')
start_broker broker "$MQTT_PORT"
replayed_all() {
  [ "$(sql "$DB" "SELECT count(*) FROM readings WHERE delivered = 0 AND id <= $last_id")" = 0 ]
}
wait_until 60 "the outbox drained of what was taken before the broker came back" replayed_all
replayed=$(step_flags "$T/sub.out" "$step1_at" | jq '.n["1"].after')
check "readings taken before the step went out after it, replayed ($replayed)" test "$replayed" -ge 20

# And back half an hour by hand.
n=$(polls_across "-1800")
check "polling neither stalls nor bursts across the step back ($n readings in 10 s, 50 expected)" \
  test "$n" -ge 46 -a "$n" -le 51
wait_for "$T/collector.log" "wall clock stepped by -(1799[0-9]{3}|1800[0-9]{3}) ms" 5 "$collector_PID"
gw_state() {
  grep -E "^water/clk/gateway/state " "$T/sub.out" | tail -n 1 | cut -d' ' -f2-
}
two_steps() { [ "$(gw_state | jq -r .counters.clock_steps)" = 2 ]; }
check "the gateway state counts both steps" wait_until 10 "two steps in the gateway state" two_steps
check "and gives the last one" test "$(gw_state | jq -r '.clock_step.ms / 1000 | round')" = -1800

stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
# A PUBACK reached the daemon when the broker took the message; the
# subscriber's copy may still be on its way: wait until it has every
# delivered reading (judged below) before looking. (A reading on the broker
# whose PUBACK came too late to be marked may stay undelivered: it is sent
# again at the next start.)
# delivered_missing METER: delivered rows of METER the subscriber lacks.
delivered_missing() {
  local last gone
  last=$(sql "$DB" "SELECT last_seq FROM meters WHERE id = '$1'")
  gone=$(jq -s -r --arg m "$1" --argjson last "$last" '
    ([.[] | select(.meter == $m) | .seq] | unique) as $s | [range(1; $last + 1)] - $s | join(",")' \
    "$T/readings.jsonl")
  if [ -z "$gone" ]; then echo 0; return; fi
  sql "$DB" "SELECT count(*) FROM readings WHERE meter = '$1' AND delivered = 1 AND seq IN ($gone)"
}
delivered_seen() {
  messages sub reading >"$T/readings.jsonl"
  local m
  for m in M1 M2 M3 M4 M5; do [ "$(delivered_missing "$m")" = 0 ] || return 1; done
}
wait_until 10 "the subscriber has every delivered reading" delivered_seen || true
messages sub reading >"$T/readings.jsonl"
flags=$(step_flags "$T/sub.out" "$step1_at")
echo "# copies judged: $(jq -c '.n' <<<"$flags"); identical copies sent again: $(jq .repeats <<<"$flags")"
expect_eq "on the broker, every copy of a reading taken before a step and sent after it carries it, and no other copy carries one" \
  "[]" "$(jq -c .wrong <<<"$flags")"
check "readings taken after both steps reached the broker ($(jq .n.none <<<"$flags")), none flagged" \
  test "$(jq .n.none <<<"$flags")" -ge 20
for m in M1 M2 M3 M4 M5; do
  expect_eq "meter $m: every delivered sequence number is on the broker" 0 "$(delivered_missing "$m")"
done
expect_eq "each step logged once" 2 "$(grep -c 'wall clock stepped' "$T/collector.log")"
finish
