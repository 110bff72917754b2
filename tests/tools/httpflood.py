#!/usr/bin/env python3
"""Hold many connections to an HTTP endpoint without finishing a request.

usage: httpflood.py PORT COUNT [--slow]

Opens COUNT TCP connections to 127.0.0.1:PORT at once (non-blocking
connects, the open-file limit raised to what COUNT needs) and holds them
until SIGTERM. With --slow each open connection sends one more byte of a
request head that never ends every half second (slowloris); without it
they stay silent. Prints "settled OPEN CLOSED FAILED" once every connect
has ended one way or the other (OPEN: still held, CLOSED: closed by the
server, FAILED: never connected), and at SIGTERM "open N closed-by-peer M".
"""
import errno
import resource
import selectors
import signal
import socket
import sys
import time

HEAD = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100000


def main():
    port, count = int(sys.argv[1]), int(sys.argv[2])
    slow = "--slow" in sys.argv[3:]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 64 if hard == resource.RLIM_INFINITY else min(hard, count + 64)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    sel = selectors.DefaultSelector()
    connecting, held = set(), {}  # held: socket -> bytes of HEAD sent
    closed = failed = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex(("127.0.0.1", port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            failed += 1
            continue
        connecting.add(s)
        sel.register(s, selectors.EVENT_WRITE)

    settled = False
    last_trickle = time.monotonic()
    while not stop:
        for key, events in sel.select(timeout=0.1):
            s = key.fileobj
            if s in connecting:
                connecting.discard(s)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    sel.unregister(s)
                    s.close()
                    failed += 1
                else:
                    held[s] = 0
                    sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:  # closed by the server (or reset)
                sel.unregister(s)
                del held[s]
                s.close()
                closed += 1
        if not settled and not connecting:
            settled = True
            print("settled %d %d %d" % (len(held), closed, failed), flush=True)
        if slow and time.monotonic() - last_trickle >= 0.5:
            last_trickle = time.monotonic()
            for s, sent in list(held.items()):
                try:
                    s.send(HEAD[sent:sent + 1])
                    held[s] = sent + 1
                except OSError:
                    pass
    print("open %d closed-by-peer %d" % (len(held), closed), flush=True)


if __name__ == "__main__":
    main()
