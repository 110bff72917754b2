#!/usr/bin/env python3
"""Hold many connections to an HTTP endpoint without finishing a request.

usage: httpflood.py PORT COUNT [--slow] [--rate N]

Opens COUNT TCP connections to 127.0.0.1:PORT at once (non-blocking
connects, the open-file limit raised to what COUNT needs) and holds them
until SIGTERM; with --rate, N new connections a second instead, until
COUNT are open (a steady stream of newcomers; "streaming" is printed once
the first second's worth are opened). With --slow each open connection sends one more byte of a
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
    rate = 0
    if "--rate" in sys.argv[3:]:
        rate = int(sys.argv[sys.argv.index("--rate") + 1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 64 if hard == resource.RLIM_INFINITY else min(hard, count + 64)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    sel = selectors.DefaultSelector()
    connecting, held = set(), {}  # held: socket -> bytes of HEAD sent
    closed = failed = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def open_one():
        nonlocal failed
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex(("127.0.0.1", port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            failed += 1
            return
        connecting.add(s)
        sel.register(s, selectors.EVENT_WRITE)

    t0 = time.monotonic()
    opened = 0
    if not rate:
        for _ in range(count):
            open_one()
        opened = count

    settled = streaming = False
    last_trickle = time.monotonic()
    while not stop:
        if opened < count:
            due = min(count, int((time.monotonic() - t0) * rate) + 1)
            while opened < due:
                open_one()
                opened += 1
        if rate and not streaming and opened >= rate:
            streaming = True
            print("streaming", flush=True)
        wait = 0.1 if opened >= count else 0.001
        for key, events in sel.select(timeout=wait):
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
        if not settled and not connecting and opened >= count:
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
