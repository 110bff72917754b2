// ic-rm0-broker: an MQTT 5 "broker" that answers every CONNECT with a
// CONNACK granting a Receive Maximum of 0, a protocol error (MQTT 5,
// 3.2.2.3.3) no real broker sends; for the test of how the gateway treats
// it. Node.js, no modules.
//
//   node rm0-broker.js PORT
//
// Prints "ready" once it listens and "connect N" for each CONNECT answered.
'use strict';
const net = require('net');

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node rm0-broker.js PORT');
  process.exit(2);
}
// CONNACK: flags 0, reason 0 (success), properties: Receive Maximum (0x21) = 0.
const connack = Buffer.from([0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x00]);
let n = 0;
const server = net.createServer((sock) => {
  let answered = false;
  sock.on('data', (chunk) => {
    // The first byte of a CONNECT is 0x10; anything after it is ignored.
    if (!answered && chunk.length > 0 && chunk[0] === 0x10) {
      answered = true;
      sock.write(connack);
      console.log(`connect ${++n}`);
    }
  });
  sock.on('error', () => {});
});
server.listen(port, '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => process.exit(0));
