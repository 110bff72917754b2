#!/usr/bin/env bash
# mbpoll, an independent Modbus client (libmodbus), reads intake-sim's
# registers over Modbus TCP, over RTU on the simulator's pseudo-terminal, and
# (for RTU over TCP) is not applicable. The expected register words are
# computed here with perl's pack(), not with the project's decoders.
source "$(dirname "$0")/lib.sh"

read -r TCP_PORT < <(free_ports 1)
cat >"$T/site.yaml" <<YAML
site: {id: mbpoll-test, name: "mbpoll 测试"}
mqtt: {url: "mqtt://127.0.0.1:1883"}
storage: {path: ./readings.db}
sim: {control: ./sim.sock}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 1s}
  - {id: line1, transport: rtu, device: ./ttySIM0, baud: 9600, timeout: 1s}
meters:
  - id: TUF-1
    bus: plc
    unit: 1
    profile: tuf2000m
    sim: {fixed: {flow_m3h: 36.62540817, velocity_ms: 1.5, total_m3: 1234.5}}
  - id: OC-1
    bus: plc
    unit: 7
    profile: open-channel
    sim: {fixed: {flow_m3h: 720, level_m: 1.25, total_m3: 123456789}}
  - id: MAG-1
    bus: line1
    unit: 3
    profile: mag-00h
    sim: {fixed: {flow_m3h: 250, total_m3: 98765.25}}
YAML

start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"

# Float (IEEE 754 single) as two 16-bit words, most significant first.
f32_hi_lo() { perl -e 'my $h = uc unpack("H8", pack("f>", $ARGV[0])); print "0x", substr($h,0,4), " 0x", substr($h,4,4), "\n"' "$1"; }
# Unsigned 32-bit as two words, most significant first.
u32_hi_lo() { perl -e 'printf "0x%04X 0x%04X\n", ($ARGV[0] >> 16) & 0xFFFF, $ARGV[0] & 0xFFFF' "$1"; }

# mbpoll prints "[REF]: 	0xHHHH" per register; keep the words in order.
words() { grep -E '^\[[0-9]+\]:' | sed -E 's/.*(0x[0-9A-Fa-f]{4}).*/\1/' | tr 'a-f' 'A-F' | tr '\n' ' ' | sed 's/ $//'; }

# --- Modbus TCP, TUF-2000M at unit 1 (low word first) ----------------------
out=$(mbpoll -m tcp -p "$TCP_PORT" -a 1 -0 -r 0 -c 12 -t 4:hex -1 -o 2 127.0.0.1 | words)
read -r fh fl < <(f32_hi_lo 36.62540817)
read -r vh vl < <(f32_hi_lo 1.5)
read -r ih il < <(u32_hi_lo 1234)
read -r rh rl < <(f32_hi_lo 0.5)
set -- $out
expect_eq "tcp: TUF flow registers 1-2 are the manual's example words" "0x806B 0x4212" "$1 $2"
expect_eq "tcp: TUF flow low word first" "$fl $fh" "$1 $2"
expect_eq "tcp: TUF velocity registers 5-6" "$vl $vh" "$5 $6"
expect_eq "tcp: TUF totalizer integer registers 9-10" "$il $ih" "$9 ${10}"
expect_eq "tcp: TUF totalizer fraction registers 11-12" "$rl $rh" "${11} ${12}"

# --- Modbus TCP, open-channel meter at unit 7 (big-endian) -----------------
out=$(mbpoll -m tcp -p "$TCP_PORT" -a 7 -0 -r 0 -c 12 -t 4:hex -1 -o 2 127.0.0.1 | words)
set -- $out
read -r ah al < <(f32_hi_lo 0.2)      # 720 m3/h = 0.2 m3/s
read -r lh ll < <(f32_hi_lo 1.25)
read -r hh hl < <(u32_hi_lo 1)        # 123456789 m3 = 1 x 10^8 + 23456789
read -r oh ol < <(u32_hi_lo 23456789)
expect_eq "tcp: open-channel level at 0x02" "$lh $ll" "$3 $4"
expect_eq "tcp: open-channel flow (m3/s) at 0x04" "$ah $al" "$5 $6"
expect_eq "tcp: open-channel volume high part at 0x08" "$hh $hl" "$9 ${10}"
expect_eq "tcp: open-channel volume low part at 0x0A" "$oh $ol" "${11} ${12}"

# An address beyond the map is an exception (illegal data address).
if mbpoll -m tcp -p "$TCP_PORT" -a 1 -0 -r 200 -c 2 -t 4:hex -1 -o 2 127.0.0.1 >"$T/mbpoll-bad.txt" 2>&1; then
  not_ok "tcp: reading past the register map must fail"
else
  check "tcp: reading past the register map is refused as illegal data address" \
    grep -qi "illegal data address" "$T/mbpoll-bad.txt"
fi

# --- Modbus RTU on the pty, mag-00h at unit 3 (big-endian) -----------------
check "rtu: the device path is a link to a pseudo-terminal" test -L "$T/ttySIM0"
out=$(mbpoll -m rtu -b 9600 -P none -a 3 -0 -r 0 -c 8 -t 4:hex -1 -o 2 "$T/ttySIM0" | words)
set -- $out
read -r fh fl < <(f32_hi_lo 250)
read -r ih il < <(u32_hi_lo 98765)
read -r rh rl < <(f32_hi_lo 0.25)
expect_eq "rtu: mag flow FLOAT at 0x00" "$fh $fl" "$1 $2"
expect_eq "rtu: mag flow unit register at 0x02 says m3/h (code 5)" "0x0005" "$3"
expect_eq "rtu: mag total LONG at 0x03" "$ih $il" "$4 $5"
expect_eq "rtu: mag total fraction FLOAT at 0x05" "$rh $rl" "$6 $7"
expect_eq "rtu: mag total unit register at 0x07 says m3 (code 1)" "0x0001" "$8"

# mbpoll (libmodbus) reports a read that got no answer as "Connection timed
# out"; any other failure (a garbled answer, a port it cannot open) is not
# the silence these checks are about.
timed_out() { ! grep -q '^\[' "$1" && grep -q "Connection timed out" "$1"; }

# A unit id nobody answers to times out on RTU (silence, as on a real line).
rc=0
mbpoll -m rtu -b 9600 -P none -a 9 -0 -r 0 -c 2 -t 4:hex -1 -o 0.3 "$T/ttySIM0" >"$T/mbpoll-silent.txt" 2>&1 || rc=$?
check "rtu: mbpoll fails on an unknown unit id" [ "$rc" -ne 0 ]
check "rtu: an unknown unit id stays silent (mbpoll times out)" timed_out "$T/mbpoll-silent.txt"

# Faults switched at run time: the meter goes silent, then answers again.
check "ctl: switch MAG-1 offline" "$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" fault MAG-1 offline
rc=0
mbpoll -m rtu -b 9600 -P none -a 3 -0 -r 0 -c 2 -t 4:hex -1 -o 0.3 "$T/ttySIM0" >"$T/mbpoll-off.txt" 2>&1 || rc=$?
check "rtu: mbpoll fails on an offline meter" [ "$rc" -ne 0 ]
check "rtu: an offline meter does not answer (mbpoll times out)" timed_out "$T/mbpoll-off.txt"
check "ctl: clear MAG-1's fault" "$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" fault MAG-1 none
out=$(mbpoll -m rtu -b 9600 -P none -a 3 -0 -r 0 -c 2 -t 4:hex -1 -o 2 "$T/ttySIM0" | words)
read -r fh fl < <(f32_hi_lo 250)
expect_eq "rtu: the meter answers again after the fault clears" "$fh $fl" "$out"

# Two clients hold the port at once. The kernel merges their two opens into
# one event when both wait unread (here intake-sim is stopped meanwhile).
# When one closes, the other still has the port: intake-sim counts it and
# answers it (a port it took for closed would get no answer).
python3 - "$T/ttySIM0" "$IC_BIN/intake-sim" "$T/sim.sock" "$sim_PID" >"$T/two.out" <<'PY'
import os, select, signal, subprocess, sys, time
dev, sim, sock, pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def status():
    out = subprocess.run([sim, "ctl", "--socket", sock, "status"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("bus line1 "):
            return dict(kv.split("=") for kv in line.split()[2:])
    return {}

def wait(pred, what):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = status()
        if pred(st):
            return st
        time.sleep(0.05)
    print("timeout", what, status(), flush=True)
    sys.exit(1)

def crc(data):
    c = 0xFFFF
    for x in data:
        c ^= x
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
    return bytes([c & 0xFF, c >> 8])

closes0 = int(status()["closes"])
os.kill(pid, signal.SIGSTOP)
a = os.open(dev, os.O_RDWR | os.O_NOCTTY)
b = os.open(dev, os.O_RDWR | os.O_NOCTTY)
os.kill(pid, signal.SIGCONT)
st = wait(lambda st: st.get("open") == "2", "both counted")
print("both", st["open"], flush=True)
os.close(a)
st = wait(lambda st: int(st.get("closes", 0)) > closes0, "the close seen")
print("after", st["open"], flush=True)
req = bytes([3, 3, 0, 0, 0, 2])
os.write(b, req + crc(req))
got = b""
deadline = time.monotonic() + 3
while len(got) < 9 and time.monotonic() < deadline:
    r, _, _ = select.select([b], [], [], 0.1)
    if r:
        got += os.read(b, 64)
print("answer", got.hex(), flush=True)
os.close(b)
st = wait(lambda st: int(st.get("closes", 0)) > closes0 + 1, "the last close seen")
print("last", st["open"], flush=True)
PY
expect_eq "rtu: two clients opening at once are both counted" "both 2" "$(grep '^both' "$T/two.out")"
expect_eq "rtu: when one closes, the other is still counted" "after 1" "$(grep '^after' "$T/two.out")"
read -r fh fl < <(f32_hi_lo 250)
expect_eq "rtu: ... and answered (unit 3, 2 registers)" \
  "answer 030304$(printf '%s%s' "${fh#0x}" "${fl#0x}" | tr 'A-F' 'a-f')" \
  "$(grep '^answer' "$T/two.out" | cut -c1-21)"
expect_eq "rtu: when both have closed, nobody holds the port" "last 0" "$(grep '^last' "$T/two.out")"

check "intake-sim is still running after bad requests" kill -0 "$sim_PID"
stop_pid "$sim_PID"
expect_eq "intake-sim exits 0 on SIGTERM" 0 "$STOP_RC"
check "intake-sim removes its device link on exit" test ! -e "$T/ttySIM0"
finish
