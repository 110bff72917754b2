#!/usr/bin/env bash
# Clock: the gateway boots with its wall clock an hour behind, then NTP steps
# it right (libfaketime, with the monotonic clock left alone as the kernel
# leaves it), later someone sets it half an hour back. Polling neither stalls
# nor bursts across either step, and the readings taken before a step are
# flagged with it ("clock_step_ms"): in the database, and on the broker when
# they go out after it (here, replayed after a broker outage that spans the
# step).
source "$(dirname "$0")/lib.sh"

FAKETIME_LIB=$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 2>/dev/null | head -n 1)
[ -n "$FAKETIME_LIB" ] || { not_ok "libfaketime is not installed (scripts/deps.sh)"; finish; }

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
INTERVAL=200
{
  cat <<YAML
site: {id: clk}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
reports: {periods: [hourly]}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
YAML
  for u in 1 2 3 4; do
    echo "  - {id: M$u, bus: plc, unit: $u, profile: tuf2000m, interval: ${INTERVAL}ms}"
  done
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
  until [ "$(now_ms)" -ge $((t0 + 10000)) ]; do sleep 0.05; done
  b=$(rows)
  echo $((b - a))
}
n=$(polls_across "+0")
step_real=$(now_ms)
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
# step goes out flagged.
mark=$(wc -l <"$T/sub.out")
start_broker broker "$MQTT_PORT"
empty() { [ "$(undelivered)" = 0 ]; }
wait_until 60 "the outbox drained" empty
# What arrived since the broker came back (readings replayed at the first
# connect, before the step, rightly carry nothing).
before=$(tail -n +"$((mark + 1))" "$T/sub.out" | grep -E "^water/clk/[^ ]+/reading " |
  cut -d' ' -f2- | jq -s --argjson t "$((step_real - 3600000 - 2000))" '
  [.[] | select((.ts | sub("\\.[0-9]+Z$"; "Z") | fromdate) * 1000 < $t)]')
check "readings taken before the step were replayed" test "$(jq length <<<"$before")" -ge 20
expect_eq "the replayed ones taken before the step carry it" 0 \
  "$(jq '[.[] | select(.historical == true and (.clock_step_ms // 0) < 3599000)] | length' <<<"$before")"

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
messages sub reading >"$T/readings.jsonl"
for m in M1 M2 M3 M4; do
  last=$(sql "$DB" "SELECT last_seq FROM meters WHERE id = '$m'")
  undel=$(sql "$DB" "SELECT count(*) FROM readings WHERE meter = '$m' AND delivered = 0")
  expect_eq "meter $m: every delivered sequence number is on the broker" "$undel" \
    "$(missing_seqs "$T/readings.jsonl" "$m" "$last")"
done
expect_eq "each step logged once" 2 "$(grep -c 'wall clock stepped' "$T/collector.log")"
finish
