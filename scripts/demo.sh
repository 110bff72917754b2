#!/usr/bin/env bash
# The demo: install what is missing, build, then run the example site end to
# end on this machine: a mosquitto broker on a free loopback port, intake-sim
# playing the seven meters, and intake-collector polling them. It shows the
# live readings as an operator sees them with mosquitto_sub, takes one meter
# offline and brings it back, shows the reports the bureau's monitoring
# centre (ic-centre, SZY206) received, and stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
# ic-freeport and ic-centre are tools of the test tree: build it, also in a
# build folder configured without it before.
cmake -S . -B build -DIC_TESTS=ON >/dev/null
cmake --build build -j"$(nproc)" --target intake-collector intake-sim ic-freeport ic-centre >/dev/null

work=$(mktemp -d /tmp/intake-demo.XXXXXX)
mapfile -t ports < <(build/tests/ic-freeport 4)
export IC_MQTT_PORT=${ports[0]} IC_TCP_PORT=${ports[1]} IC_ROT_PORT=${ports[2]}
export IC_CENTRE_PORT=${ports[3]}
export IC_RTU_DEVICE="$work/ttyDEMO0" IC_SIM_CONTROL="$work/sim.sock" IC_DB="$work/demo.db"
site=config/examples/demo.yaml

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]+"${pids[@]}"}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# wait_line FILE PATTERN PID: until FILE has a matching line (PID must live).
wait_line() {
  for _ in $(seq 1 400); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { echo "demo: a process died; its log:"; cat "${1%.*}.log"; exit 1; }
    sleep 0.05
  done
  echo "demo: timed out waiting for '$2' in $1"
  exit 1
}
# show TOPICS SECONDS: what an operator's mosquitto_sub prints meanwhile.
show() {
  timeout "$2" mosquitto_sub -h 127.0.0.1 -p "$IC_MQTT_PORT" -t "$1" -v || true
}

echo "== checking the site file"
build/bin/intake-collector --check-config "$site"

echo "== starting mosquitto on 127.0.0.1:$IC_MQTT_PORT"
cat >"$work/mosquitto.conf" <<CONF
listener $IC_MQTT_PORT 127.0.0.1
allow_anonymous true
log_dest stderr
CONF
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.out" 2>"$work/mosquitto.log" &
pids+=($!)
wait_line "$work/mosquitto.log" " running" "${pids[-1]}"

echo "== starting the bureau's monitoring centre (ic-centre) on 127.0.0.1:$IC_CENTRE_PORT"
build/tests/ic-centre "$IC_CENTRE_PORT" "$work/centre.mode" >"$work/centre.out" 2>"$work/centre.log" &
pids+=($!)
wait_line "$work/centre.out" "^ready" "${pids[-1]}"

echo "== starting intake-sim (seven meters; KKY-02 is configured to never answer)"
build/bin/intake-sim --config "$site" >"$work/sim.out" 2>"$work/sim.log" &
pids+=($!)
wait_line "$work/sim.out" "^ready" "${pids[-1]}"

echo "== starting intake-collector (its log: $work/collector.log)"
build/bin/intake-collector --config "$site" --log-time >"$work/collector.out" 2>"$work/collector.log" &
collector=$!
pids+=($collector)
wait_line "$work/collector.out" "^ready" "$collector"

echo "== live readings, as an operator sees them (6 s)"
show 'water/kekeya/+/reading' 6

echo "== meter states (retained) after KKY-02's third failed poll"
show 'water/kekeya/+/state' 1

echo "== taking KKY-01 offline in the simulator"
build/bin/intake-sim ctl --socket "$IC_SIM_CONTROL" fault KKY-01 offline
wait_line "$work/collector.log" "meter KKY-01 offline" "$collector"
grep "meter KKY-01 offline" "$work/collector.log"
show 'water/kekeya/KKY-01/state' 1

echo "== bringing KKY-01 back"
build/bin/intake-sim ctl --socket "$IC_SIM_CONTROL" fault KKY-01 none
wait_line "$work/collector.log" "meter KKY-01 online" "$collector"
show 'water/kekeya/KKY-01/state' 1
show 'water/kekeya/KKY-01/reading' 3

echo "== the bureau's centre: each station's report, decoded (KKY-02 is AA, alarm D5)"
wait_line "$work/centre.out" '"function":"report"' "$collector"
grep '"function":"report"' "$work/centre.out" | tail -n 2 |
  jq -c '.frame | {station, meters: [.meters[] | {flow_m3s, volume_m3}], alarm, tp}'
echo "   (decode any frame the centre logged: intake-collector uplink-decode HEX...)"

echo "== stored readings per meter (sqlite3 $IC_DB)"
sqlite3 -header -column "$IC_DB" \
  "SELECT meter, count(*) AS readings, max(seq) AS last_seq, sum(delivered) AS delivered FROM readings GROUP BY meter"

echo "== stopping"
kill -TERM "$collector"
wait "$collector" && echo "intake-collector exited 0"
tail -n 1 "$work/collector.log"
