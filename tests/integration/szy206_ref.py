#!/usr/bin/env python3
"""The reference encoder of the uplink's tests: the C0H report frame of a
slot, written from the protocol notes (docs/uplink.md), not with the code
under test.

  szy206_ref.py ADDRESS SLOT TZ TP_LEN DELAY FLOW/VOLUME...

ADDRESS: the five address bytes in hex; SLOT: epoch seconds; TZ: the site's
time zone; TP_LEN: 5 (SZY206) or 7 (SL/T 427); each pair a flow in m3/s with
three decimals and a volume in m3, or "-/-" for a meter without a reading
(AA AA AA AA AA for both, alarm D5); a pair ending in "!" is a meter that
reports a fault of its own (its values, alarm D5). Prints the frame in
upper-case hex."""
import datetime
import sys
import zoneinfo


def bcd(n, nbytes):
    out = bytearray()
    for _ in range(nbytes):
        lo = n % 10
        n //= 10
        hi = n % 10
        n //= 10
        out.append(hi << 4 | lo)
    return bytes(out)


def crc8(data):
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0xE5) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def main():
    addr = bytes.fromhex(sys.argv[1])
    slot, tz, tp_len, delay = int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    data = bytearray()
    alarm = 0
    for p in sys.argv[6:]:
        if p.endswith("!"):
            p = p[:-1]
            alarm |= 1 << 5
        flow, vol = p.split("/")
        if flow == "-":
            data += b"\xAA" * 10
            alarm |= 1 << 5
        else:
            data += bcd(int(flow.replace(".", "")), 5) + bcd(int(vol), 5)
    data += alarm.to_bytes(2, "little") + (0).to_bytes(2, "little")
    t = datetime.datetime.fromtimestamp(slot, zoneinfo.ZoneInfo(tz))
    data += bcd(t.second, 1) + bcd(t.minute, 1) + bcd(t.hour, 1) + bcd(t.day, 1)
    if tp_len == 7:
        data += bcd(t.month, 1) + bcd(t.year % 100, 1)
    data += bytes([delay])
    user = bytes([0xB3]) + addr + bytes([0xC0]) + bytes(data)
    frame = bytes([0x68, len(user), 0x68]) + user + bytes([crc8(user), 0x16])
    print(frame.hex().upper())


main()
