#!/usr/bin/env bash
# intake-sim under slow meters and misbehaving clients: a slow meter does not
# stall the other meters of its RTU line, and its late answer reaches only a
# client that still has the port open; after noise, frames with a bad CRC,
# bad MBAP headers, truncated frames and a flood of garbage, on each of its
# transports (RTU on a pty, Modbus TCP, RTU over TCP), the next good request
# gets the meter's right answer; a client that pipelines requests and
# never reads its answers costs a bounded amount while others are served;
# wire time is emulated on rtu-over-tcp lines and is never shorter than the
# real line's; an idle control connection is closed after 5 s and does not
# hold up shutdown; a large site's status comes whole; a device path that
# links anywhere but to a pseudo-terminal is never replaced.
source "$(dirname "$0")/lib.sh"

read -r TCP_PORT ROT_PORT WIRE_PORT < <(free_ports 3)
cat >"$T/site.yaml" <<YAML
site: {id: robust-test}
mqtt: {url: "mqtt://127.0.0.1:1883"}
storage: {path: ./readings.db}
sim: {control: ./sim.sock}
buses:
  - {id: line1, transport: rtu, device: ./ttySIM0, baud: 19200, timeout: 300ms}
  - {id: line2, transport: rtu, device: ./ttySIM1, baud: 2400, parity: even, sim_wire_time: true, timeout: 2s}
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 1s}
  - {id: dtu, transport: rtu-over-tcp, host: 127.0.0.1, port: $ROT_PORT, timeout: 1s}
  - {id: slowdtu, transport: rtu-over-tcp, host: 127.0.0.1, port: $WIRE_PORT, baud: 2400, sim_wire_time: true, timeout: 2s}
meters:
  - {id: SLOW, bus: line1, unit: 1, profile: mag-00h, sim: {fault: slow, slow_delay: 3s}}
  - {id: FINE, bus: line1, unit: 2, profile: mag-00h, sim: {fixed: {flow_m3h: 250}}}
  - {id: W-RTU, bus: line2, unit: 1, profile: mag-00h}
  - {id: T-TUF, bus: plc, unit: 1, profile: tuf2000m}
  - {id: T-MAG, bus: plc, unit: 2, profile: mag-00h}
  - {id: D-MAG, bus: dtu, unit: 1, profile: mag-00h}
  - {id: D-TUF, bus: dtu, unit: 2, profile: tuf2000m}
  - {id: T-PIN, bus: plc, unit: 3, profile: mag-00h, sim: {fixed: {flow_m3h: 125.5}}}
  - {id: D-PIN, bus: dtu, unit: 3, profile: mag-00h, sim: {fixed: {flow_m3h: 333.25}}}
  - {id: W-DTU, bus: slowdtu, unit: 1, profile: mag-00h}
YAML

start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"

read_meter() { "$IC_BIN/intake-collector" read --config "$T/site.yaml" --json --meter "$1" >"$T/read-$1.json" 2>>"$T/read.log"; }
ctl() { "$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" "$@"; }
pending_of() { ctl status | sed -nE "s/^$1 .* pending=([0-9]+).*/\1/p"; }

# --- A slow meter on a shared RTU line -------------------------------------
t0=$(now_ms)
rc=0
read_meter SLOW || rc=$?
expect_eq "the slow meter (3 s) times out at the collector's 300 ms" timeout \
  "$(jq -r .error "$T/read-SLOW.json")"
for i in 1 2 3; do
  rc=0
  read_meter FINE || rc=$?
  expect_eq "the healthy meter on the same line answers meanwhile (read $i)" 0 "$rc"
done
done_ms=$(($(now_ms) - t0))
check "those reads ran while the slow answer was pending (${done_ms} ms < 3000 ms)" \
  [ "$done_ms" -lt 3000 ]
expect_eq "status shows the slow answer pending" 1 "$(pending_of SLOW)"
no_pending() { [ "$(pending_of SLOW)" = 0 ]; }
wait_until 10 "the slow answer to go out" no_pending

# The slow answer went out after its client had closed the port: a real port
# drops it, so the next client (mbpoll does not flush the line) must get its
# own answer, not the stale one.
f32_words() { perl -e 'my $h = uc unpack("H8", pack("f>", $ARGV[0])); print "0x", substr($h,0,4), " 0x", substr($h,4,4), "\n"' "$1"; }
words() { grep -E '^\[[0-9]+\]:' | sed -E 's/.*(0x[0-9A-Fa-f]{4}).*/\1/' | tr 'a-f' 'A-F' | tr '\n' ' ' | sed 's/ $//'; }
out=$(mbpoll -m rtu -b 19200 -P none -a 2 -0 -r 0 -c 2 -t 4:hex -1 -o 1 "$T/ttySIM0" 2>&1 | words || true)
expect_eq "after a late answer nobody took, the next client reads its own answer" \
  "$(f32_words 250)" "$out"

# A client that keeps the port open does receive the late answer.
# intake-sim counts the port's clients from inotify's open and close events,
# and inotify merges an event into the previous one when both are identical
# and still unread: this open and mbpoll's, taken in together, would count as
# one, and mbpoll's close would leave the port counted closed. So first two
# exchanges on this descriptor, one after the other: the second request is
# read in a later round of intake-sim's event loop than the first, and by
# then every event queued before the first (this open) has been taken in.
exec 3<>"$T/ttySIM0"
for i in 1 2; do
  expect_eq "the client holding the port open is answered on it (exchange $i)" \
    "regs $(f32_words 250)" "$("$IC_TEST_BIN/ic-simclient" read rtu fd:3 2 2 2>>"$T/simclient.log" || true)"
done
mbpoll -m rtu -b 19200 -P none -a 1 -0 -r 0 -c 2 -t 4:hex -1 -o 0.3 "$T/ttySIM0" >/dev/null 2>&1 || true
late=$(timeout 15 head -c 3 <&3 | od -An -tx1 | tr -d ' \n' || true)
exec 3<&-
expect_eq "a client that keeps the port open receives the late answer (unit 1, fc 3, 4 bytes)" \
  "010304" "$late"

# --- Bad input on every transport ------------------------------------------
# Each kind of bad input, then a good request for the flow of a meter whose
# flow is pinned: the answer must carry exactly those registers, and
# intake-sim must still run. Frames with a bad CRC are whole: the good
# request comes right behind them, in the same write, on the same port or
# connection. After the rest it follows on the same port on the pty (once
# the line has been silent for longer than the 100 ms that end a frame), and
# on a new connection on rtu-over-tcp and Modbus TCP (the bad one still
# open, unless intake-sim closed it), where a stream has no silence to end a
# frame by.
# Running, not a zombie awaiting its parent.
sim_alive() { kill -0 "$sim_PID" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$sim_PID/status" 2>/dev/null; }
bad_input() {
  local what=$1 kind=$2 expect=$3 out rc=0
  shift 3
  out=$("$IC_TEST_BIN/ic-simclient" bad "$kind" "$@" 2>>"$T/simclient.log") || rc=$?
  printf '== %s %s\n%s\n' "$what" "$kind" "$out" >>"$T/bad-input.out"
  local regs
  regs=$(printf '%s\n' "$out" | sed -n 's/^regs //p')
  if [ "$rc" -eq 0 ] && [ "$regs" = "$expect" ]; then
    ok "$what, $kind: the next good request gets the meter's registers ($regs)"
  else
    not_ok "$what, $kind: the next good request gets the meter's registers: expected [$expect], got [$regs] (exit $rc: $(printf '%s' "$out" | tr '\n' ';'))"
  fi
  check "$what, $kind: intake-sim is still running" sim_alive
  BAD_OUT=$out
}
for kind in noise crc truncated flood; do
  bad_input "rtu (pty)" "$kind" "$(f32_words 250)" rtu "$T/ttySIM0" 2
done
for kind in noise crc truncated flood; do
  bad_input rtu-over-tcp "$kind" "$(f32_words 333.25)" rot 127.0.0.1 "$ROT_PORT" 3
done
for kind in noise truncated flood mbap-len0 mbap-len65535 mbap-proto; do
  bad_input "modbus tcp" "$kind" "$(f32_words 125.5)" tcp 127.0.0.1 "$TCP_PORT" 3
  case $kind in
    mbap-*)
      expect_eq "modbus tcp, $kind: intake-sim closes the connection" \
        "closed by peer" "$(printf '%s\n' "$BAD_OUT" | sed -n 's/^bad connection: //p')" ;;
  esac
done
rc=0
read_meter D-PIN || rc=$?
expect_eq "after all that, the collector reads a meter of the rtu-over-tcp bus" 0 "$rc"
expect_eq "... with its pinned flow" 333.25 "$(jq -r .fields.flow_m3h "$T/read-D-PIN.json")"

# --- Clients that never read their answers ----------------------------------
# Unbounded, the simulator grows by hundreds of MiB in 2 s. Bounded, what it
# keeps is the 64 KiB queue; the kernel's socket buffers (several MiB on
# loopback) fill first, and under AddressSanitizer every answer written
# meanwhile also sits in its quarantine, hence the generous limit.
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$sim_PID/status"; }
flood() {
  local name=$1 mode=$2 port=$3 unit=$4 count=$5 meter=$6
  local before after pid
  before=$(rss_kb)
  start "$name" "$IC_TEST_BIN/ic-simclient" flood "$mode" 127.0.0.1 "$port" "$unit" "$count" 2
  pid=${name}_PID
  wait_for "$T/$name.out" '^flooded' 20 "${!pid}"
  after=$(rss_kb)
  local grew=$(((after - before) / 1024))
  check "$mode: a client that pipelines requests and never reads costs < 128 MiB ($(cat "$T/$name.out"), RSS grew ${grew} MiB)" \
    [ "$grew" -lt 128 ]
  local rc=0
  read_meter "$meter" || rc=$?
  expect_eq "$mode: another client is served meanwhile" 0 "$rc"
  kill -TERM "${!pid}" 2>/dev/null || true
  wait "${!pid}" 2>/dev/null || true
}
flood flood_tcp tcp "$TCP_PORT" 1 90 T-MAG
flood flood_rot rot "$ROT_PORT" 2 90 D-MAG
check "the simulator logs the client that does not read" \
  grep -q "does not read its answers" "$T/sim.log"
check "intake-sim is still running after the floods" kill -0 "$sim_PID"

# --- Wire time, never shorter than the real line's --------------------------
# A read of 20 registers: an 8-byte request and a 45-byte answer, plus the
# 3.5-character silence. 2400 baud; 8N1 is 10 bits a character, 8E1 is 11.
wire_us() { echo $((($1 * $3 * 1000000 + $2 - 1) / $2)); }
silence_us() { echo $(((7 * $2 * 1000000 + 2 * $1 - 1) / (2 * $1))); }
exchange_us() { echo $(($(wire_us 8 "$1" "$2") + $(silence_us "$1" "$2") + $(wire_us 45 "$1" "$2"))); }
rtt_check() {
  local what=$1 expect=$2
  shift 2
  local i us min=999999999 max=0
  for i in 1 2 3 4 5; do
    us=$("$IC_TEST_BIN/ic-simclient" rtt "$@" | sed -nE 's/^rtt_us ([0-9]+)$/\1/p')
    [ -n "$us" ] || us=0
    [ "$us" -lt "$min" ] && min=$us
    [ "$us" -gt "$max" ] && max=$us
  done
  check "$what: every answer takes at least the wire time ($min us >= $expect us)" [ "$min" -ge "$expect" ]
  check "$what: and not much more ($max us < $((expect + 1000000)) us)" [ "$max" -lt $((expect + 1000000)) ]
}
rtt_check "rtu-over-tcp at 2400 8N1" "$(exchange_us 2400 10)" rot 127.0.0.1 "$WIRE_PORT" 1 20
rtt_check "rtu at 2400 8E1" "$(exchange_us 2400 11)" rtu "$T/ttySIM1" 1 20

# --- Control connections ----------------------------------------------------
start idle1 "$IC_TEST_BIN/ic-simclient" idle "$T/sim.sock"
wait_for "$T/idle1.out" '^connected' 10 "$idle1_PID"
rc=0
ctl status >/dev/null || rc=$?
expect_eq "ctl works while another control connection idles" 0 "$rc"
wait_for "$T/idle1.out" '^closed by peer' 15 "$idle1_PID"
ms=$(sed -nE 's/^closed by peer after ([0-9]+) ms$/\1/p' "$T/idle1.out")
check "an idle control connection is closed after 5 s (${ms} ms)" \
  [ "${ms:-0}" -ge 4500 ] && [ "${ms:-0}" -le 10000 ]
rc=0
ctl fault NO-SUCH-METER offline >"$T/ctl-err.out" || rc=$?
expect_eq "ctl exits 1 on an error reply" 1 "$rc"

# An idle control client must not hold up shutdown.
start idle2 "$IC_TEST_BIN/ic-simclient" idle "$T/sim.sock"
wait_for "$T/idle2.out" '^connected' 10 "$idle2_PID"
stop_pid "$sim_PID"
expect_eq "intake-sim exits 0 on SIGTERM with an idle control client" 0 "$STOP_RC"
check "... and promptly (${STOP_MS} ms < 2000 ms)" [ "$STOP_MS" -lt 2000 ]
wait "$idle2_PID" 2>/dev/null || true

# --- status on a large site -------------------------------------------------
read -r BIG1 BIG2 < <(free_ports 2)
{
  echo "site: {id: big-site}"
  echo "mqtt: {url: \"mqtt://127.0.0.1:1883\"}"
  echo "storage: {path: ./big.db}"
  echo "sim: {control: ./big.sock}"
  echo "buses:"
  echo "  - {id: big-plc-number-one, transport: tcp, host: 127.0.0.1, port: $BIG1}"
  echo "  - {id: big-plc-number-two, transport: tcp, host: 127.0.0.1, port: $BIG2}"
  echo "meters:"
  for i in $(seq 1 300); do
    bus=big-plc-number-one
    unit=$i
    if [ "$i" -gt 200 ]; then bus=big-plc-number-two; unit=$((i - 200)); fi
    printf '  - {id: intake-meter-with-a-long-identifier-%03d, bus: %s, unit: %d, profile: mag-00h}\n' "$i" "$bus" "$unit"
  done
} >"$T/big.yaml"
start big "$IC_BIN/intake-sim" --config "$T/big.yaml"
wait_for "$T/big.out" '^ready' 20 "$big_PID"
rc=0
"$IC_BIN/intake-sim" ctl --socket "$T/big.sock" status >"$T/big-status.out" || rc=$?
expect_eq "status of 300 meters (more than 8 KiB): ctl exits 0" 0 "$rc"
expect_eq "status lists every meter" 300 "$(grep -c '^intake-meter-with-a-long-identifier-' "$T/big-status.out")"
expect_eq "status ends in its ok line" ok "$(tail -n 1 "$T/big-status.out")"
check "status is longer than 8 KiB" [ "$(wc -c <"$T/big-status.out")" -gt 8192 ]
stop_pid "$big_PID"
expect_eq "the large site's simulator exits 0" 0 "$STOP_RC"

# --- Device paths that are not the simulator's to replace -------------------
link_site() {
  cat <<YAML
site: {id: link-test}
mqtt: {url: "mqtt://127.0.0.1:1883"}
storage: {path: ./link.db}
buses:
  - {id: line, transport: rtu, device: ./$1}
meters:
  - {id: M, bus: line, unit: 1, profile: mag-00h}
YAML
}
: >"$T/real-port"
ln -s "$T/real-port" "$T/ttyBYID"
link_site ttyBYID >"$T/link1.yaml"
rc=0
timeout 20 "$IC_BIN/intake-sim" --config "$T/link1.yaml" >"$T/link1.out" 2>"$T/link1.log" || rc=$?
expect_eq "a link to something other than a pty: intake-sim refuses to start" 1 "$rc"
check "... saying why" grep -q "ttyBYID is a link to $T/real-port, not to a pseudo-terminal" "$T/link1.log"
expect_eq "... and leaves the link alone" "$T/real-port" "$(readlink "$T/ttyBYID")"

# A link left behind by a simulator that crashed points into /dev/pts/.
ln -s /dev/pts/987654 "$T/ttyOLD"
link_site ttyOLD >"$T/link2.yaml"
start link2 "$IC_BIN/intake-sim" --config "$T/link2.yaml"
wait_for "$T/link2.out" '^ready' 20 "$link2_PID"
target=$(readlink "$T/ttyOLD")
check "a stale link to a pty is replaced by the new pty ($target)" \
  [ "$target" != /dev/pts/987654 ] && [ -c "$target" ]
stop_pid "$link2_PID"
expect_eq "that simulator exits 0" 0 "$STOP_RC"

finish
