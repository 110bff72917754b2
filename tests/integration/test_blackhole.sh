#!/usr/bin/env bash
# A black-holed link: the path to the broker (through a relay owned by the
# test) stops forwarding without closing, so the connection hangs. Both ends
# notice through the MQTT keepalive (2 s): the broker publishes the Last Will
# after 1.5 keepalives without a packet; the daemon (paho) sends a PINGREQ
# once a keepalive has passed without a packet from the broker, gives the
# connection up when no PINGRESP has come 1.5 keepalives later, and tries
# again 1 s after that (the first step of its back-off). Once the path
# returns the gateway is back on the broker at once and has lost nothing:
# every sequence number reaches the broker. Times are measured outside the
# daemon: the sockets of the relay's port (ss), and the time the subscriber
# receives each gateway state.
source "$(dirname "$0")/lib.sh"

KEEPALIVE_MS=2000

read -r MQTT_PORT RELAY_PORT TCP_PORT < <(free_ports 3)
cat >"$T/site.yaml" <<YAML
site: {id: hole}
mqtt: {url: "mqtt://127.0.0.1:$RELAY_PORT", keepalive: 2s}
storage: {path: ./readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
  - {id: A, bus: plc, unit: 1, profile: mag-00h, interval: 200ms}
  - {id: B, bus: plc, unit: 2, profile: tuf2000m, interval: 200ms}
YAML
DB="$T/readings.db"

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/hole/+/reading'
# The gateway state as the broker hands it out, each with the subscriber's
# time of arrival (seconds since the epoch, to the nanosecond).
start gw stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -q 1 \
  -t 'water/hole/gateway/state' -F '%U %p' -d
wait_for "$T/gw.out" "received SUBACK" 10 "$gw_PID"
# gw_at ONLINE AFTER_MS: when (ms) the subscriber first received a gateway
# state with "online" ONLINE at or after AFTER_MS; nothing when none yet.
gw_at() {
  { grep -E '^[0-9]+\.[0-9]+ \{' "$T/gw.out" || true; } | while read -r t p; do
    local ms=$((${t%%.*} * 1000 + 10#${t#*.} / 1000000))
    if [ "$ms" -ge "$2" ] && [ "$(jq -r .online <<<"$p")" = "$1" ]; then echo "$ms"; break; fi
  done
}
# relay_conns: the connections the gateway opened to the relay's port, one
# "STATE PEER_PORT" line each, seen from the relay's side. A connection the
# relay has not accepted yet (the path is black-holed) is there too: the
# kernel completes the handshake into the listening socket's queue.
relay_conns() {
  ss -Htna "( sport = :$RELAY_PORT )" | awk '$1 != "LISTEN" { n = split($5, a, ":"); print $1, a[n] }'
}
start relay "$IC_TEST_BIN/ic-tcprelay" "$RELAY_PORT" "$MQTT_PORT" "$T"
wait_for "$T/relay.out" '^ready' 10 "$relay_PID"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.log" "broker connected" 20 "$collector_PID"
some() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 1')" -ge 10 ]; }
wait_until 20 "readings delivered through the relay" some

online=$(gw_at true 0)
check "the broker has the gateway online" test -n "$online"
conns=$(relay_conns)
expect_eq "one connection through the relay" 1 "$(grep -c '^ESTAB ' <<<"$conns")"
first_port=$(awk '$1 == "ESTAB" { print $2 }' <<<"$conns")
known=$(awk '{ print $2 }' <<<"$conns" | tr '\n' ' ')

# The path goes dead without a word. Watch the relay's port: when the
# gateway gives its connection up, the relay's end of it leaves ESTAB (it
# gets the FIN, unread); its next attempt is a connection from a new port.
touch "$T/blackhole"
t0=$(now_ms)
t_closed="" t_retry=""
while [ $(($(now_ms) - t0)) -lt 30000 ] && { [ -z "$t_closed" ] || [ -z "$t_retry" ]; }; do
  conns=$(relay_conns)
  now=$(now_ms)
  if [ -z "$t_closed" ] && ! grep -q "^ESTAB $first_port\$" <<<"$conns"; then t_closed=$now; fi
  if [ -z "$t_retry" ] && awk -v k=" $known" 'NF == 2 && index(k, " " $2 " ") == 0 { f = 1 } END { exit !f }' <<<"$conns"; then
    t_retry=$now
  fi
  sleep 0.05
done
# The broker ends a connection silent for more than 1.5 keepalives, counted
# in whole seconds (up to 1 s more) and looked at about once a second (1 s
# more); the relay sees the black hole within 50 ms: 3 s of slack.
will_seen() { [ -n "$(gw_at false "$t0")" ]; }
wait_until 30 "the Last Will on the broker" will_seen
t_will=$(gw_at false "$t0")
check "the broker publishes the Last Will within 1.5 keepalives + 3 s of the black hole ($((t_will - t0)) ms)" \
  test $((t_will - t0)) -le $((KEEPALIVE_MS * 3 / 2 + 3000))
# The daemon (paho): a PINGREQ a keepalive after the last packet from the
# broker, the connection given up when no PINGRESP has come 1.5 keepalives
# later, each looked at about once a second: 2.5 keepalives + 2 s.
check "the gateway gives the dead connection up within 2.5 keepalives + 2 s (after ${t_closed:+$((t_closed - t0))} ms)" \
  test -n "$t_closed" -a "$((${t_closed:-$t0} - t0))" -le $((KEEPALIVE_MS * 5 / 2 + 2000))
# 1 s, less 100 ms for a timer armed on the loop's cached time, plus 600 ms
# for the loss to reach the loop, the connect and the 50 ms between looks.
check "and tries again 1 s later (the first step of the back-off; ${t_retry:+$((t_retry - t_closed))} ms)" \
  test -n "$t_retry" -a -n "$t_closed" -a "$((${t_retry:-0} - ${t_closed:-0}))" -ge 900 \
  -a "$((${t_retry:-0} - ${t_closed:-0}))" -le 1600
piled() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -ge 20 ]; }
wait_until 20 "readings kept while the path is dead" piled

# The path returns: the attempt waiting in it (its CONNACK is given 10 s)
# goes through, and the broker has the gateway back at once.
rm "$T/blackhole"
t1=$(now_ms)
back() { [ -n "$(gw_at true "$t1")" ]; }
wait_until 60 "the gateway back on the broker once the path returned" back
t_back=$(gw_at true "$t1")
check "the gateway is back on the broker within 2 s of the path's return ($((t_back - t1)) ms)" \
  test $((t_back - t1)) -le 2000
# The meters stop, so that no reading is taken while the daemon stops (it
# would stay in the outbox for the next start, by design).
stop_meters "$T/collector.log" 2
drained() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -eq 0 ]; }
wait_until 60 "the outbox drained" drained
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"

rows=$(sql "$DB" 'SELECT count(*) FROM readings')
seen() { [ "$(messages sub reading | jq -s 'unique_by(.meter, .seq) | length')" -ge "$rows" ]; }
wait_until 30 "the subscriber has every stored reading" seen
messages sub reading >"$T/readings.json"
for m in A B; do
  last=$(sql "$DB" "SELECT last_seq FROM meters WHERE id = '$m'")
  expect_eq "meter $m: every seq 1..$last reached the broker" 0 \
    "$(missing_seqs "$T/readings.json" "$m" "$last")"
done
finish
