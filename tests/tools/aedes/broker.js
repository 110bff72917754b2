// A second, independent MQTT broker for the delivery tests.
//
// The gateway must deliver to any standard MQTT 3.1.1 broker, not only to
// mosquitto, so the delivery tests can run the same scenarios against aedes.
// This broker listens on plain TCP without authentication and keeps
// everything in memory (aedes' default persistence): retained messages,
// persistent sessions with QoS 1 messages queued for subscribers that
// connected with clean session = false while they are away, and Last Will
// messages. Nothing survives a restart of the broker, which is what a test
// that starts a fresh broker expects.
//
// Usage: node broker.js --port PORT [--host 127.0.0.1]
//
// The tests read stderr: one line "aedes running on HOST:PORT" once the
// broker accepts connections, then one line per client connect, disconnect
// and error. Nothing is written to stdout. SIGTERM or SIGINT closes every
// client and the listener and exits with status 0.

'use strict'

const { createServer } = require('node:net')
const process = require('node:process')
const aedes = require('aedes')

function log (line) {
  process.stderr.write(line + '\n')
}

function fail (message) {
  log('aedes broker: ' + message)
  process.exit(2)
}

function usage () {
  fail('usage: node broker.js --port PORT [--host HOST]')
}

let host = '127.0.0.1'
let port = null
const args = process.argv.slice(2)
for (let i = 0; i < args.length; i++) {
  const arg = args[i]
  if ((arg === '--port' || arg === '--host') && i + 1 < args.length) {
    const value = args[++i]
    if (arg === '--port') {
      port = value
    } else {
      host = value
    }
  } else {
    usage()
  }
}
if (port === null || !/^[0-9]+$/.test(port) || Number(port) > 65535) {
  usage()
}
port = Number(port)

// aedes 0.51 runs on the Node.js of Debian 12 (18) and later ones alike.
const broker = aedes()

function protocolName (version) {
  if (version === 3) return 'MQTT 3.1'
  if (version === 4) return 'MQTT 3.1.1'
  if (version === 5) return 'MQTT 5'
  return 'unknown'
}

// The CONNECT packet's client id and protocol version are kept on the client
// as soon as the packet arrives, so that a refused connection (for instance
// an MQTT 5 client, which aedes answers with "unacceptable protocol
// version") can still be logged with who asked and in which version. Every
// connection is let through to aedes' own checks.
broker.preConnect = function (client, packet, callback) {
  client.requestedId = packet.clientId
  client.requestedVersion = packet.protocolVersion
  callback(null, true)
}

// Logged once the CONNACK has been sent and the queued messages of a
// persistent session have been handed over, so a test that sees this line
// knows the client is fully connected.
broker.on('clientReady', function (client) {
  log('client connected: id=' + client.id +
    ' protocol=' + client.version + ' (' + protocolName(client.version) + ')' +
    ' clean=' + client.clean)
})

broker.on('clientDisconnect', function (client) {
  log('client disconnected: id=' + client.id)
})

// An error on a client that had been accepted (a dropped socket, a keepalive
// timeout, a malformed packet).
broker.on('clientError', function (client, err) {
  log('client error: id=' + client.id + ': ' + err.message)
})

// An error before a client was accepted, including a refused CONNECT.
broker.on('connectionError', function (client, err) {
  const version = client.requestedVersion
  log('connection error: id=' + (client.requestedId === undefined ? '?' : client.requestedId) +
    ' protocol=' + (version === undefined ? '?' : version + ' (' + protocolName(version) + ')') +
    ': ' + err.message)
})

const server = createServer(broker.handle)

server.on('error', function (err) {
  fail('cannot listen on ' + host + ':' + port + ': ' + err.message)
})

server.listen(port, host, function () {
  const address = server.address()
  log('aedes running on ' + address.address + ':' + address.port)
})

let stopping = false
function stop (signal) {
  if (stopping) return
  stopping = true
  log('aedes stopping on ' + signal)
  // A client that never answers must not keep a test waiting: after a
  // short grace period the process ends anyway.
  setTimeout(function () {
    log('aedes stop timed out, exiting')
    process.exit(0)
  }, 3000).unref()
  server.close()
  broker.close(function () {
    process.exit(0)
  })
}
process.on('SIGTERM', () => stop('SIGTERM'))
process.on('SIGINT', () => stop('SIGINT'))
