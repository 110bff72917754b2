#!/usr/bin/env bash
# Smoke run of a cross build under emulation: intake-collector and intake-sim
# built for another architecture run under qemu-user; the daemon polls
# intake-sim's meters on all three transports for 10 s and publishes to the
# build machine's mosquitto on a free loopback port. Every reading stored is
# delivered, the subscriber holds exactly the database's readings with
# intake-sim's values, and SIGTERM ends the daemon with exit 0, every reading
# taken committed.
#
#   IC_CROSS_BUILD=build-arm64 IC_EMULATOR=qemu-aarch64-static tests/cross/smoke.sh
#
# IC_CROSS_BUILD: the cross build folder (its bin/ and tests/ are used);
# IC_EMULATOR: the program that runs them (empty: run them directly, as for a
# native build). scripts/cross.sh runs this after the unit tests.
source "$(dirname "$0")/../integration/lib.sh"

: "${IC_CROSS_BUILD:?the cross build folder}"
build=$(cd "$IC_CROSS_BUILD" && pwd)
emu=${IC_EMULATOR-}
if [ -n "$emu" ]; then emu=$(command -v "$emu"); fi
# The product's programs, and the test's own free-port finder, each behind a
# one-line wrapper that execs the emulator (so the PID a test holds is the
# emulated program's).
mkdir -p "$T/bin"
for p in bin/intake-collector bin/intake-sim tests/ic-freeport; do
  printf '#!/bin/sh\nexec %s %q "$@"\n' "$emu" "$build/$p" >"$T/bin/${p##*/}"
  chmod +x "$T/bin/${p##*/}"
done
IC_BIN=$T/bin
IC_TEST_BIN=$T/bin
if command -v file >/dev/null; then
  echo "# $(file -b "$build/bin/intake-collector" | cut -d, -f1-2), run by ${emu:-the build machine}"
fi

read -r MQTT_PORT TCP_PORT ROT_PORT < <(free_ports 3)
cat >"$T/site.yaml" <<YAML
site: {id: smoke}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT", client_id: smoke-gw}
storage: {path: ./readings.db}
sim: {control: ./sim.sock}
buses:
  - {id: line1, transport: rtu, device: ./ttySIM0, baud: 19200, timeout: 1s}
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 1s}
  - {id: dtu, transport: rtu-over-tcp, host: 127.0.0.1, port: $ROT_PORT, timeout: 2s}
meters:
  - {id: R-TUF, bus: line1, unit: 1, profile: tuf2000m, interval: 1s,
     sim: {fixed: {flow_m3h: 36.625, total_m3: 1234.5, net_total_m3: 1000.25}}}
  - {id: T-MAG, bus: plc, unit: 1, profile: mag-00h, interval: 1s,
     sim: {fixed: {flow_m3h: 80.5, total_m3: 4321, velocity_ms: 0.5}}}
  - {id: T-OC, bus: plc, unit: 2, profile: open-channel, interval: 1s,
     sim: {fixed: {flow_m3h: 720, level_m: 1.25, velocity_ms: 1.5, total_m3: 123456789}}}
  - {id: D-TUF, bus: dtu, unit: 5, profile: tuf2000m, interval: 1s,
     sim: {fixed: {flow_m3h: 12.5, total_m3: 7.75, net_total_m3: 7.75, velocity_ms: 0.25}}}
YAML
METERS="R-TUF T-MAG T-OC D-TUF"
DB="$T/readings.db"

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/#'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 30 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 30 "$collector_PID"

# Ten seconds of polling at one reading a second per meter.
sleep 10
messages sub reading >"$T/readings.json"
for m in $METERS; do
  n=$(jq -s --arg m "$m" '[.[] | select(.meter == $m)] | length' "$T/readings.json")
  check "$m: readings arrive ($n in 10 s, at least 5)" test "$n" -ge 5
done

# Every value is the one intake-sim holds, decoded on the target.
expect_value() {
  local bad
  bad=$(jq -s --arg m "$1" --arg f "$2" --argjson w "$3" \
    '[.[] | select(.meter == $m) | .[$f] | select(. != $w)] | length' "$T/readings.json")
  expect_eq "$1 $2 is $3 in every message" 0 "$bad"
}
expect_value R-TUF flow_m3h 36.625
expect_value R-TUF net_total_m3 1000.25
expect_value T-MAG total_m3 4321
expect_value T-OC level_m 1.25
expect_value T-OC total_m3 123456789
expect_value D-TUF flow_m3h 12.5
expect_eq "every reading is good" 0 "$(jq -s '[.[] | select(.quality != "good")] | length' "$T/readings.json")"
check "the gateway state is published and online" \
  grep -q '^water/smoke/gateway/state {"online":true' "$T/sub.out"

# The meters fall silent; the outbox drains. Every stored reading is
# delivered and the subscriber holds exactly them.
for m in $METERS; do
  "$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" fault "$m" offline >/dev/null
done
drained() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" = 0 ]; }
check "every stored reading delivered" wait_until 30 "every stored reading delivered" drained
settled() {
  [ "$(messages sub reading | jq -s 'length')" = "$(sql "$DB" 'SELECT count(*) FROM readings')" ]
}
check "the subscriber has every stored reading" wait_until 30 "the subscriber has every stored reading" settled
rows=$(sql "$DB" "SELECT meter || '/' || seq FROM readings" | LC_ALL=C sort -u | tr '\n' ' ')
msgs=$(messages sub reading | jq -r '"\(.meter)/\(.seq)"' | LC_ALL=C sort -u | tr '\n' ' ')
expect_eq "the readings on the broker are the database's, one for one" "$rows" "$msgs"
expect_eq "every row is delivered" 0 "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered != 1')"
echo "# $(sql "$DB" 'SELECT count(*) FROM readings') readings stored and delivered"

stop_pid "$collector_PID"
expect_eq "the daemon exits 0 on SIGTERM" 0 "$STOP_RC"
line=$(grep -E 'stopped after [0-9]+ polls' "$T/collector.log" || true)
taken=$(sed -E 's/.* ([0-9]+) readings taken.*/\1/' <<<"$line")
check "the daemon reports what it took and committed" test -n "$line"
expect_eq "every reading taken was committed" "$taken" "$(sql "$DB" 'SELECT count(*) FROM readings')"
stop_pid "$sim_PID"
finish
