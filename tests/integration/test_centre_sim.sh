#!/usr/bin/env bash
# The centre simulator (tests/tools/centre.c) that the uplink's tests stand
# on: it confirms a good report with the confirm a public decoder gives for
# it, byte for byte; a frame with a bad CS, or from an address it does not
# know, is logged as such and not confirmed; told to, it stays silent,
# drops the connection, or refuses connections, and then confirms again.
source "$(dirname "$0")/lib.sh"

read -r port < <(free_ports 1)
V1="681A68B35303810D00C00059000000826110000001106000004508090A3516"
BADCS="681A68B35303810D00C00059000000826110000001106000004508090A3616"
OTHER="681A68B3140431591BC0840500000000000000002020500000001614002D16"

# send HEX...: one connection; each frame sent, then what came back within
# a second printed as hex ("-" for nothing, "closed" when the centre closed).
send() {
  python3 - "$port" "$@" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
for h in sys.argv[2:]:
    s.sendall(bytes.fromhex(h))
    s.settimeout(1.0)
    try:
        got = s.recv(4096)
        print(got.hex().upper() if got else "closed")
    except socket.timeout:
        print("-")
PY
}
mode() { echo "$1" >"$T/mode.tmp" && mv "$T/mode.tmp" "$T/mode"; wait_for "$T/centre.out" "\"mode\":\"$1\"" 10 "$centre_PID"; }

start centre "$IC_TEST_BIN/ic-centre" "$port" "$T/mode" --station 5303810D00
wait_for "$T/centre.out" '^ready confirm' 10 "$centre_PID"

expect_eq "a good report is confirmed with the public decoder's confirm" \
  "$(printf '%s\n' 680868335303810D00C0003E16 - -)" "$(send "$V1" "$BADCS" "$OTHER")"
expect_eq "three frames logged" 3 "$(grep -c '"event":"frame"' "$T/centre.out")"
expect_eq "the report: ok, address known, decoded, confirmed" \
  'true true 13 5.9 106182 confirmed' \
  "$(grep '"event":"frame"' "$T/centre.out" | sed -n 1p | jq -r '[.ok, .address_ok, .frame.station, (.frame.meters[0].flow_m3s|tostring), .frame.meters[0].volume_m3, .answer] | join(" ")')"
expect_eq "the bad CS: not ok, not confirmed" 'false none CS (CRC-8) mismatch' \
  "$(grep '"event":"frame"' "$T/centre.out" | sed -n 2p | jq -r '[.ok, .answer, .frame.error] | join(" ")')"
expect_eq "another station's address: not confirmed" 'true false none' \
  "$(grep '"event":"frame"' "$T/centre.out" | sed -n 3p | jq -r '[.ok, .address_ok, .answer] | join(" ")')"

mode silent
expect_eq "silent: no confirm" "-" "$(send "$V1")"
mode drop
expect_eq "drop: the connection is closed at the first frame" "closed" "$(send "$V1")"
mode refuse
rc=0
send "$V1" >/dev/null 2>&1 || rc=$?
check "refuse: the connection is refused" [ "$rc" -ne 0 ]
mode confirm
expect_eq "confirm again, on the same port" "680868335303810D00C0003E16" "$(send "$V1")"
stop_pid "$centre_PID"
expect_eq "SIGTERM ends it with status 0" 0 "$STOP_RC"
finish
