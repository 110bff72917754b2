#!/usr/bin/env bash
# The benchmark: our collector side by side with collectd on the same
# simulated fleets, then an outage replay, a serial bus, and the broker's flow
# control window (MQTT 5 Receive Maximum). See bench/README.md.
#
#   bench/run.sh [--quick] [--duration S] [--warmup S] [--phases LIST]
#                [--backlog N] [--out DIR] [--no-build]
#
# Phases run one after another (the machine has two cores), each with its own
# broker, fleet and subscriber on free loopback ports. One table is printed at
# the end and the same figures are written as JSON (OUT/results.json).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$ROOT/build-bench}
DURATION=60
WARMUP=10
GRACE=3
BACKLOG=1000000
PHASES=all
OUT=""
DO_BUILD=1
PERF=0
SUMMARIZE=""
ALL_PHASES="ours-10 collectd-10 ours-100 collectd-100 ours-1000 collectd-1000 ours-5000 outage serial windows"
# The windows phase: the broker's Receive Maximum (mosquitto's
# max_inflight_messages) for each stage, and the delayed link's stage.
WINDOW_RMS=${WINDOW_RMS:-"10 20 32"}
# The windows phase's stages to run: any of live, replay, relay.
WINDOW_STAGES=${WINDOW_STAGES:-"live replay relay"}
RELAY_RM=20
RELAY_DELAY_MS=50
# Messages the peer (ic-pahopeer) sends with the window full, on loopback and
# over the delayed link; and for the bare round trip (a window of 1).
PEER_N=200000
PEER_RELAY_N=3000
PEER_RTT_N=5000
PEER_RELAY_RTT_N=50

usage() {
  cat <<EOF
usage: bench/run.sh [options]
  --quick          a short smoke run of every phase (10 s each, 3 s warm-up,
                   a backlog of 100,000 readings, fewer peer messages)
  --duration S     measured seconds per phase (default $DURATION)
  --warmup S       seconds before measuring starts (default $WARMUP)
  --phases LIST    comma-separated, from: $ALL_PHASES
                   (or: fleet, ours, collectd, all; default all)
  --backlog N      undelivered readings for the outage replay (default $BACKLOG)
  --out DIR        results folder (default $BUILD/results/DATE)
  --no-build       use the binaries already in $BUILD
  --perf           profile our collector during each of its measured windows
                   (perf record, call graphs by DWARF unwinding) into
                   OUT/PHASE/perf.data; it costs CPU, so figures of such a run
                   are not for comparison
  --summarize DIR  only print the table and write DIR/results.json from the
                   phases found in DIR (a run cut short, or an old one)
EOF
}

while [ $# -gt 0 ]; do
  case $1 in
    --quick) DURATION=10; WARMUP=3; BACKLOG=100000; PEER_N=50000; PEER_RELAY_N=1000 ;;
    --duration) DURATION=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --phases) PHASES=$2; shift ;;
    --backlog) BACKLOG=$2; shift ;;
    --out) OUT=$2; shift ;;
    --no-build) DO_BUILD=0 ;;
    --perf) PERF=1 ;;
    --summarize) SUMMARIZE=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

selected=()
for p in ${PHASES//,/ }; do
  case $p in
    all) selected+=($ALL_PHASES) ;;
    fleet) selected+=(ours-10 collectd-10 ours-100 collectd-100 ours-1000 collectd-1000 ours-5000) ;;
    ours) selected+=(ours-10 ours-100 ours-1000 ours-5000) ;;
    collectd) selected+=(collectd-10 collectd-100 collectd-1000) ;;
    *)
      case " $ALL_PHASES " in
        *" $p "*) selected+=("$p") ;;
        *) echo "run.sh: unknown phase $p (phases: $ALL_PHASES)" >&2; exit 2 ;;
      esac ;;
  esac
done

if [ -n "$SUMMARIZE" ]; then
  selected=()
  DO_BUILD=0
  OUT=$SUMMARIZE
fi

for tool in mosquitto jq sqlite3 cc; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing: run bench/deps.sh" >&2; exit 1; }
done
COLLECTD=$(command -v collectd || echo /usr/sbin/collectd)
[ -x "$COLLECTD" ] || { echo "run.sh: collectd is missing: run bench/deps.sh" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Build: a release binary of ours, and the measuring tool.

if [ "$DO_BUILD" -eq 1 ]; then
  echo "== building (RelWithDebInfo) in $BUILD" >&2
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIC_TESTS=OFF >/dev/null
  cmake --build "$BUILD" -j2 --target intake-collector intake-sim >/dev/null
fi
mkdir -p "$BUILD/bench"
if [ "$DO_BUILD" -eq 1 ] || [ ! -x "$BUILD/bench/ic-bench" ]; then
  cc -std=c11 -O2 -g -Wall -Wextra -Wshadow -o "$BUILD/bench/ic-bench" \
    "$ROOT/bench/tools/ic-bench.c" -lmosquitto
fi
if [ "$DO_BUILD" -eq 1 ] || [ ! -x "$BUILD/bench/ic-simclient" ]; then
  # The test suite's Modbus client, for timing the simulator's serial line.
  cc -std=c11 -O2 -D_GNU_SOURCE -o "$BUILD/bench/ic-simclient" "$ROOT/tests/tools/simclient.c"
fi
if [ "$DO_BUILD" -eq 1 ] || [ ! -x "$BUILD/bench/ic-pahopeer" ]; then
  # The windows phase's bare paho publisher.
  cc -std=c11 -O2 -g -Wall -Wextra -Wshadow -o "$BUILD/bench/ic-pahopeer" \
    "$ROOT/bench/tools/ic-pahopeer.c" -lpaho-mqtt3as -lpthread
fi
if [ "$DO_BUILD" -eq 1 ] || [ ! -x "$BUILD/bench/ic-tcprelay" ]; then
  # The test suite's relay, for the windows phase's delayed link.
  cc -std=c11 -O2 -o "$BUILD/bench/ic-tcprelay" "$ROOT/tests/tools/tcprelay.c"
fi
BIN=$BUILD/bin
TOOL=$BUILD/bench/ic-bench
PROFILE=$ROOT/bench/profiles/bench-2v.yaml
# The profile's span: 4 contiguous registers (flow f32 at 0, total u32 at 2).
PROFILE_REGS=4

[ -n "$OUT" ] || OUT=$BUILD/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
echo "== results in $OUT" >&2
if [ -z "$SUMMARIZE" ]; then
  jq -n --argjson d "$DURATION" --argjson w "$WARMUP" --argjson b "$BACKLOG" --argjson perf "$PERF" \
    --arg commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --argjson dirty "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo true || echo false)" \
    '{duration_s: $d, warmup_s: $w, backlog: $b, perf: ($perf == 1), commit: $commit, dirty: $dirty}' >"$OUT/run.json"
fi

# ---------------------------------------------------------------------------
# Processes: every one started here is tracked by PID and stopped by PID.

PIDS=()
cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

# spawn DIR NAME CMD...: background CMD, stdout/stderr to DIR/NAME.out/.log;
# its PID lands in LAST_PID.
spawn() {
  local dir=$1 name=$2
  shift 2
  "$@" >"$dir/$name.out" 2>"$dir/$name.log" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# wait_line FILE PATTERN TIMEOUT_S PID
wait_line() {
  local file=$1 pattern=$2 timeout=$3 pid=$4
  local deadline=$((SECONDS + timeout))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if [ -f "$file" ] && grep -Eq -- "$pattern" "$file"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run.sh: process $pid exited while waiting for /$pattern/ in $file" >&2
      tail -n 20 "${file%.*}.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.05
  done
  echo "run.sh: timed out after ${timeout}s waiting for /$pattern/ in $file" >&2
  return 1
}

# stop PID [TIMEOUT_S]: SIGTERM, then SIGKILL after the timeout; waits.
stop() {
  local pid=$1 timeout=${2:-20} i=0
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt $((timeout * 10)) ]; do
    sleep 0.1
    i=$((i + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "run.sh: $pid did not stop within ${timeout}s: killed" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  local keep=() p
  for p in ${PIDS[@]+"${PIDS[@]}"}; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=(${keep[@]+"${keep[@]}"})
}

CLK_TCK=$(getconf CLK_TCK)
# cpu_ticks PID: utime + stime of the whole process (all its threads), from
# the kernel's own accounting (/proc/PID/stat fields 14 and 15).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# hwm_kb PID: peak resident set (VmHWM).
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# measure DIR PID SYSTEM: wait out the measured window, under perf when asked.
measure() {
  local dir=$1 pid=$2 system=$3
  if [ "$PERF" -eq 1 ] && [ "$system" = ours ]; then
    perf record -q -F 199 --call-graph dwarf,16384 -p "$pid" -o "$dir/perf.data" \
      -- sleep "$DURATION" >"$dir/perf.log" 2>&1 || echo "run.sh: perf record failed: see $dir/perf.log" >&2
  else
    sleep "$DURATION"
  fi
}

# broker DIR PORT: a mosquitto that queues without limit for its subscriber,
# on its stock flow control otherwise (max_inflight_messages 20: a Receive
# Maximum of 20 in its CONNACK to MQTT 5 clients). BROKER_EXTRA, when set,
# adds configuration lines (the windows phase sets max_inflight_messages).
BROKER_EXTRA=""
broker() {
  local dir=$1 port=$2
  cat >"$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
${BROKER_EXTRA}
user root
log_dest stderr
log_type error
log_type warning
log_type notice
CONF
  spawn "$dir" broker mosquitto -c "$dir/mosquitto.conf"
  BROKER_PID=$LAST_PID
  # mosquitto logs nothing at "notice" once listening: wait for the port.
  local deadline=$((SECONDS + 10))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    kill -0 "$BROKER_PID" 2>/dev/null || { cat "$dir/broker.log" >&2; return 1; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "run.sh: broker not listening" >&2; return 1; }
    sleep 0.05
  done
}

# subscriber DIR PORT TOPIC: the measuring subscriber, waits for its SUBACK.
subscriber() {
  local dir=$1 port=$2 topic=$3
  spawn "$dir" sub "$TOOL" sub -p "$port" -t "$topic" -i "bench-sub-$$" \
    -o "$dir/records.bin" -T "$dir/topics.txt"
  SUB_PID=$LAST_PID
  wait_line "$dir/sub.out" '^ready' 20 "$SUB_PID"
}

# ---------------------------------------------------------------------------
# Fleets. A shape is ENDPOINTS x UNITS meters at INTERVAL_MS.

shape_of() {
  case $1 in
    10) echo "10 1 100" ;;
    100) echo "100 1 100" ;;
    1000) echo "1000 1 100" ;;
    5000) echo "100 50 1000" ;;
    outage) echo "100 10 1000" ;;
    *) echo "run.sh: unknown shape $1" >&2; return 1 ;;
  esac
}

# site_yaml DIR MQTT_PORT ENDPOINTS UNITS INTERVAL_MS PORTS_FILE: the site
# file both intake-sim and our collector read; also DIR/phases.txt, each
# meter's slot phase as the collector computes it (cfg_meter_phase_ms).
site_yaml() {
  local dir=$1 mport=$2 ne=$3 nu=$4 iv=$5 ports=$6
  awk -v dir="$dir" -v mport="$mport" -v ne="$ne" -v nu="$nu" -v iv="$iv" \
      -v prof="$PROFILE" -v phases="$dir/phases.txt" '
    { port[NR] = $1 }
    END {
      print "site: {id: bench}"
      printf "mqtt: {url: \"mqtt://127.0.0.1:%d\", client_id: bench-gw, keepalive: 30s}\n", mport
      printf "storage: {path: %s/readings.db, max_size: 4GiB}\n", dir
      print "reports: {periods: [hourly]}"
      print "buses:"
      for (e = 1; e <= ne; e++)
        printf "  - {id: e%04d, transport: tcp, host: 127.0.0.1, port: %d, timeout: 1s}\n", e, port[e]
      print "meters:"
      spread = int(iv / nu); if (spread > 100) spread = 100
      # every bus is a network bus: groups by rank (cfg_meter_phase_ms)
      step = int(iv / 10); if (step > 10) step = 10
      groups = int(ne / 100); if (groups > 10) groups = 10; if (groups < 2) step = 0
      if (groups < 1) groups = 1
      for (e = 1; e <= ne; e++)
        for (u = 1; u <= nu; u++) {
          id = sprintf("M%04d-%02d", e, u)
          printf "  - {id: %s, bus: e%04d, unit: %d, profile: %s, interval: %dms}\n", id, e, u, prof, iv
          printf "%s %d\n", id, (((e - 1) % groups) * step + (u - 1) * spread) % iv > phases
        }
    }' "$ports" >"$dir/site.yaml"
}

# collectd_conf DIR MQTT_PORT ENDPOINTS UNITS INTERVAL_MS PORTS_FILE: the
# same fleet for collectd: one Host block per endpoint, one Slave per unit,
# both values of the meter, published at QoS 1 to the same broker.
collectd_conf() {
  local dir=$1 mport=$2 ne=$3 nu=$4 iv=$5 ports=$6
  awk -v dir="$dir" -v mport="$mport" -v ne="$ne" -v nu="$nu" -v iv="$iv" '
    { port[NR] = $1 }
    END {
      secs = sprintf("%.3f", iv / 1000)
      print "Hostname \"bench\""
      print "FQDNLookup false"
      printf "BaseDir \"%s\"\n", dir
      printf "PIDFile \"%s/collectd.pid\"\n", dir
      print "TypesDB \"/usr/share/collectd/types.db\""
      printf "Interval %s\n", secs
      print "AutoLoadPlugin false"
      print "LoadPlugin modbus"
      print "LoadPlugin mqtt"
      print "<Plugin modbus>"
      print "  <Data \"flow\">\n    RegisterBase 0\n    RegisterType Float\n    RegisterCmd ReadHolding\n    Type gauge\n    Instance \"flow\"\n  </Data>"
      print "  <Data \"total\">\n    RegisterBase 2\n    RegisterType Uint32\n    RegisterCmd ReadHolding\n    Type gauge\n    Instance \"total\"\n  </Data>"
      for (e = 1; e <= ne; e++) {
        # The host name is the meter (one unit per endpoint in the shapes
        # collectd runs), so topics read collectd/METER/modbus-bench/gauge-flow.
        printf "  <Host \"M%04d-01\">\n    Address \"127.0.0.1\"\n    Port \"%d\"\n    Interval %s\n", e, port[e], secs
        for (u = 1; u <= nu; u++)
          printf "    <Slave %d>\n      Instance \"bench\"\n      Collect \"flow\"\n      Collect \"total\"\n    </Slave>\n", u
        print "  </Host>"
      }
      print "</Plugin>"
      print "<Plugin mqtt>"
      printf "  <Publish \"bench\">\n    Host \"127.0.0.1\"\n    Port \"%d\"\n    ClientId \"bench-collectd\"\n    QoS 1\n    Prefix \"collectd\"\n  </Publish>\n", mport
      print "</Plugin>"
    }' "$ports" >"$dir/collectd.conf"
}

# prepare_fleet DIR SHAPE: free ports (the broker's first) and the site file
# for SHAPE in DIR; sets NE NU IV (endpoints, units each, interval ms),
# METERS and MPORT.
prepare_fleet() {
  local dir=$1
  read -r NE NU IV < <(shape_of "$2")
  METERS=$((NE * NU))
  mkdir -p "$dir"
  "$TOOL" ports $((NE + 1)) >"$dir/ports.all"
  MPORT=$(head -n 1 "$dir/ports.all")
  tail -n +2 "$dir/ports.all" >"$dir/ports.txt"
  site_yaml "$dir" "$MPORT" "$NE" "$NU" "$IV" "$dir/ports.txt"
}

# phase_json NAME SYSTEM ... : assemble one phase's JSON from the analysis.
RESULTS=()

# run_fleet SYSTEM SHAPE [NAME]: one fleet phase (in OUT/NAME, default
# SYSTEM-SHAPE).
run_fleet() {
  local system=$1 shape=$2
  local name=${3:-$system-$shape}
  local dir="$OUT/$name"
  prepare_fleet "$dir" "$shape"
  local ne=$NE nu=$NU iv=$IV meters=$METERS mport=$MPORT
  echo "== $name: $meters meters ($ne endpoints x $nu units) every ${iv} ms, ${DURATION}s" >&2

  broker "$dir" "$mport"
  local topic='water/bench/+/reading' kind=ours
  if [ "$system" = collectd ]; then topic='collectd/#'; kind=collectd; fi
  subscriber "$dir" "$mport" "$topic"
  spawn "$dir" sim "$BIN/intake-sim" --config "$dir/site.yaml"
  local sim_pid=$LAST_PID
  wait_line "$dir/sim.out" '^ready' 60 "$sim_pid"

  local pid
  if [ "$system" = ours ]; then
    spawn "$dir" collector "$BIN/intake-collector" --config "$dir/site.yaml"
    pid=$LAST_PID
    wait_line "$dir/collector.log" 'broker connected' 60 "$pid"
  else
    collectd_conf "$dir" "$mport" "$ne" "$nu" "$iv" "$dir/ports.txt"
    spawn "$dir" collector "$COLLECTD" -f -C "$dir/collectd.conf"
    pid=$LAST_PID
    wait_line "$dir/sub.out" '^first' 60 "$pid"
  fi

  sleep "$WARMUP"
  local t0 c0 t1 c1 hwm alive=true
  t0=$(now_ms)
  c0=$(cpu_ticks "$pid")
  measure "$dir" "$pid" "$system"
  t1=$(now_ms)
  if kill -0 "$pid" 2>/dev/null; then
    c1=$(cpu_ticks "$pid")
    hwm=$(hwm_kb "$pid")
  else
    alive=false c1=$c0 hwm=0
    echo "run.sh: $name: the system under test died during the phase" >&2
  fi
  local sim_cpu broker_cpu
  sim_cpu=$(cpu_ticks "$sim_pid")
  broker_cpu=$(cpu_ticks "$BROKER_PID")
  # Readings polled before t1 still on their way are given GRACE seconds.
  sleep "$GRACE"
  stop "$pid" 30
  stop "$sim_pid"
  stop "$SUB_PID"
  stop "$BROKER_PID"

  local args=(--kind "$kind" --records "$dir/records.bin" --topics "$dir/topics.txt"
              --interval-ms "$iv" --from-ms "$t0" --to-ms "$t1")
  [ "$system" = ours ] && args+=(--phases "$dir/phases.txt")
  "$TOOL" analyze "${args[@]}" >"$dir/analysis.json"

  jq -n --arg name "$name" --arg system "$system" --arg shape "$shape" \
    --argjson meters "$meters" --argjson ne "$ne" --argjson nu "$nu" --argjson iv "$iv" \
    --argjson t0 "$t0" --argjson t1 "$t1" --argjson c0 "$c0" --argjson c1 "$c1" \
    --argjson tck "$CLK_TCK" --argjson hwm "$hwm" --argjson alive "$alive" \
    --slurpfile a "$dir/analysis.json" '
    $a[0] as $a
    | (($t1 - $t0) / 1000) as $w
    | ($meters * 1000 / $iv) as $exp
    | (($c1 - $c0) / $tck) as $cpu
    | {name: $name, system: $system, shape: $shape, meters: $meters,
       endpoints: $ne, units_per_endpoint: $nu, interval_ms: $iv,
       window_s: $w, expected_per_s: $exp,
       readings: $a.readings, readings_per_s: ($a.readings / $w),
       delivered_share: ($a.readings / $w / $exp),
       failed: (($alive | not) or ($a.readings / $w / $exp < 0.99)),
       cpu_s: $cpu,
       cpu_us_per_reading: (if $a.readings > 0 then $cpu * 1e6 / $a.readings else null end),
       peak_rss_kb: $hwm,
       lateness_ms: ($a.lateness_ms | {p50, p99, max}),
       latency_ms: ($a.latency_ms | {p50, p99, max})}' >"$dir/phase.json"
  jq -n --argjson s "$sim_cpu" --argjson b "$broker_cpu" --argjson tck "$CLK_TCK" \
    '{sim_cpu_s_total: ($s / $tck), broker_cpu_s_total: ($b / $tck)}' >"$dir/others.json"
  RESULTS+=("$dir/phase.json")
  jq -c '{name, readings_per_s, expected_per_s, cpu_us_per_reading, peak_rss_kb,
          lateness_ms, latency_ms, failed}' "$dir/phase.json" >&2
}

# ---------------------------------------------------------------------------
# Outage replay: BACKLOG undelivered readings in the store, then the broker
# comes back while the fleet keeps polling.

# run_outage [NAME [DELAY_MS]]: in OUT/NAME (default outage); with DELAY_MS
# the collector reaches the broker through ic-tcprelay adding DELAY_MS each
# way (the windows phase).
run_outage() {
  local name=${1:-outage} delay=${2:-0}
  local dir="$OUT/$name"
  prepare_fleet "$dir" outage
  local ne=$NE nu=$NU iv=$IV meters=$METERS mport=$MPORT
  # The broker's port: the collector's own (MPORT, in site.yaml), or with a
  # delayed link another one, the relay listening on MPORT.
  local bport=$mport
  if [ "$delay" -gt 0 ]; then
    while bport=$("$TOOL" ports 1); grep -qx "$bport" "$dir/ports.all"; do :; done
  fi
  echo "== $name: $BACKLOG undelivered readings, $meters meters live every ${iv} ms, ${DURATION}s${BROKER_EXTRA:+, $BROKER_EXTRA}$([ "$delay" -gt 0 ] && echo ", ${delay} ms each way")" >&2

  # The schema and the meters' rows come from the collector itself (run
  # once with neither broker nor meters); the backlog is then written in the
  # collector's schema, each meter's readings numbered from 1 with last_seq
  # advanced to match, as the collector would have left them.
  spawn "$dir" init "$BIN/intake-collector" --config "$dir/site.yaml"
  local pid=$LAST_PID
  wait_line "$dir/init.out" '^ready' 60 "$pid"
  stop "$pid"
  local per=$(((BACKLOG + meters - 1) / meters)) t_start
  t_start=$(($(now_ms) - per * iv - 60000))
  local t_fill
  t_fill=$(now_ms)
  sqlite3 -batch "$dir/readings.db" <<SQL
PRAGMA synchronous = NORMAL;
BEGIN;
DELETE FROM readings;
WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < $BACKLOG - 1),
     m(k, id) AS (SELECT row_number() OVER (ORDER BY id) - 1, id FROM meters)
INSERT INTO readings (meter, seq, ts_ms, fields, quality, delivered)
SELECT m.id, s.i / $meters + 1, $t_start + (s.i / $meters) * $iv,
       '{"flow_m3h":' || (100 + (s.i % 97)) || '.25,"total_m3":' || (1000 + s.i / $meters) || '}',
       'good', 0
FROM s JOIN m ON m.k = s.i % $meters;
UPDATE meters SET last_seq = (SELECT coalesce(max(seq), 0) FROM readings r WHERE r.meter = meters.id);
COMMIT;
SQL
  local rows
  rows=$(sqlite3 -batch -noheader "$dir/readings.db" 'SELECT count(*) FROM readings WHERE delivered = 0')
  echo "   backlog: $rows rows in $(( ($(now_ms) - t_fill) / 1000 )) s" >&2

  # The fleet and the collector first, the broker away: live readings join
  # the backlog until the broker comes back.
  spawn "$dir" sim "$BIN/intake-sim" --config "$dir/site.yaml"
  local sim_pid=$LAST_PID
  wait_line "$dir/sim.out" '^ready' 60 "$sim_pid"
  spawn "$dir" collector "$BIN/intake-collector" --config "$dir/site.yaml"
  pid=$LAST_PID
  wait_line "$dir/collector.out" '^ready' 60 "$pid"
  sleep "$WARMUP"

  broker "$dir" "$bport"
  local relay_pid=""
  if [ "$delay" -gt 0 ]; then
    mkdir -p "$dir/relay"
    spawn "$dir" relay "$BUILD/bench/ic-tcprelay" "$mport" "$bport" "$dir/relay" "$delay"
    relay_pid=$LAST_PID
    wait_line "$dir/relay.out" '^ready' 10 "$relay_pid"
  fi
  # Every topic: the readings are told apart by topic in the analysis, and
  # the windows phase counts all that went through the broker's window.
  subscriber "$dir" "$bport" 'water/#'
  wait_line "$dir/collector.log" 'broker connected' 60 "$pid"
  local t0 c0 t1 c1 hwm alive=true
  t0=$(now_ms)
  c0=$(cpu_ticks "$pid")
  measure "$dir" "$pid" ours
  t1=$(now_ms)
  if kill -0 "$pid" 2>/dev/null; then
    c1=$(cpu_ticks "$pid")
    hwm=$(hwm_kb "$pid")
  else
    alive=false c1=$c0 hwm=0
  fi
  sleep "$GRACE"
  stop "$pid" 30
  stop "$sim_pid"
  [ -z "$relay_pid" ] || stop "$relay_pid"
  stop "$SUB_PID"
  stop "$BROKER_PID"
  local left
  left=$(sqlite3 -batch -noheader "$dir/readings.db" "SELECT count(*) FROM readings WHERE delivered = 0 AND ts_ms < $t0")

  "$TOOL" analyze --kind ours --records "$dir/records.bin" --topics "$dir/topics.txt" \
    --interval-ms "$iv" --from-ms "$t0" --to-ms "$t1" --phases "$dir/phases.txt" >"$dir/analysis.json"
  jq -n --arg name "$name" --argjson meters "$meters" --argjson ne "$ne" --argjson nu "$nu" \
    --argjson iv "$iv" --argjson t0 "$t0" --argjson t1 "$t1" --argjson c0 "$c0" --argjson c1 "$c1" \
    --argjson tck "$CLK_TCK" --argjson hwm "$hwm" --argjson alive "$alive" \
    --argjson backlog "$rows" --argjson left "$left" --slurpfile a "$dir/analysis.json" '
    $a[0] as $a
    | (($t1 - $t0) / 1000) as $w
    | ($meters * 1000 / $iv) as $exp
    | (($c1 - $c0) / $tck) as $cpu
    | {name: $name, system: "ours", shape: "outage", meters: $meters,
       endpoints: $ne, units_per_endpoint: $nu, interval_ms: $iv,
       window_s: $w, expected_per_s: $exp,
       readings: $a.readings, readings_per_s: ($a.readings / $w),
       delivered_share: ($a.readings / $w / $exp),
       failed: (($alive | not) or ($a.readings / $w / $exp < 0.99)),
       cpu_s: $cpu,
       cpu_us_per_reading: (if $a.readings + $a.historical_in_window > 0
                            then $cpu * 1e6 / ($a.readings + $a.historical_in_window) else null end),
       peak_rss_kb: $hwm,
       lateness_ms: ($a.lateness_ms | {p50, p99, max}),
       latency_ms: ($a.latency_ms | {p50, p99, max}),
       outage: {backlog: $backlog, drained_in_window: $a.historical_in_window,
                # Over the span the replay ran in the window: a backlog that
                # is gone before the window ends is not diluted by the rest.
                drain_per_s: ((($a.historical_last_ms - $a.historical_first_ms) / 1000) as $span
                  | if $span >= 1 then $a.historical_in_window / $span else $a.historical_per_s end),
                drain_span_s: (($a.historical_last_ms - $a.historical_first_ms) / 1000),
                drain_peak_per_s: $a.historical_peak_per_s,
                # Every message (readings live and replayed, states, reports)
                # that reached the subscriber from the start of the window to the
                # end of the replay (the whole window while a backlog is left):
                # what the window of the broker carried.
                messages_per_s: ((($a.historical_last_ms - $t0) / 1000) as $span
                  | if $left == 0 and $span >= 1 then $a.arrived_to_historical_last / $span
                    else $a.arrived_in_window / $w end),
                backlog_left: $left,
                seconds_to_drain: (if $a.historical_per_s > 0 then $backlog / $a.historical_per_s else null end)}}
    | .outage.seconds_to_drain = (if .outage.drain_per_s > 0 then .outage.backlog / .outage.drain_per_s else null end)' \
    >"$dir/phase.json"
  RESULTS+=("$dir/phase.json")
  jq -c '{name, readings_per_s, expected_per_s, outage, lateness_ms, latency_ms, failed}' "$dir/phase.json" >&2
}

# ---------------------------------------------------------------------------
# Serial bus: 32 meters on one emulated 9600 baud line, polled as fast as it
# allows (every 100 ms, the shortest interval the configuration takes).

run_serial() {
  local name=serial dir="$OUT/serial"
  local nm=32 iv=100 baud=9600
  mkdir -p "$dir"
  echo "== serial: $nm meters on one ${baud} baud RTU line (wire time emulated), ${DURATION}s" >&2
  local mport
  mport=$("$TOOL" ports 1)
  {
    echo "site: {id: bench}"
    echo "mqtt: {url: \"mqtt://127.0.0.1:$mport\", client_id: bench-gw}"
    echo "storage: {path: $dir/readings.db}"
    echo "reports: {periods: [hourly]}"
    echo "sim: {control: $dir/sim.sock}"
    echo "buses:"
    echo "  - {id: line1, transport: rtu, device: $dir/ttyBENCH, baud: $baud, parity: none,"
    echo "     data_bits: 8, stop_bits: 1, timeout: 200ms, sim_wire_time: true}"
    echo "meters:"
    local u
    for u in $(seq 1 $nm); do
      printf '  - {id: S%02d, bus: line1, unit: %d, profile: %s, interval: %dms}\n' "$u" "$u" "$PROFILE" "$iv"
    done
  } >"$dir/site.yaml"
  : >"$dir/phases.txt"
  local spread=$((iv / nm))
  for u in $(seq 1 $nm); do printf 'S%02d %d\n' "$u" $(((u - 1) * spread % iv)) >>"$dir/phases.txt"; done

  broker "$dir" "$mport"
  subscriber "$dir" "$mport" 'water/bench/+/reading'
  spawn "$dir" sim "$BIN/intake-sim" --config "$dir/site.yaml"
  local sim_pid=$LAST_PID
  wait_line "$dir/sim.out" '^ready' 30 "$sim_pid"
  # How long the emulated line takes for one exchange (request, silence,
  # answer), timed from outside before the collector opens the line (the
  # median of 20): the emulator is a little slower than the physical line
  # (a few tenths of a millisecond of timer and scheduling latency), and this
  # separates its share from the collector's.
  local probe_us
  probe_us=$(for _ in $(seq 1 20); do
      "$BUILD/bench/ic-simclient" rtt rtu "$dir/ttyBENCH" 1 "$PROFILE_REGS" || true
    done | awk '$1 == "rtt_us" {print $2}' | sort -n |
      awk '{v[NR] = $1} END {print (NR ? v[int((NR + 1) / 2)] : 0)}') # the median
  spawn "$dir" collector "$BIN/intake-collector" --config "$dir/site.yaml"
  local pid=$LAST_PID
  wait_line "$dir/collector.log" 'broker connected' 30 "$pid"
  sleep "$WARMUP"
  sim_requests() {
    "$BIN/intake-sim" ctl --socket "$dir/sim.sock" status |
      awk '{for (i = 1; i <= NF; i++) if ($i ~ /^requests=/) {sub("requests=", "", $i); n += $i}} END {print n + 0}'
  }
  local t0 c0 r0 t1 c1 r1 hwm
  t0=$(now_ms)
  c0=$(cpu_ticks "$pid")
  r0=$(sim_requests)
  measure "$dir" "$pid" ours
  t1=$(now_ms)
  r1=$(sim_requests)
  c1=$(cpu_ticks "$pid")
  hwm=$(hwm_kb "$pid")
  sleep "$GRACE"
  stop "$pid" 30
  stop "$sim_pid"
  stop "$SUB_PID"
  stop "$BROKER_PID"
  "$TOOL" analyze --kind ours --records "$dir/records.bin" --topics "$dir/topics.txt" \
    --interval-ms "$iv" --from-ms "$t0" --to-ms "$t1" --phases "$dir/phases.txt" >"$dir/analysis.json"

  # The physical bound. The planner needs one request for the profile's
  # PROFILE_REGS contiguous registers (at most 125 per read). On the wire:
  # request = unit + function + address(2) + count(2) + CRC(2) = 8 bytes;
  # response = unit + function + byte count + 2 x registers + CRC(2);
  # each frame is followed by at least 3.5 characters of silence; a
  # character is start + 8 data + parity + stop bits (8N1: 10 bits).
  local planner_min=$(((PROFILE_REGS + 124) / 125))
  local req_bytes=8 resp_bytes=$((5 + 2 * PROFILE_REGS)) bits=10
  jq -n --arg name "$name" --argjson nm "$nm" --argjson iv "$iv" --argjson t0 "$t0" --argjson t1 "$t1" \
    --argjson c0 "$c0" --argjson c1 "$c1" --argjson tck "$CLK_TCK" --argjson hwm "$hwm" \
    --argjson r0 "$r0" --argjson r1 "$r1" --argjson baud "$baud" --argjson bits "$bits" \
    --argjson req "$req_bytes" --argjson resp "$resp_bytes" --argjson pmin "$planner_min" \
    --argjson probe_us "$probe_us" --slurpfile a "$dir/analysis.json" '
    $a[0] as $a
    | (($t1 - $t0) / 1000) as $w
    | (($req + $resp + 7) * $bits / $baud * $pmin) as $poll_s
    | ((($probe_us / 1e6) + 3.5 * $bits / $baud) * $pmin) as $emu_s
    | (1 / $poll_s) as $bound
    | ($a.readings / $w) as $rate
    | (($c1 - $c0) / $tck) as $cpu
    | {name: $name, system: "ours", shape: "serial", meters: $nm, endpoints: 1,
       units_per_endpoint: $nm, interval_ms: $iv, window_s: $w,
       expected_per_s: $bound, readings: $a.readings, readings_per_s: $rate,
       delivered_share: ($rate / $bound), failed: false,
       cpu_s: $cpu,
       cpu_us_per_reading: (if $a.readings > 0 then $cpu * 1e6 / $a.readings else null end),
       peak_rss_kb: $hwm,
       lateness_ms: ($a.lateness_ms | {p50, p99, max}),
       latency_ms: ($a.latency_ms | {p50, p99, max}),
       serial: {baud: $baud, bits_per_char: $bits, request_bytes: $req, response_bytes: $resp,
                silent_chars_per_exchange: 7, wire_ms_per_poll: ($poll_s * 1000),
                bound_polls_per_s: $bound, polls_per_s: $rate, share_of_bound: ($rate / $bound),
                requests: ($r1 - $r0),
                requests_per_poll: (if $a.readings > 0 then ($r1 - $r0) / $a.readings else null end),
                planner_min_requests: $pmin,
                emulated_exchange_ms: ($probe_us / 1000),
                emulated_bound_polls_per_s: (if $probe_us > 0 then 1 / $emu_s else null end),
                share_of_emulated_bound: (if $probe_us > 0 then $rate * $emu_s else null end)}}' >"$dir/phase.json"
  RESULTS+=("$dir/phase.json")
  jq -c '{name, serial, lateness_ms, failed}' "$dir/phase.json" >&2
}

# ---------------------------------------------------------------------------
# The broker's window: MQTT 5 Receive Maximum (mosquitto's
# max_inflight_messages, the only setting changed) at each of WINDOW_RMS.
# Live: the 1,000 meters x 100 ms fleet. Replay: the outage phase's backlog,
# and the peer (ic-pahopeer, a bare paho publisher keeping the same window
# full) on a broker set up the same way, for the round trip and the rate the
# window allows on that link. Then the replay once more at RELAY_RM through
# a relay adding RELAY_DELAY_MS each way.

# windows_stages: the phase folders of the windows phase, in order.
windows_stages() {
  local rm
  if stage_on live; then for rm in $WINDOW_RMS; do echo "windows-live-rm$rm"; done; fi
  if stage_on replay; then for rm in $WINDOW_RMS; do echo "windows-replay-rm$rm"; done; fi
  if stage_on relay; then echo "windows-relay-rm$RELAY_RM"; fi
}

# stage_on NAME: NAME is one of WINDOW_STAGES.
stage_on() { [[ " $WINDOW_STAGES " == *" $1 "* ]]; }

# peer_link DIR DELAY_MS: the peer alone against a broker with the stage's
# settings (BROKER_EXTRA) and its own subscriber, directly or through a relay
# adding DELAY_MS each way: first the bare round trip (a window of 1,
# DIR/peer-rtt.json), then the window full (DIR/peer.json).
peer_link() {
  local top=$1 delay=$2
  local dir=$top/peer
  mkdir -p "$dir"
  "$TOOL" ports 2 >"$dir/ports.txt"
  local bport lport cport relay_pid="" rc=0
  bport=$(sed -n 1p "$dir/ports.txt")
  lport=$(sed -n 2p "$dir/ports.txt")
  cport=$bport
  broker "$dir" "$bport"
  subscriber "$dir" "$bport" 'bench/peer'
  if [ "$delay" -gt 0 ]; then
    mkdir -p "$dir/relay"
    spawn "$dir" relay "$BUILD/bench/ic-tcprelay" "$lport" "$bport" "$dir/relay" "$delay"
    relay_pid=$LAST_PID
    wait_line "$dir/relay.out" '^ready' 10 "$relay_pid"
    cport=$lport
  fi
  local n_rtt=$PEER_RTT_N n_full=$PEER_N
  if [ "$delay" -gt 0 ]; then n_rtt=$PEER_RELAY_RTT_N n_full=$PEER_RELAY_N; fi
  echo "   peer: $n_rtt messages with a window of 1, then $n_full with the window full" >&2
  "$BUILD/bench/ic-pahopeer" -p "$cport" -t bench/peer -i "bench-peer-$$" -n "$n_rtt" --window 1 \
    >"$top/peer-rtt.json" 2>"$dir/peer-rtt.log" || rc=1
  [ "$rc" -ne 0 ] || "$BUILD/bench/ic-pahopeer" -p "$cport" -t bench/peer -i "bench-peer-$$" -n "$n_full" \
    >"$top/peer.json" 2>"$dir/peer.log" || rc=1
  [ -z "$relay_pid" ] || stop "$relay_pid"
  stop "$SUB_PID"
  stop "$BROKER_PID"
  if [ "$rc" -ne 0 ]; then
    echo "run.sh: the peer failed: see $dir/peer*.log" >&2
    return 1
  fi
  jq -c '{peer_rtt_ms: .rtt_ms}' "$top/peer-rtt.json" >&2
  jq -c '{peer_window: .window, peer_msgs_per_s: .msgs_per_s, rtt_ms}' "$top/peer.json" >&2
}

# windows_tag DIR STAGE RM DELAY_MS: mark a stage's phase.json as the
# windows phase's, with the peer's figures and the ratios.
windows_tag() {
  local dir=$1 stage=$2 rm=$3 delay=$4
  local crm
  crm=$(grep -o 'receive maximum [0-9]*' "$dir/collector.log" | tail -n 1 | awk '{print $3}')
  # The collector's own PUBLISH to PUBACK round trip at the end of its
  # replay, from its "replay done" line (median, ms).
  local own
  own=$(grep -o 'PUBLISH to PUBACK median [0-9.]* ms' "$dir/collector.log" | tail -n 1 | awk '{print $5}')
  # ...and how full it kept the window: messages outstanding on average,
  # and the share of the time the window had room with nothing to send.
  local occ starved
  occ=$(grep -o '[0-9.]* outstanding on average' "$dir/collector.log" | tail -n 1 | awk '{print $1}')
  starved=$(grep -o 'room with nothing to send [0-9.]* %' "$dir/collector.log" | tail -n 1 | awk '{print $6}')
  local peer=null peer_rtt=null
  [ -s "$dir/peer.json" ] && peer=$(cat "$dir/peer.json")
  [ -s "$dir/peer-rtt.json" ] && peer_rtt=$(cat "$dir/peer-rtt.json")
  jq --arg stage "$stage" --argjson rm "$rm" --argjson delay "$delay" --argjson crm "${crm:-null}" \
    --argjson peer "$peer" --argjson rtt "$peer_rtt" --argjson own "${own:-null}" \
    --argjson occ "${occ:-null}" --argjson starved "${starved:-null}" '
    def ratio($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
    (.outage.messages_per_s // null) as $rate
    | (if $peer != null and $peer.rtt_ms.p50 > 0 then $rm / ($peer.rtt_ms.p50 / 1000) else null end) as $wr
    | (if $rtt != null and $rtt.rtt_ms.p50 > 0 then $rm / ($rtt.rtt_ms.p50 / 1000) else null end) as $wb
    | (if $own != null and $own > 0 then $rm / ($own / 1000) else null end) as $wo
    | .shape = "windows"
    | .windows = {stage: $stage, receive_maximum: $rm, link_delay_ms_each_way: $delay,
                  collector_receive_maximum: $crm,
                  messages_per_s: $rate,
                  peer: $peer, peer_bare_rtt: $rtt,
                  window_over_rtt: $wr, window_over_bare_rtt: $wb,
                  own_rtt_p50_ms: $own, window_over_own_rtt: $wo,
                  own_outstanding_avg: $occ, own_starved_pct: $starved,
                  share_of_window_own_rtt: ratio($rate; $wo),
                  share_of_window_rtt: ratio($rate; $wr),
                  share_of_window_bare_rtt: ratio($rate; $wb),
                  share_of_peer: ratio($rate; $peer.msgs_per_s)}' \
    "$dir/phase.json" >"$dir/phase.json.tmp" && mv "$dir/phase.json.tmp" "$dir/phase.json"
  jq -c '{name, windows: (.windows | del(.peer, .peer_bare_rtt))}' "$dir/phase.json" >&2
}

run_windows() {
  local rm rc=0
  if stage_on live; then
    for rm in $WINDOW_RMS; do
      BROKER_EXTRA="max_inflight_messages $rm"
      if run_fleet ours 1000 "windows-live-rm$rm"; then
        windows_tag "$OUT/windows-live-rm$rm" live "$rm" 0
      else
        rc=1
      fi
    done
  fi
  if stage_on replay; then
    for rm in $WINDOW_RMS; do
      BROKER_EXTRA="max_inflight_messages $rm"
      echo "== windows-replay-rm$rm: the peer on the same link" >&2
      if peer_link "$OUT/windows-replay-rm$rm" 0 && run_outage "windows-replay-rm$rm"; then
        windows_tag "$OUT/windows-replay-rm$rm" replay "$rm" 0
      else
        rc=1
      fi
    done
  fi
  if stage_on relay; then
    BROKER_EXTRA="max_inflight_messages $RELAY_RM"
    echo "== windows-relay-rm$RELAY_RM: the peer on the same link (${RELAY_DELAY_MS} ms each way)" >&2
    if peer_link "$OUT/windows-relay-rm$RELAY_RM" "$RELAY_DELAY_MS" &&
       run_outage "windows-relay-rm$RELAY_RM" "$RELAY_DELAY_MS"; then
      windows_tag "$OUT/windows-relay-rm$RELAY_RM" relay "$RELAY_RM" "$RELAY_DELAY_MS"
    else
      rc=1
    fi
  fi
  BROKER_EXTRA=""
  return "$rc"
}

# ---------------------------------------------------------------------------
# Results: JSON, then the table. summarize DIR reads DIR/*/phase.json in the
# order of the phases, so a run cut short can still be summed up
# (bench/run.sh --summarize DIR).

summarize() {
  local OUT=$1 results=() p
  for p in $ALL_PHASES; do
    if [ "$p" = windows ]; then
      for s in $(windows_stages); do
        [ -f "$OUT/$s/phase.json" ] && results+=("$OUT/$s/phase.json")
      done
      continue
    fi
    [ -f "$OUT/$p/phase.json" ] && results+=("$OUT/$p/phase.json")
  done
  [ "${#results[@]}" -gt 0 ] || { echo "run.sh: no phase results in $OUT" >&2; return 1; }
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo true || echo false)
  cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  local dur=$DURATION warm=$WARMUP perf=false
  if [ -f "$OUT/run.json" ] && jq -e .commit "$OUT/run.json" >/dev/null; then
    commit=$(jq -r .commit "$OUT/run.json")
    dirty=$(jq .dirty "$OUT/run.json")
  fi
  if [ -f "$OUT/run.json" ]; then
    dur=$(jq .duration_s "$OUT/run.json")
    warm=$(jq .warmup_s "$OUT/run.json")
    perf=$(jq .perf "$OUT/run.json")
  fi
  jq -s --arg commit "$commit" --argjson dirty "$dirty" --arg cpu "$cpu_model" \
    --arg kernel "$(uname -r)" --argjson ncpu "$(nproc)" --argjson dur "$dur" \
    --argjson warm "$warm" --argjson perf "$perf" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --arg collectd "$(dpkg-query -W -f='${Version}' collectd-core 2>/dev/null || echo unknown)" '
    . as $ph
    | def peer($p): ($ph | map(select(.system == "collectd" and .shape == $p.shape)) | first);
      def ratio($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
    {schema: 1, date: $date, commit: $commit, dirty: $dirty,
     machine: {cpu: $cpu, cpus: $ncpu, kernel: $kernel}, collectd_version: $collectd,
     duration_s: $dur, warmup_s: $warm, profiled: $perf,
     phases: [ $ph[] | . + {ratio_to_collectd:
       (if .system == "ours" and peer(.) != null then
          (peer(.)) as $c
          | if .failed or $c.failed then null else
            {cpu_per_reading: ratio(.cpu_us_per_reading; $c.cpu_us_per_reading),
             peak_rss: ratio(.peak_rss_kb; $c.peak_rss_kb),
             lateness_p99: ratio(.lateness_ms.p99; $c.lateness_ms.p99),
             latency_p50: ratio(.latency_ms.p50; $c.latency_ms.p50),
             latency_p99: ratio(.latency_ms.p99; $c.latency_ms.p99)} end
        else null end)} ] }' "${results[@]}" >"$OUT/results.json.tmp"

  # Targets, from the product requirement.
  jq '. as $r
    | def ph($n): ($r.phases | map(select(.name == $n)) | first);
      def t($name; $value; $limit; $pass): {target: $name, value: $value, limit: $limit, pass: $pass};
    . + {targets: [
      (["10", "100", "1000"][] as $s | ph("ours-" + $s) as $o | ph("collectd-" + $s) as $c
        | select($o != null and $c != null)
        | t("cpu per reading <= 0.5 x collectd at " + $s + " meters"; $o.ratio_to_collectd.cpu_per_reading; 0.5;
            ($o.ratio_to_collectd.cpu_per_reading != null and $o.ratio_to_collectd.cpu_per_reading <= 0.5))),
      (ph("ours-1000") | select(. != null)
        | t("peak RSS < 20 MB at 1,000 meters"; (.peak_rss_kb / 1024); 20; (.peak_rss_kb / 1024 < 20 and (.failed | not)))),
      # Growth per meter within one fleet layout (one endpoint per meter,
      # 10 to 1,000), and from 1,000 endpoints to 5,000 meters on 100.
      ([ph("ours-10"), ph("ours-1000")], [ph("ours-1000"), ph("ours-5000")]
        | select(all(. != null)) | .[0] as $a | .[1] as $b
        | (($b.peak_rss_kb - $a.peak_rss_kb) / ($b.meters - $a.meters)) as $g
        | t("RSS growth < 4 KB per added meter (" + $a.name + " to " + $b.name + ")"; $g; 4; $g < 4)),
      (ph("ours-1000") | select(. != null)
        | t("p99 poll lateness < 20 ms at 1,000 meters x 100 ms"; .lateness_ms.p99; 20; (.lateness_ms.p99 < 20 and (.failed | not))),
          t("p99 poll-to-subscriber < 300 ms at 1,000 meters x 100 ms"; .latency_ms.p99; 300; (.latency_ms.p99 < 300 and (.failed | not)))),
      (ph("outage") | select(. != null)
        | t("outage replay >= 20,000 messages/s"; .outage.drain_per_s; 20000; .outage.drain_per_s >= 20000),
          t("live polls on time during replay (p99 lateness < 20 ms)"; .lateness_ms.p99; 20; (.lateness_ms.p99 < 20 and (.failed | not)))),
      (ph("serial") | select(. != null)
        | t("serial bus >= 95 % of the wire-time bound"; (.serial.share_of_bound * 100); 95; .serial.share_of_bound >= 0.95),
          t("serial requests per poll = planner minimum"; .serial.requests_per_poll; .serial.planner_min_requests;
            (.serial.requests_per_poll != null and .serial.requests_per_poll <= .serial.planner_min_requests * 1.01))),
      # The windows phase at a Receive Maximum of 20 (mosquitto as installed).
      (ph("windows-live-rm20") | select(. != null)
        | t("Receive Maximum 20: delivered >= 99 % at 1,000 meters x 100 ms"; (.delivered_share * 100); 99;
            .delivered_share >= 0.99),
          t("Receive Maximum 20: p99 poll-to-subscriber < 200 ms at 1,000 meters x 100 ms"; .latency_ms.p99; 200;
            (.latency_ms.p99 < 200 and (.failed | not)))),
      (ph("windows-replay-rm20") | select(. != null)
        | t("Receive Maximum 20: replay >= 90 % of window / its own median PUBLISH-to-PUBACK RTT (the window kept full)";
            (if .windows.share_of_window_own_rtt == null then null else .windows.share_of_window_own_rtt * 100 end); 90;
            (.windows.share_of_window_own_rtt != null and .windows.share_of_window_own_rtt >= 0.9)),
          t("Receive Maximum 20: replay >= 90 % of window / median RTT (loopback, RTT with the window full)";
            (if .windows.share_of_window_rtt == null then null else .windows.share_of_window_rtt * 100 end); 90;
            (.windows.share_of_window_rtt != null and .windows.share_of_window_rtt >= 0.9))),
      (ph("windows-relay-rm20") | select(. != null)
        | t("Receive Maximum 20: replay over the 100 ms link >= 90 % of window / RTT";
            (if .windows.share_of_window_bare_rtt == null then null else .windows.share_of_window_bare_rtt * 100 end); 90;
            (.windows.share_of_window_bare_rtt != null and .windows.share_of_window_bare_rtt >= 0.9)))
    ]}' "$OUT/results.json.tmp" >"$OUT/results.json"
  rm -f "$OUT/results.json.tmp"

  "$ROOT/bench/table.sh" "$OUT/results.json"
  echo
  echo "JSON: $OUT/results.json"
}

# ---------------------------------------------------------------------------

for p in "${selected[@]}"; do
  case $p in
    ours-* | collectd-*) run_fleet "${p%%-*}" "${p#*-}" || echo "run.sh: phase $p failed to run" >&2 ;;
    outage) run_outage || echo "run.sh: phase outage failed to run" >&2 ;;
    serial) run_serial || echo "run.sh: phase serial failed to run" >&2 ;;
    windows) run_windows || echo "run.sh: phase windows failed to run (in part)" >&2 ;;
  esac
done

summarize "$OUT"
