#!/usr/bin/env bash
# A three-minute memory soak: thirty meters on the three transports (Modbus
# TCP, RTU on a serial line, RTU over TCP) polled four or two times a second,
# faults switched on and off every ten seconds on a third of them, and the
# broker away for ten seconds in the first minute and again in the last, so
# the outbox fills and drains twice. The collector's resident size (VmRSS)
# is sampled every second; the largest sample of the last minute may exceed
# the largest of the first by at most 512 KiB. (The first minute holds the
# start-up growth that is legitimate: SQLite's page caches filling, paho's
# and libuv's buffers, malloc's arenas. Comparing maxima is the strict
# reading of "the resident size in the last minute": a leak shows in the
# peak as in the mean, and each of the two minutes holds the same work, an
# outage and its replay.)
#
# Two choices keep the first minute a fair baseline. The database starts
# with a day and a half of older readings, as on a gateway that has been
# running: the writer's SQLite page cache (2000 KiB) then fills at start, in
# the first maintenance pass, instead of growing with a young database for
# minutes, which would look like a leak and is not one. And reports cover 20
# seconds: the report thread reads a window's readings through its own page
# cache, so its peak follows the window's size, and the first minute must
# hold whole windows (the first report after start covers part of one).
#
# Resident size under AddressSanitizer says nothing about the program (shadow
# memory, quarantine), so this test runs release binaries built without it:
# IC_REL_BIN (set by CTest from IC_REL_BIN_DIR; scripts/test.sh builds them).
source "$(dirname "$0")/lib.sh"

REL=${IC_REL_BIN:-}
if [ -z "$REL" ] || [ ! -x "$REL/intake-collector" ] || [ ! -x "$REL/intake-sim" ]; then
  echo "not ok - release binaries (without sanitizers) missing in '${REL:-IC_REL_BIN unset}'" >&2
  echo "build them with:" >&2
  echo "  cmake -S . -B build/rel -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIC_TESTS=OFF" >&2
  echo "  cmake --build build/rel -j2 --target intake-collector intake-sim" >&2
  echo "and run with IC_REL_BIN=\$PWD/build/rel/bin, or under CTest configure the build" >&2
  echo "with -DIC_REL_BIN_DIR=\$PWD/build/rel/bin (scripts/test.sh does all of it)" >&2
  exit 1
fi
# gcc links the sanitizer runtimes dynamically, clang statically: look for
# their entry points rather than at the libraries.
if grep -Eqa '__asan_init|__ubsan_handle' "$REL/intake-collector"; then
  echo "not ok - $REL/intake-collector is built with sanitizers: its resident size means nothing" >&2
  exit 1
fi

SOAK_MS=${IC_SOAK_MS:-180000}
LIMIT_KB=512
read -r MQTT_PORT P1 P2 P3 < <(free_ports 4)
# Profiles and intervals vary by bus; the faulted meters' slow answers come
# after the bus timeout, so on a serial line they land in the middle of the
# next exchange, as they would on a real line.
SIM_F="sim: {slow_delay: 450ms, flaky_ratio: 0.7}"
{
  cat <<YAML
site: {id: soak}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT", keepalive: 5s}
storage: {path: ./readings.db}
reports: {periods: [20s]}
sim: {control: ./sim.sock}
online: {offline_after: 3, backoff_max: 4s}
buses:
  - {id: plc1, transport: tcp, host: 127.0.0.1, port: $P1, timeout: 300ms}
  - {id: plc2, transport: tcp, host: 127.0.0.1, port: $P2, timeout: 300ms}
  - {id: line1, transport: rtu, device: ./ttySOAK0, baud: 38400, timeout: 300ms}
  - {id: dtu1, transport: rtu-over-tcp, host: 127.0.0.1, port: $P3, baud: 19200, timeout: 300ms}
meters:
YAML
  for u in $(seq 1 10); do
    echo "  - {id: T1-$u, bus: plc1, unit: $u, profile: mag-00h, interval: 250ms, $SIM_F}"
  done
  for u in $(seq 1 8); do
    echo "  - {id: T2-$u, bus: plc2, unit: $u, profile: tuf2000m, interval: 250ms, $SIM_F}"
  done
  for u in $(seq 1 6); do
    echo "  - {id: R-$u, bus: line1, unit: $u, profile: mag-00h, interval: 500ms, $SIM_F}"
  done
  for u in $(seq 1 6); do
    echo "  - {id: D-$u, bus: dtu1, unit: $u, profile: open-channel, interval: 500ms, $SIM_F}"
  done
} >"$T/site.yaml"
DB="$T/readings.db"
# The meters whose faults come and go (a third of the fleet, every bus), and
# the faults they take in turn: each meter gets a different one each round.
FAULTED=(T1-2 T1-5 T1-9 T2-3 T2-6 R-2 R-5 D-1 D-4 D-6)
KINDS=(offline crc exception garbage slow flaky reset)

start_broker broker "$MQTT_PORT"
# A first run (the meters not there yet) creates the database; then the
# history goes in: HISTORY delivered readings per meter, a minute apart,
# ending an hour ago, each meter's sequence counter moved past them.
HISTORY=2000
start collector0 "$REL/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector0.out" '^ready' 20 "$collector0_PID"
stop_pid "$collector0_PID"
expect_eq "the first run exits 0" 0 "$STOP_RC"
end_ms=$(( $(now_ms) - 3600000 ))
sql "$DB" "
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $HISTORY)
  INSERT INTO readings (meter, seq, ts_ms, fields, quality, delivered)
  SELECT m.id, n.i, $end_ms - ($HISTORY - n.i) * 60000,
         json_object('flow_m3h', 90 + (n.i * 7 % 23) / 1.7, 'total_m3', n.i * 1.6667,
                     'velocity_ms', 0.12 + (n.i % 13) / 1000.0, 'alarm_empty_pipe', 0,
                     'signal_quality', 85),
         'good', 1
  FROM meters m, n;
  UPDATE meters SET last_seq = $HISTORY;"
history=$(sql "$DB" 'SELECT count(*) FROM readings')
kb=$(( $(stat -c %s "$DB") / 1024 ))
check "the history is in ($history readings, $kb KiB)" test "$history" -ge $((30 * HISTORY))

start sim "$REL/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$REL/intake-collector" --config "$T/site.yaml"
T0=$(now_ms)
# The sampler: elapsed ms, VmRSS and RssAnon (kB) once a second while the
# collector runs. A fixed cadence, not a wait for readiness.
sample() {
  local pid=$1 t0=$2 rss anon
  while [ -r "/proc/$pid/status" ]; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || break
    anon=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || break
    [ -n "$rss" ] || break
    echo "$(($(now_ms) - t0)) $rss $anon"
    sleep 1
  done
}
start sampler sample "$collector_PID" "$T0"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
wait_for "$T/collector.log" "broker connected" 20 "$collector_PID"

ctl() { "$REL/intake-sim" ctl --socket "$T/sim.sock" "$@" >/dev/null; }
# at MS: wait until MS after the collector's start.
at() {
  local due=$((T0 + $1))
  due_now() { [ "$(now_ms)" -ge "$due" ]; }
  wait_until $(( ($1 + 60000) / 1000 )) "t=$1 ms" due_now
}
# The schedule, as "MS ACTION [ROUND]" lines in time order: rounds of twenty
# seconds (faults on at +0 s, off at +10 s) from 5 s on, and the broker away
# from 30 s to 40 s and from 130 s to 140 s.
{
  round=0
  for ((t = 5000; t + 20000 <= SOAK_MS; t += 20000)); do
    echo "$t faults $round"
    echo "$((t + 10000)) clear"
    round=$((round + 1))
  done
  echo "30000 broker-stop"
  echo "40000 broker-start"
  echo "130000 broker-stop"
  echo "140000 broker-start"
} | sort -n -s -k1,1 >"$T/schedule"
broker_n=1
bad_ctl=0
# (fd 3: the programs started meanwhile keep the test's stdin.)
while read -r -u 3 t action arg; do
  at "$t"
  case "$action" in
    faults)
      i=0
      for m in "${FAULTED[@]}"; do
        ctl fault "$m" "${KINDS[$(( (i + arg) % ${#KINDS[@]} ))]}" || bad_ctl=$((bad_ctl + 1))
        i=$((i + 1))
      done ;;
    clear)
      for m in "${FAULTED[@]}"; do ctl fault "$m" none || bad_ctl=$((bad_ctl + 1)); done ;;
    broker-stop)
      pidvar="broker${broker_n}_PID"
      [ "$broker_n" -gt 1 ] || pidvar=broker_PID
      stop_pid "${!pidvar}"
      expect_eq "the broker stopped at $((t / 1000)) s" 0 "$STOP_RC" ;;
    broker-start)
      broker_n=$((broker_n + 1))
      start_broker "broker$broker_n" "$MQTT_PORT" ;;
  esac
done 3<"$T/schedule"
expect_eq "every fault switch was taken by intake-sim" 0 "$bad_ctl"
at "$SOAK_MS"

# The figures, before anything else changes the collector.
awk -v t1=60000 -v t2=$((SOAK_MS - 60000)) '
  $1 < t1 { if ($2 > f) f = $2; if ($3 > fa) fa = $3; fs += $2; fn++ }
  $1 >= t2 { if ($2 > l) l = $2; if ($3 > la) la = $3; ls += $2; ln++ }
  END { printf "%d %d %d %d %d %d %d %d\n", f, l, fa, la, fn ? fs / fn : 0, ln ? ls / ln : 0, fn, ln }
' "$T/sampler.out" >"$T/rss.txt"
read -r first last first_anon last_anon first_mean last_mean n_first n_last <"$T/rss.txt"
echo "# resident size of the collector, kB (every 10 s):"
awk '$1 % 10000 < 1000 { printf "#   t=%3d s  VmRSS %6d  RssAnon %6d\n", $1 / 1000, $2, $3 }' "$T/sampler.out"
echo "# first minute: max $first kB (anon $first_anon), mean $first_mean kB, $n_first samples"
echo "# last minute:  max $last kB (anon $last_anon), mean $last_mean kB, $n_last samples"
echo "# growth of the maximum: $((last - first)) kB (limit $LIMIT_KB kB)"
check "a sample every second or so in each minute ($n_first, $n_last)" \
  test "$n_first" -ge 50 -a "$n_last" -ge 50
check "the last minute's resident size is at most $LIMIT_KB kB above the first's ($((last - first)) kB)" \
  test "$((last - first))" -le "$LIMIT_KB"

# The run did real work: readings delivered, faults noticed and recovered
# from, both outages ridden out and drained.
every_online() {
  [ "$(sql "$DB" "SELECT count(*) FROM state_changes s WHERE online = 0 AND id =
         (SELECT max(id) FROM state_changes WHERE meter = s.meter)")" -eq 0 ]
}
wait_until 20 "every meter online once the faults are off" every_online
ok "every meter is online at the end"
drained() {
  [ "$(sql "$DB" "SELECT count(*) FROM readings WHERE delivered = 0
                  AND ts_ms < $(( $(now_ms) - 2000 ))")" -eq 0 ]
}
wait_until 30 "the outbox drained after the second outage" drained
ok "the outbox drained after the second outage"
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"

# Half of what the schedule asks for: slots are skipped while a faulted
# meter holds its bus for a timeout, and nothing is polled in the stop.
delivered=$(sql "$DB" "SELECT count(*) FROM readings WHERE delivered = 1 AND seq > $HISTORY")
expected=$(( (18 * 4 + 12 * 2) * SOAK_MS / 1000 / 2 ))
check "readings were delivered ($delivered, at least $expected)" test "$delivered" -ge "$expected"
faulted_in=$(printf "'%s'," "${FAULTED[@]}" | sed 's/,$//')
cycles=$(sql "$DB" "SELECT coalesce(min(n), 0) FROM (SELECT meter, sum(online = 0) AS n
                    FROM state_changes WHERE meter IN ($faulted_in) AND ts_ms >= $T0
                    GROUP BY meter)")
nfaulted=$(sql "$DB" "SELECT count(DISTINCT meter) FROM state_changes
                      WHERE meter IN ($faulted_in) AND ts_ms >= $T0 AND online = 0")
expect_eq "every faulted meter went offline" "${#FAULTED[@]}" "$nfaulted"
check "each at least three times, and came back each time (fewest: $cycles)" test "$cycles" -ge 3
# Healthy meters may miss a few slots while a faulted neighbour holds their
# bus for its timeouts; that is not what this test is about, so it is only
# shown.
spill=$(sql "$DB" "SELECT count(DISTINCT meter) FROM state_changes
                   WHERE meter NOT IN ($faulted_in) AND ts_ms >= $T0 AND online = 0")
echo "# healthy meters that went offline at some point: $spill"
kinds=$(sql "$DB" "SELECT group_concat(DISTINCT error) FROM state_changes
                   WHERE online = 0 AND ts_ms >= $T0")
echo "# failure kinds seen: $kinds"
for k in timeout crc exception; do
  check "failures of kind $k were seen" grep -q "$k" <<<"$kinds"
done
expect_eq "both outages were noticed" 2 "$(grep -c 'broker connection lost' "$T/collector.log")"
check "the backlog was replayed after each outage" \
  test "$(grep -c 'replay done' "$T/collector.log")" -ge 2
finish
