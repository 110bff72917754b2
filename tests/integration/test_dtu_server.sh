#!/usr/bin/env bash
# 4G DTUs that dial in (rtu-dtu buses on a DTU server). Three intake-sim DTUs
# share one port of the collector: one with a one-byte heartbeat, one with
# its registration in front of every packet, one plain; a fourth bus's DTU
# never dials. Each meter is polled at its interval with the values pinned
# in sim.fixed, also while heartbeats come between and inside answers; the
# silent bus's meter fails with not_connected and goes offline. Then: a DTU
# that reconnects leaving its old link half-open takes its line over; an
# unknown registration and a silent connection are closed and logged once;
# a thousand connections that never register stop nothing; a connection
# from outside the allow list is closed before it is read; a takeover storm
# from a second address is refused and counted while the real DTU keeps its
# line; a DTU that registers again from another address is marked in the
# gateway state; and a reload that moves the buses keeps the DTUs' lines.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT DTU_PORT METRICS_PORT DTU6_PORT < <(free_ports 4)
CLIENT="$IC_SOURCE_DIR/tests/tools/dtuclient.py"
head_yaml() {
  cat <<YAML
site: {id: canal}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
dtu_servers:
  - id: dtu-in
    listen: 127.0.0.1:$DTU_PORT
    register_timeout: 1s
    takeover_hold: 3s
    max_pending: 200
    allow: [127.0.0.1, 127.0.0.2/32]
  - {id: dtu-v6, listen: "[::]:$DTU6_PORT", idle_timeout: 2s}
YAML
}
# A DTU on the second server, over IPv6.
v6_bus() {
  echo "  - {id: canal-6, transport: rtu-dtu, server: dtu-v6, registration: KKY-DTU-06, timeout: 500ms}"
}
v6_meter() {
  echo "  - {id: M6, bus: canal-6, unit: 3, profile: tuf2000m, interval: 1s, sim: {fixed: {flow_m3h: 6.5}}}"
}
buses_yaml() {
  cat <<YAML
  - {id: canal-1, transport: rtu-dtu, server: dtu-in, registration: KKY-DTU-01,
     heartbeat: "hex:FE", sim_heartbeat_interval: 150ms, baud: 9600, timeout: 500ms}
  - {id: canal-2, transport: rtu-dtu, server: dtu-in, registration: "hex:AA0102",
     registration_every_packet: true, heartbeat: PING, sim_heartbeat_interval: 200ms,
     timeout: 500ms}
  - {id: canal-3, transport: rtu-dtu, server: dtu-in, registration: KKY-DTU-03,
     heartbeat: "hex:FEFE", timeout: 500ms}
YAML
}
meters_yaml() {
  cat <<YAML
  - {id: M1, bus: canal-1, unit: 1, profile: tuf2000m, interval: 1s,
     sim: {fixed: {flow_m3h: 36.625, total_m3: 1234.5, net_total_m3: 1000.25}}}
  - {id: M2, bus: canal-1, unit: 2, profile: mag-00h, interval: 1s,
     sim: {fixed: {flow_m3h: 250, total_m3: 98765.25, velocity_ms: 0.75}}}
  - {id: M3, bus: canal-2, unit: 7, profile: tuf2000m, interval: 1s,
     sim: {fixed: {flow_m3h: 12.5, total_m3: 7.75, net_total_m3: 7.75}}}
  - {id: M4, bus: canal-3, unit: 1, profile: mag-00h, interval: 1s,
     sim: {fixed: {flow_m3h: 80.5, total_m3: 4321, velocity_ms: 0.5}}}
YAML
}
{ head_yaml; echo "metrics: {listen: 127.0.0.1:$METRICS_PORT}"; echo "buses:"; buses_yaml
  echo "  - {id: canal-4, transport: rtu-dtu, server: dtu-in, registration: KKY-DTU-04}"
  v6_bus; echo "meters:"; meters_yaml
  echo "  - {id: M5, bus: canal-4, unit: 1, profile: mag-00h, interval: 1s}"
  v6_meter
} >"$T/site.yaml"
{ head_yaml; echo "sim: {control: ./sim.sock}"; echo "buses:"; buses_yaml; v6_bus
  echo "meters:"; meters_yaml; v6_meter; } >"$T/sim.yaml"
DB="$T/readings.db"
ctl() { "$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" "$@"; }
rows() { sql "$DB" "SELECT count(*) FROM readings WHERE meter = '$1'"; }
failures() {
  sql "$DB" "SELECT coalesce(sum(timeout + crc + exception + connection_refused + connection_reset
    + malformed + io + decode + not_connected), 0) FROM poll_stats WHERE meter = '$1'"
}
# The sums of rows and failures over meters.
sum_rows() { local n=0 m; for m in "$@"; do n=$((n + $(rows "$m"))); done; echo "$n"; }
sum_failures() { local n=0 m; for m in "$@"; do n=$((n + $(failures "$m"))); done; echo "$n"; }
status() { curl -s "http://127.0.0.1:$METRICS_PORT/status"; }
dtu_state() { status | jq -c --arg b "$1" '.dtus[] | select(.bus == $b)'; }

start_broker broker "$MQTT_PORT"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
check "the server without DTUs yet says where it listens" \
  grep -q "DTU server dtu-in: listening on 127.0.0.1:$DTU_PORT for 4 DTUs" "$T/collector.log"
check "a server without an allow list is warned about" \
  grep -q "DTU server dtu-v6: no allow list" "$T/collector.log"
check "... and the one with one is not" \
  test "$(grep -c "DTU server dtu-in: no allow list" "$T/collector.log")" = 0
# Before any DTU dials in, the meters fail with a kind of their own.
nc_polls() { [ "$(sql "$DB" "SELECT coalesce(sum(not_connected), 0) FROM poll_stats WHERE meter = 'M4'")" -ge 1 ]; }
wait_until 10 "M4 polled without its DTU" nc_polls
ok "a meter polled before its DTU registers fails with not_connected"

(cd "$T" && exec "$IC_BIN/intake-sim" --config "$T/sim.yaml" >"$T/sim.out" 2>"$T/sim.log") &
sim_PID=$!
IC_PIDS+=("$sim_PID")
IC_OURS+=("$sim_PID")
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
for r in KKY-DTU-01 hex:AA0102 KKY-DTU-03; do
  wait_for "$T/collector.log" "DTU $r registered from 127\.0\.0\.1:" 10 "$collector_PID"
done
ok "three DTUs registered on one port"
wait_for "$T/collector.log" 'DTU KKY-DTU-06 registered from \[::1\]:' 10 "$collector_PID"
ok "a DTU registered over IPv6 on a server listening on [::]"

# Each meter read at its interval, with the pinned values.
each3() { for m in M1 M2 M3 M4; do [ "$(rows $m)" -ge 3 ] || return 1; done; }
wait_until 20 "three readings of every meter" each3
value() { sql "$DB" "SELECT json_extract(fields, '\$.$2') FROM readings WHERE meter = '$1' ORDER BY id DESC LIMIT 1"; }
expect_eq "M1 flow as pinned (heartbeat 0xFE)" 36.625 "$(value M1 flow_m3h)"
expect_eq "M1 total as pinned" 1234.5 "$(value M1 total_m3)"
expect_eq "M2 flow as pinned" 250 "$(value M2 flow_m3h)"
expect_eq "M2 velocity as pinned" 0.75 "$(value M2 velocity_ms)"
expect_eq "M3 flow as pinned (registration on every packet)" 12.5 "$(value M3 flow_m3h)"
expect_eq "M3 total as pinned" 7.75 "$(value M3 total_m3)"
expect_eq "M4 flow as pinned" 80.5 "$(value M4 flow_m3h)"
expect_eq "M4 total as pinned" 4321 "$(value M4 total_m3)"
m6() { [ "$(rows M6)" -ge 2 ]; }
wait_until 10 "two readings of M6 over IPv6" m6
expect_eq "M6 flow as pinned (over IPv6)" 6.5 "$(value M6 flow_m3h)"

# Heartbeats inside answers: every answer cut in two packets with the
# heartbeat (or, on canal-2, the heartbeat and the registration) between.
ctl dtu canal-1 inside on >/dev/null
ctl dtu canal-2 inside on >/dev/null
fb1=$(failures M1); fb3=$(failures M3); n1=$(rows M1); n3=$(rows M3)
more() { [ "$(rows M1)" -ge $((n1 + 4)) ] && [ "$(rows M3)" -ge $((n3 + 4)) ]; }
wait_until 15 "four readings each with heartbeats inside the answers" more
expect_eq "no failed poll on canal-1 with heartbeats inside its answers" "$fb1" "$(failures M1)"
expect_eq "no failed poll on canal-2 with heartbeats and registrations inside" "$fb3" "$(failures M3)"
expect_eq "M1's values still as pinned" 36.625 "$(value M1 flow_m3h)"
expect_eq "M3's values still as pinned" 7.75 "$(value M3 total_m3)"
ctl dtu canal-1 inside off >/dev/null
ctl dtu canal-2 inside off >/dev/null


# A DTU that lost its radio link dials again before the server sees the old
# link die: the new connection takes the line over, and the meter misses no
# slot beyond the reconnect.
n4=$(rows M4); f4=$(failures M4)
ctl dtu canal-3 reconnect >/dev/null
wait_for "$T/collector.log" 'bus canal-3: DTU KKY-DTU-03: a new connection from 127\.0\.0\.1:[0-9]+ took the line over' 10 "$collector_PID"
ok "a reconnect with the old link left half-open takes the line over"
after4() { [ "$(rows M4)" -ge $((n4 + 5)) ]; }
wait_until 15 "five readings of M4 after the reconnect" after4
lost=$(( $(failures M4) - f4 ))
check "M4 missed at most the slot of the reconnect ($lost failed polls)" test "$lost" -le 1
expect_eq "canal-3's takeover is counted" 1 "$(dtu_state canal-3 | jq .takeovers)"

# A slow DTU (its meter answers after the bus timeout) delays no other bus.
ctl fault M4 slow >/dev/null
slow4() { [ "$(sql "$DB" "SELECT coalesce(sum(timeout), 0) FROM poll_stats WHERE meter = 'M4'")" -ge 2 ]; }
f=$(sum_failures M1 M2 M3)
n=$(sum_rows M1 M2 M3)
wait_until 15 "two polls of the slow M4 timed out" slow4
others() { [ "$(sum_rows M1 M2 M3)" -ge $((n + 6)) ]; }
wait_until 10 "the other DTUs' meters read meanwhile" others
expect_eq "no failed poll on the other DTUs while canal-3 is slow" "$f" \
  "$(sum_failures M1 M2 M3)"
ctl fault M4 none >/dev/null

# A DTU whose link brings nothing (its meter silent, no heartbeat) for
# idle_timeout is closed; it dials again and its meter is read once it
# answers.
ctl fault M6 offline >/dev/null
wait_for "$T/collector.log" 'bus canal-6: DTU KKY-DTU-06 brought nothing for 2s: its link is closed' 15 "$collector_PID"
ok "a link quiet for idle_timeout is closed"
ctl fault M6 none >/dev/null
n6=$(rows M6)
back6() { [ "$(rows M6)" -gt "$n6" ]; }
wait_until 15 "M6 read again after its DTU dialled again" back6

# An unknown registration and a silent connection: closed, logged once per
# address however often they come.
for i in 1 2 3; do
  r=$(python3 "$CLIENT" send "$DTU_PORT" 127.0.0.1 BOGUS-DTU-99 5)
  check "an unknown registration is closed ($r)" test "${r%% *}" = closed
  r=$(python3 "$CLIENT" silent "$DTU_PORT" 5)
  check "a connection without a registration is closed after register_timeout ($r)" \
    test "${r%% *}" = closed -a "${r#* }" -ge 900
done
expect_eq "the unknown registration is logged once" 1 \
  "$(grep -c 'closed a connection from 127\.0\.0\.1:[0-9]*: its registration names no bus' "$T/collector.log")"
expect_eq "the silent connection is logged once" 1 \
  "$(grep -c 'closed a connection from 127\.0\.0\.1:[0-9]*: no registration within 1s' "$T/collector.log")"

# A thousand connections that never register: the server keeps max_pending
# (200) of them, the newest, and the rest are closed; the DTUs' meters go
# on, and a DTU that dials in meanwhile gets its line at once.
n=$(sum_rows M1 M2 M3 M4)
f=$(sum_failures M1 M2 M3 M4)
python3 "$CLIENT" idle "$DTU_PORT" 1000 4 >"$T/idle.out" &
idle_PID=$!
IC_PIDS+=("$idle_PID")
wait_for "$T/idle.out" '^opened' 10 "$idle_PID"
# At once, while the newest 200 wait for their registration (1s): the DTU
# dials again 200 ms after dropping its link.
regs=$(grep -c 'DTU hex:AA0102 registered from' "$T/collector.log")
t0=$(now_ms)
ctl dtu canal-2 drop >/dev/null
again() { [ "$(grep -c 'DTU hex:AA0102 registered from' "$T/collector.log")" -gt "$regs" ]; }
wait_until 5 "canal-2's DTU registered again" again
took=$(( $(now_ms) - t0 ))
check "a DTU dialling in while the pending list is full registers at once ($took ms)" \
  test "$took" -lt 600
expect_eq "the client held a thousand connections" "opened 1000" "$(head -1 "$T/idle.out")"
during() { [ "$(sum_rows M1 M2 M3 M4)" -ge $((n + 12)) ]; }
wait_until 10 "three more readings of every meter with 1000 idle connections" during
reap "$idle_PID"
closed=$(sed -n 's/^closed-by-server //p' "$T/idle.out")
check "the server closed every one of them ($closed of 1000)" test "${closed:-0}" -eq 1000
fails=$(( $(sum_failures M1 M2 M3 M4) - f ))
check "at most the dropped link's slot failed meanwhile ($fails)" test "$fails" -le 1
check "the full pending list is logged" grep -q '200 connections wait for their registration' "$T/collector.log"

# Outside the allow list: closed before its registration is read.
r=$(python3 "$CLIENT" send "$DTU_PORT" 127.0.0.3 KKY-DTU-01 5)
check "a connection from 127.0.0.3 is closed ($r)" test "${r%% *}" = closed
check "... and logged as outside the allow list" \
  grep -q 'closed a connection from 127\.0\.0\.3:[0-9]*, outside its allow list' "$T/collector.log"
expect_eq "... without taking canal-1 over" 0 "$(dtu_state canal-1 | jq '.takeovers + .takeovers_refused')"

# A takeover storm: another intake-sim dials canal-1's registration from
# 127.0.0.2 again and again. Every attempt is refused and counted; the real
# DTU keeps its line and its meters their readings.
{ head_yaml; echo "buses:"; buses_yaml | head -2; echo "meters:"; meters_yaml | head -2; } >"$T/storm.yaml"
n1=$(rows M1); f1=$(failures M1)
start storm "$IC_BIN/intake-sim" --config "$T/storm.yaml" --dtu-source 127.0.0.2
wait_for "$T/storm.out" '^ready' 20 "$storm_PID"
refused() { [ "$(dtu_state canal-1 | jq .takeovers_refused)" -ge 8 ]; }
wait_until 20 "eight takeovers refused" refused
stop_pid "$storm_PID"
st=$(dtu_state canal-1)
check "takeovers from 127.0.0.2 are refused and counted ($st)" \
  test "$(jq '.foreign_address >= 8 and .takeovers == 0 and .connected' <<<"$st")" = true
check "canal-1 is not marked as moved" test "$(jq .address_changed <<<"$st")" = false
check "the real DTU kept its line" grep -q 'link=up links=1$' <(ctl dtu canal-1 status)
expect_eq "the refusal is logged at warn once for the address" 1 \
  "$(grep -c 'refused a takeover by 127\.0\.0\.2' "$T/collector.log")"
check "M1 went on being read during the storm" test "$(rows M1)" -gt "$n1"
metric() { curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | sed -n "s/^$1{site=\"canal\",bus=\"$2\"} //p"; }
check "the metrics count the refused takeovers ($(metric intake_dtu_takeovers_refused_total canal-1))" \
  test "$(metric intake_dtu_takeovers_refused_total canal-1)" -ge 8
expect_eq "the metrics have canal-1's DTU connected" 1 "$(metric intake_dtu_connected canal-1)"
expect_eq "no failed poll of M1 during the storm" "$f1" "$(failures M1)"

# A DTU that registers from another address (its SIM got a new one) takes
# its line when the bus has none; its readings are marked in the gateway
# state.
ctl dtu canal-3 off >/dev/null
{ head_yaml; echo "buses:"; buses_yaml | tail -2; echo "meters:"; meters_yaml | tail -2; } >"$T/moved.yaml"
n4=$(rows M4)
start moved "$IC_BIN/intake-sim" --config "$T/moved.yaml" --dtu-source 127.0.0.2
wait_for "$T/collector.log" 'DTU KKY-DTU-03 registered from 127\.0\.0\.2:[0-9]+, another address than before' 10 "$collector_PID"
moved4() { [ "$(rows M4)" -ge $((n4 + 2)) ]; }
wait_until 10 "M4 read through its DTU on its new address" moved4
st=$(dtu_state canal-3)
check "the gateway state marks canal-3's DTU as moved ($st)" \
  test "$(jq '.address_changed and (.address | startswith("127.0.0.2:"))' <<<"$st")" = true
stop_pid "$moved_PID"

# The bus whose DTU never dialled: its meter went offline with the reason.
expect_eq "M5 offline, not_connected: DTU KKY-DTU-04 has not connected" \
  "not_connected|DTU KKY-DTU-04 has not connected" \
  "$(sql "$DB" "SELECT error || '|' || detail FROM state_changes WHERE meter = 'M5' AND online = 0 LIMIT 1")"
expect_eq "M5 has no reading" 0 "$(rows M5)"
check "the gateway state counts not_connected polls" \
  test "$(status | jq '.counters.failures.not_connected > 0')" = true

# A reload that moves every rtu-dtu bus one place down (a bus put first)
# and removes canal-4 with M5: the DTUs keep their lines, and what each has
# done stays with its bus.
regs1=$(dtu_state canal-1 | jq .registrations)
cp "$T/site.yaml" "$T/site-first.yaml"
{ head_yaml; echo "metrics: {listen: 127.0.0.1:$METRICS_PORT}"; echo "buses:"
  echo "  - {id: plc-first, transport: tcp, host: 127.0.0.1, port: 9, timeout: 500ms}"
  buses_yaml; v6_bus; echo "meters:"; meters_yaml; v6_meter
} >"$T/site.yaml"
n1=$(rows M1)
kill -HUP "$collector_PID"
wait_for "$T/collector.log" "reload: applied" 10 "$collector_PID"
check "the reload removed M5" grep -q "reload: meter M5 removed" "$T/collector.log"
after_reload() { [ "$(rows M1)" -ge $((n1 + 3)) ]; }
check "canal-1's DTU is polled on after the reload" wait_until 10 "M1 read after the reload" after_reload
expect_eq "canal-1's DTU kept its line: no new registration" "$regs1" \
  "$(dtu_state canal-1 | jq .registrations)"
check "canal-1 is still connected in the gateway state" \
  test "$(dtu_state canal-1 | jq .connected)" = true
expect_eq "canal-4 is gone from the gateway state" "" "$(dtu_state canal-4)"

stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
cp "$T/site-first.yaml" "$T/site.yaml"

# intake-collector read on rtu-dtu buses: it listens until the DTU dials in
# and registers, and reads through its heartbeats and prefixes.
rc=0
"$IC_BIN/intake-collector" read --config "$T/site.yaml" --meter M1 --meter M3 --json \
  --wait 20s >"$T/read.json" 2>"$T/read.err" || rc=$?
expect_eq "read exits 0 for meters behind DTUs that dial in" 0 "$rc"
expect_eq "read: M1's flow as pinned" 36.625 "$(jq -r 'select(.meter == "M1") | .fields.flow_m3h' "$T/read.json")"
expect_eq "read: M3's total as pinned" 7.75 "$(jq -r 'select(.meter == "M3") | .fields.total_m3' "$T/read.json")"
rc=0
"$IC_BIN/intake-collector" read --config "$T/site.yaml" --meter M5 --wait 1s >"$T/read5.out" 2>&1 || rc=$?
expect_eq "read exits 1 when the DTU does not dial in" 1 "$rc"
check "... saying so" grep -q 'FAILED, not_connected: DTU did not register' "$T/read5.out"
stop_pid "$sim_PID"

finish
