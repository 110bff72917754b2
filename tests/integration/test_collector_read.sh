#!/usr/bin/env bash
# `intake-collector read` polls intake-sim's meters over all three transports
# (rtu on the pty, tcp, rtu-over-tcp) and decodes the values intake-sim was
# told to pin; faults switched at run time are classified by kind.
source "$(dirname "$0")/lib.sh"

read -r TCP_PORT ROT_PORT < <(free_ports 2)
cat >"$T/site.yaml" <<YAML
site: {id: read-test}
mqtt: {url: "mqtt://127.0.0.1:1883"}
storage: {path: ./readings.db}
sim: {control: ./sim.sock}
buses:
  - {id: line1, transport: rtu, device: ./ttySIM0, baud: 19200, parity: even, timeout: 300ms}
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
  - {id: dtu, transport: rtu-over-tcp, host: 127.0.0.1, port: $ROT_PORT, timeout: 300ms}
meters:
  - {id: R-TUF, bus: line1, unit: 1, profile: tuf2000m,
     sim: {fixed: {flow_m3h: 36.6254, total_m3: 1234.5, net_total_m3: -12.25}}}
  - {id: R-MAG, bus: line1, unit: 2, profile: mag-00h,
     sim: {fixed: {flow_m3h: 250, total_m3: 98765.25, velocity_ms: 0.75}}}
  - {id: T-MAG, bus: plc, unit: 1, profile: mag-00h,
     sim: {fixed: {flow_m3h: 80.5, total_m3: 4321}}}
  - {id: T-OC, bus: plc, unit: 2, profile: open-channel,
     sim: {fixed: {flow_m3h: 720, level_m: 1.25, total_m3: 123456789}}}
  - {id: D-TUF, bus: dtu, unit: 5, profile: tuf2000m,
     sim: {fixed: {flow_m3h: 12.5, total_m3: 7.75}}}
  - {id: D-OC, bus: dtu, unit: 6, profile: open-channel,
     sim: {fixed: {flow_m3h: 3600, total_m3: 200000001}}}
YAML

start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"

rc=0
"$IC_BIN/intake-collector" read --config "$T/site.yaml" --json >"$T/read.json" 2>"$T/read.log" || rc=$?
expect_eq "read exits 0 when every meter answers" 0 "$rc"

field() { jq -r --arg m "$1" --arg f "$2" 'select(.meter == $m) | .fields[$f]' "$T/read.json"; }
# Compare as numbers with a tolerance of float precision.
near() { jq -n --argjson a "$2" --argjson b "$3" '($a - $b) | fabs < (1e-6 * ([($b|fabs), 1] | max))' | grep -q true; }
expect_near() { if near "$1" "$2" "$3"; then ok "$1"; else not_ok "$1: expected $2, got $3"; fi; }

expect_near "rtu: R-TUF flow"        36.6254   "$(field R-TUF flow_m3h)"
expect_near "rtu: R-TUF total"       1234.5    "$(field R-TUF total_m3)"
expect_near "rtu: R-TUF net total"   -12.25    "$(field R-TUF net_total_m3)"
expect_near "rtu: R-MAG flow"        250       "$(field R-MAG flow_m3h)"
expect_near "rtu: R-MAG total"       98765.25  "$(field R-MAG total_m3)"
expect_near "rtu: R-MAG velocity"    0.75      "$(field R-MAG velocity_ms)"
expect_near "tcp: T-MAG flow"        80.5      "$(field T-MAG flow_m3h)"
expect_near "tcp: T-MAG total"       4321      "$(field T-MAG total_m3)"
expect_near "tcp: T-OC flow m3/h"    720       "$(field T-OC flow_m3h)"
expect_near "tcp: T-OC flow m3/s"    0.2       "$(field T-OC flow_m3s)"
expect_near "tcp: T-OC level"        1.25      "$(field T-OC level_m)"
expect_near "tcp: T-OC total"        123456789 "$(field T-OC total_m3)"
expect_near "rtu-over-tcp: D-TUF flow"  12.5   "$(field D-TUF flow_m3h)"
expect_near "rtu-over-tcp: D-TUF total" 7.75   "$(field D-TUF total_m3)"
expect_near "rtu-over-tcp: D-OC total"  200000001 "$(field D-OC total_m3)"
expect_eq "the TUF map is read in the planner's four requests" 4 \
  "$(jq -r 'select(.meter == "R-TUF") | .requests' "$T/read.json")"

ctl() { "$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" "$@" >/dev/null; }
err_of() { jq -r --arg m "$1" 'select(.meter == $m) | .error' "$T/read.json"; }
poll() { "$IC_BIN/intake-collector" read --config "$T/site.yaml" --json --meter "$1" >"$T/read.json" 2>>"$T/read.log" || true; }

ctl fault R-MAG offline;   poll R-MAG; expect_eq "rtu offline meter: timeout" timeout "$(err_of R-MAG)"
ctl fault R-MAG crc;       poll R-MAG; expect_eq "rtu bad CRC: crc" crc "$(err_of R-MAG)"
ctl fault R-MAG exception; poll R-MAG; expect_eq "rtu exception: exception" exception "$(err_of R-MAG)"
expect_eq "rtu exception code is 4" 4 "$(jq -r '.exception' "$T/read.json")"
ctl fault D-TUF crc;       poll D-TUF; expect_eq "rtu-over-tcp bad CRC: crc" crc "$(err_of D-TUF)"
ctl fault D-TUF offline;   poll D-TUF; expect_eq "rtu-over-tcp offline meter: timeout" timeout "$(err_of D-TUF)"
ctl fault D-TUF garbage;   poll D-TUF
case "$(err_of D-TUF)" in
  crc|malformed|timeout) ok "rtu-over-tcp garbage is a failed poll ($(err_of D-TUF))" ;;
  *) not_ok "rtu-over-tcp garbage: got $(err_of D-TUF)" ;;
esac
ctl fault T-MAG exception; poll T-MAG; expect_eq "tcp exception: exception" exception "$(err_of T-MAG)"
ctl fault T-MAG offline;   poll T-MAG; expect_eq "tcp offline meter: timeout" timeout "$(err_of T-MAG)"

for m in R-MAG D-TUF T-MAG; do ctl fault "$m" none; done
rc=0
"$IC_BIN/intake-collector" read --config "$T/site.yaml" --json >"$T/read.json" 2>>"$T/read.log" || rc=$?
expect_eq "every meter answers again once the faults clear" 0 "$rc"

# A bus nobody listens on: connection refused, and a clear human line.
read -r DEAD_PORT < <(free_ports 1)
sed "s/port: $TCP_PORT/port: $DEAD_PORT/" "$T/site.yaml" >"$T/dead.yaml"
if "$IC_BIN/intake-collector" read --config "$T/dead.yaml" --meter T-MAG >"$T/dead.txt" 2>&1; then
  not_ok "a refused connection must fail the read"
else
  check "a refused connection is reported as such" grep -q "connection_refused" "$T/dead.txt"
fi

check "intake-sim survived every fault" kill -0 "$sim_PID"
finish
