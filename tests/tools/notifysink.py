#!/usr/bin/env python3
"""notifysink: what systemd's notify socket would hear, for the tests.

  notifysink.py SOCKET OUT

Binds a unix datagram socket at SOCKET (give it to the daemon as
NOTIFY_SOCKET) and appends each assignment of each datagram (READY=1,
STATUS=..., WATCHDOG=1, STOPPING=1) to OUT as a line "SECONDS NAME=VALUE",
SECONDS being the monotonic clock (CLOCK_MONOTONIC, as /proc/uptime is not
precise enough). Prints "listening" on stdout once bound.
"""
import os
import socket
import sys
import time


def main():
    path, out = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    with open(out, "a", buffering=1) as f:
        print("listening", flush=True)
        while True:
            data = s.recv(65536)
            now = time.monotonic()
            for line in data.decode("utf-8", "replace").split("\n"):
                if line:
                    f.write("%.3f %s\n" % (now, line))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    finally:
        try:
            os.unlink(sys.argv[1])
        except OSError:
            pass
