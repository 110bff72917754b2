#!/usr/bin/env bash
# `intake-collector uplink-decode` prints a frame of the bureau's monitoring
# protocol decoded: the three checked vectors field by field, frames given
# back to back or in one argument, and a frame with a bad CS, a short frame
# or text that is not hexadecimal named as such, with exit statuses 0, 1, 2.
source "$(dirname "$0")/lib.sh"

D="$IC_BIN/intake-collector"
rc=0
"$D" uplink-decode 68 1A 68 B3 53 03 81 0D 00 C0 00 59 00 00 00 82 61 10 00 00 01 10 60 00 00 \
  45 08 09 0A 35 16 >"$T/v1.out" 2>"$T/v1.err" || rc=$?
expect_eq "vector 1 decodes (exit 0)" 0 "$rc"
expect_eq "vector 1's fields" \
  '{"len":31,"c":"B3","dir":"up","fcb":3,"type":3,"address":"5303810D00","admin":"530381","station":13,"afn":"C0","function":"report","meters":[{"flow_m3s":5.900,"volume_m3":106182,"raw":"0059000000 8261100000"}],"alarm":"1001","status":"0060","tp":{"day":9,"time":"08:45:00","delay_min":10}}' \
  "$(cat "$T/v1.out")"

rc=0
"$D" uplink-decode "681A68B3140431591BC0840500000000000000002020500000001614002D16" \
  "0x68 08 68 33 53 03 81 0D 00 C0 00 3E 16" \
  "68:1A:68:B3:12:37:89:98:76:C0:00:00:00:00:00:08:00:00:00:00:00:00:00:00:00:57:17:28:00:F1:16" \
  >"$T/three.out" 2>"$T/three.err" || rc=$?
expect_eq "three frames back to back (exit 0)" 0 "$rc"
expect_eq "one line a frame" 3 "$(wc -l <"$T/three.out")"
expect_eq "vector 2: station 7001, flow 0.584, volume 0, alarm 2020, status 0050" \
  '7001 0.584 0 2020 0050 14 16:00:00' \
  "$(sed -n 1p "$T/three.out" | jq -r '[.station, (.meters[0].flow_m3s|tostring), .meters[0].volume_m3, .alarm, .status, .tp.day, .tp.time] | join(" ")')"
expect_eq "the centre's confirm: downlink, report, data 00" 'down C0 00' \
  "$(sed -n 2p "$T/three.out" | jq -r '[.dir, .afn, .data] | join(" ")')"
expect_eq "vector 3: admin 123789, station 30360, flow 0, volume 8, 17:57:00 day 28" \
  '123789 30360 0 8 28 17:57:00 0' \
  "$(sed -n 3p "$T/three.out" | jq -r '[.admin, .station, (.meters[0].flow_m3s|tostring), .meters[0].volume_m3, .tp.day, .tp.time, .tp.delay_min] | join(" ")')"

rc=0
"$D" uplink-decode 68 1A 68 B3 53 03 81 0D 00 C0 00 59 00 00 00 82 61 10 00 00 01 10 60 00 00 \
  45 08 09 0A 36 16 >"$T/crc.out" 2>&1 || rc=$?
expect_eq "a bad CS: exit 1" 1 "$rc"
expect_eq "named with the CS expected" \
  '{"error":"CS (CRC-8) mismatch","len":31,"cs":"36","expected":"35"}' "$(cat "$T/crc.out")"

rc=0
"$D" uplink-decode 68 1A 68 B3 53 03 >"$T/short.out" 2>&1 || rc=$?
expect_eq "a short frame: exit 1" 1 "$rc"
check "named with the length its header announces" grep -q '"expected_len":31' "$T/short.out"

rc=0
"$D" uplink-decode 68 1G >"$T/nothex.out" 2>"$T/nothex.err" || rc=$?
expect_eq "text that is not hexadecimal: exit 2" 2 "$rc"
check "named" grep -q "'G' in \"1G\" is not a hexadecimal digit" "$T/nothex.err"
finish
