// ic-stray-ack-broker: a minimal MQTT 5 "broker" for one client that
// acknowledges what it is sent (CONNACK, PUBACK, SUBACK, UNSUBACK,
// PINGRESP) and, after the 5th, 10th and 15th PUBACK, sends one more
// PUBACK for packet id 65000, which the client never used: a protocol error
// no real broker makes, for the test of how the gateway treats it. Messages
// are not passed on to anyone. Node.js, no modules.
//
//   node stray-ack-broker.js PORT
//
// Prints "ready" once it listens and "stray N" for each stray PUBACK sent.
'use strict';
const net = require('net');

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node stray-ack-broker.js PORT');
  process.exit(2);
}

// A packet's remaining length (variable byte integer) at BUF[OFF]:
// [length, bytes used], or null when not all there yet.
function remaining(buf, off) {
  let v = 0, mul = 1;
  for (let i = 0; i < 4; i++) {
    if (off + i >= buf.length) return null;
    const b = buf[off + i];
    v += (b & 0x7f) * mul;
    if (!(b & 0x80)) return [v, i + 1];
    mul *= 128;
  }
  return [-1, 4];
}

// The topic filters of a SUBSCRIBE or UNSUBSCRIBE body after its packet id
// and properties; SUB: each is followed by an options byte.
function filters(body, sub) {
  const pl = remaining(body, 2);
  let off = 2 + pl[1] + pl[0], n = 0;
  while (off + 2 <= body.length) {
    off += 2 + body.readUInt16BE(off) + (sub ? 1 : 0);
    n++;
  }
  return n;
}

let acks = 0, strays = 0;
const server = net.createServer((sock) => {
  let buf = Buffer.alloc(0);
  sock.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      const rl = buf.length > 1 ? remaining(buf, 1) : null;
      if (!rl) return;
      if (rl[0] < 0) { sock.destroy(); return; }
      const start = 1 + rl[1], end = start + rl[0];
      if (buf.length < end) return;
      const type = buf[0] >> 4, flags = buf[0] & 15, body = buf.subarray(start, end);
      buf = buf.subarray(end);
      if (type === 1) {            // CONNECT -> CONNACK, success, no properties
        sock.write(Buffer.from([0x20, 0x03, 0x00, 0x00, 0x00]));
      } else if (type === 3 && (flags >> 1) & 3) { // PUBLISH QoS 1 -> PUBACK
        const id = body.readUInt16BE(2 + body.readUInt16BE(0));
        sock.write(Buffer.from([0x40, 0x02, id >> 8, id & 255]));
        if (++acks % 5 === 0 && strays < 3) {
          sock.write(Buffer.from([0x40, 0x02, 65000 >> 8, 65000 & 255]));
          console.log(`stray ${++strays}`);
        }
      } else if (type === 8 || type === 10) { // SUBSCRIBE / UNSUBSCRIBE
        const n = filters(body, type === 8);
        const out = Buffer.alloc(5 + n, type === 8 ? 1 : 0);
        out[0] = type === 8 ? 0x90 : 0xb0;
        out[1] = 3 + n;
        out[2] = body[0];
        out[3] = body[1];
        out[4] = 0;                // no properties; then QoS 1 granted / success
        sock.write(out);
      } else if (type === 12) {    // PINGREQ -> PINGRESP
        sock.write(Buffer.from([0xd0, 0x00]));
      } else if (type === 14) {    // DISCONNECT
        sock.end();
      }
    }
  });
  sock.on('error', () => {});
});
server.listen(port, '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => process.exit(0));
