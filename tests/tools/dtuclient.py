#!/usr/bin/env python3
"""Connections to a DTU server as a test needs them, on loopback.

  dtuclient.py send PORT SRC TEXT TIMEOUT   connect from SRC, send TEXT, and
      report whether the server closed the connection within TIMEOUT seconds:
      "closed MS" or "open"
  dtuclient.py silent PORT TIMEOUT          connect, send nothing: "closed MS"
      or "open"
  dtuclient.py stages PORT TEXT GO N TIMEOUT  connect, send TEXT, print
      "sent"; once the file GO exists, send N bytes more ("A"s) and report as
      send does
  dtuclient.py idle PORT N HOLD             open N connections that never
      register, print "opened N", keep them HOLD seconds, then print
      "closed-by-server K" (how many the server closed meanwhile)
"""
import os
import select
import socket
import sys
import time


def connect(port, src="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def wait_closed(s, timeout):
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([s], [], [], left)
        if r:
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                return int((time.monotonic() - t0) * 1000)


def main():
    cmd = sys.argv[1]
    port = int(sys.argv[2])
    if cmd == "send":
        src, text, timeout = sys.argv[3], sys.argv[4], float(sys.argv[5])
        s = connect(port, src)
        try:
            s.sendall(text.encode())
        except (BrokenPipeError, ConnectionResetError):
            pass
        ms = wait_closed(s, timeout)
        print("open" if ms is None else "closed %d" % ms, flush=True)
    elif cmd == "stages":
        text, go, n, timeout = sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
        s = connect(port)
        s.sendall(text.encode())
        print("sent", flush=True)
        deadline = time.monotonic() + 60
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            s.sendall(b"A" * n)
        except (BrokenPipeError, ConnectionResetError):
            pass
        ms = wait_closed(s, timeout)
        print("open" if ms is None else "closed %d" % ms, flush=True)
    elif cmd == "silent":
        s = connect(port)
        ms = wait_closed(s, float(sys.argv[3]))
        print("open" if ms is None else "closed %d" % ms, flush=True)
    elif cmd == "idle":
        n, hold = int(sys.argv[3]), float(sys.argv[4])
        socks = []
        for _ in range(n):
            try:
                socks.append(connect(port))
            except OSError:
                break
        print("opened %d" % len(socks), flush=True)
        closed = set()
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline:
            live = [s for s in socks if s.fileno() not in closed]
            if not live:
                time.sleep(0.05)
                continue
            r, _, _ = select.select(live[:900], [], [], 0.1)
            for s in r:
                try:
                    if not s.recv(4096):
                        closed.add(s.fileno())
                except OSError:
                    closed.add(s.fileno())
        print("closed-by-server %d" % len(closed), flush=True)
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
