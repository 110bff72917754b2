#!/usr/bin/env bash
# DTUs that dial in, the edges of their lines:
#  - a DTU that registers after its meters went offline and into back-off:
#    they are polled from the next slot, not when the back-off runs out;
#  - a reload that makes the server's longest registration shorter while a
#    connection is part-way through one: that connection is judged on what
#    it sent (closed, unknown), and the daemon runs on;
#  - refused takeovers from one address: every one counted, logged once;
#  - messages name the DTU, not an address the bus does not have;
#  - a DTU link closed for junk: the polls after it say why it closed;
#  - `intake-collector read` with registrations that are prefixes of one
#    another (DTU-1, DTU-10) binds only the bus the bytes name.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT DTU_PORT METRICS_PORT < <(free_ports 3)
CLIENT="$IC_SOURCE_DIR/tests/tools/dtuclient.py"
site() { # site [with-long]
  cat <<YAML
site: {id: lines}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
sim: {control: ./sim.sock}
metrics: {listen: 127.0.0.1:$METRICS_PORT}
dtu_servers:
  - {id: dtu-in, listen: 127.0.0.1:$DTU_PORT, register_timeout: 1m, takeover_hold: 3s,
     allow: [127.0.0.1]}
buses:
  - {id: b1, transport: rtu-dtu, server: dtu-in, registration: DTU-1, timeout: 500ms}
  - {id: b10, transport: rtu-dtu, server: dtu-in, registration: DTU-10, timeout: 500ms}
  - {id: b2, transport: rtu-dtu, server: dtu-in, registration: JUNK-2, timeout: 500ms}
YAML
  [ "${1:-}" = with-long ] &&
    echo "  - {id: long, transport: rtu-dtu, server: dtu-in, registration: LONG-REGISTRATION-0123456789AB}"
  cat <<YAML
meters:
  - {id: M1, bus: b1, unit: 1, profile: mag-00h, interval: 1s, sim: {fixed: {flow_m3h: 11}}}
  - {id: M10, bus: b10, unit: 1, profile: mag-00h, interval: 1s, sim: {fixed: {flow_m3h: 1010}}}
  - {id: M2, bus: b2, unit: 1, profile: mag-00h, interval: 1s}
YAML
  [ "${1:-}" = with-long ] && echo "  - {id: L1, bus: long, unit: 1, profile: mag-00h, interval: 1s}"
  return 0
}
site with-long >"$T/site.yaml"
# The simulator dials in as DTU-10 only.
site | grep -v 'id: b1,\|id: M1,\|id: b2,\|id: M2,\|metrics:' >"$T/sim.yaml"
DB="$T/readings.db"
rows() { sql "$DB" "SELECT count(*) FROM readings WHERE meter = '$1'"; }
not_connected() { sql "$DB" "SELECT coalesce(sum(not_connected), 0) FROM poll_stats WHERE meter = '$1'"; }

start_broker broker "$MQTT_PORT"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml" --log-level debug
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
check "the start-up line names the DTU and its server" \
  grep -q "bus b10: rtu-dtu, DTU DTU-10 dialling in to server dtu-in, timeout 500 ms" "$T/collector.log"

# (1) M10 goes offline without its DTU, and its retries back off (1 s, then
# 2, 4, 8 s...). Six failures in, the next retry is some 8 s away.
six() { [ "$(not_connected M10)" -ge 6 ]; }
wait_until 40 "six not_connected polls of M10" six
check "M10 is offline" grep -q "meter M10 offline" "$T/collector.log"
start sim "$IC_BIN/intake-sim" --config "$T/sim.yaml"
wait_for "$T/collector.log" "bus b10: DTU DTU-10 registered from" 20 "$collector_PID"
t0=$(now_ms)
read_once() { [ "$(rows M10)" -ge 1 ]; }
wait_until 20 "M10's first reading" read_once
took=$(( $(now_ms) - t0 ))
check "M10 is read from the next slot after its DTU registered ($took ms), not after its back-off" \
  test "$took" -le 2500

# (2) A connection part-way through the long registration; a reload takes
# that bus away (the longest registration is now 6 bytes); then the
# connection sends 300 bytes more.
rm -f "$T/go"
start stages python3 "$CLIENT" stages "$DTU_PORT" LONG-REGISTRATION-01 "$T/go" 300 5
wait_for "$T/stages.out" '^sent' 10 "$stages_PID"
site >"$T/site.yaml"
kill -HUP "$collector_PID"
wait_for "$T/collector.log" "reload: applied" 10 "$collector_PID"
touch "$T/go"
wait_for "$T/stages.out" '^(closed|open)' 15 "$stages_PID"
r=$(tail -1 "$T/stages.out")
check "the half-registered connection is closed after the reload ($r)" test "${r%% *}" = closed
check "... as naming no bus" grep -Eq "closed a connection from 127\.0\.0\.1:[0-9]+: its registration names no bus" \
  "$T/collector.log"
check "the collector runs on" kill -0 "$collector_PID"
m10=$(rows M10)
more10() { [ "$(rows M10)" -ge $((m10 + 2)) ]; }
check "M10 is polled on" wait_until 10 "M10 read after the reload" more10

# (3) A connection from the DTU's own address takes b10 over; for the
# takeover_hold (3 s) after, the simulator's DTU, dialling again every
# 200 ms, is refused each time: all counted, logged once.
start taker python3 "$CLIENT" send "$DTU_PORT" 127.0.0.1 DTU-10 1.5
wait_for "$T/taker.out" '^(closed|open)' 15 "$taker_PID"
back() { [ "$(grep -c 'bus b10: DTU DTU-10 registered from' "$T/collector.log")" -ge 2 ]; }
wait_until 20 "the simulator's DTU back on b10" back
refused=$(curl -s -m 5 "http://127.0.0.1:$METRICS_PORT/metrics" |
  awk '/^intake_dtu_takeovers_refused_total\{.*bus="b10"/ {print $2}')
check "the simulator's tries were refused and counted ($refused)" test "${refused:-0}" -ge 2
expect_eq "... and logged once for the address" 1 \
  "$(grep -c '^warn  .*refused a takeover by 127\.0\.0\.1' "$T/collector.log")"
# (4) A DTU that registers, then sends 8 KiB that frame nothing and keeps
# its link open: the gateway closes it, and the polls that find b2 without
# its DTU say why its link closed.
cat >"$T/junk.py" <<'PY'
import os, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"JUNK-2")
time.sleep(0.3)
try:
    for _ in range(8):
        s.sendall(bytes(b | 0x80 for b in os.urandom(1024)))
except OSError:
    pass
s.settimeout(20)
try:
    while s.recv(4096):
        pass
    print("closed", flush=True)
except OSError as e:
    print("closed", e, flush=True)
PY
start junk python3 "$T/junk.py" "$DTU_PORT"
wait_for "$T/junk.out" '^closed' 20 "$junk_PID"
ok "the gateway closed the link that sent junk"
wait_for "$T/collector.log" "meter M2: poll failed: not_connected: DTU JUNK-2 has not connected again since its link closed \(DTU JUNK-2 sent [0-9]+ bytes that frame no answer" 20 "$collector_PID"
ok "M2's polls say why its DTU's link closed"
check "no message names an address the DTU buses lack (:0)" \
  bash -c "! grep -q ' :0\b' '$T/collector.log'"

stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"

# (4) read: the simulator's DTU-10 dials in again and again. It is not b1's
# DTU (DTU-1 is a prefix of its registration): reading M1 waits for DTU-1
# and gives up; reading M10 takes it.
rc=0
"$IC_BIN/intake-collector" read --config "$T/site.yaml" --meter M1 --wait 3s --json \
  >"$T/read1.json" 2>"$T/read1.err" || rc=$?
expect_eq "read M1 fails: DTU-10 is another bus's DTU" 1 "$rc"
expect_eq "... with not_connected, not DTU-10's values" "false not_connected" \
  "$(jq -r '[.ok, .error] | map(tostring) | join(" ")' "$T/read1.json")"
rc=0
"$IC_BIN/intake-collector" read --config "$T/site.yaml" --meter M10 --wait 10s --json \
  >"$T/read10.json" 2>"$T/read10.err" || rc=$?
expect_eq "read M10 takes DTU-10" 0 "$rc"
expect_eq "read: M10's flow" 1010 "$(jq -r '.fields.flow_m3h' "$T/read10.json")"
finish
