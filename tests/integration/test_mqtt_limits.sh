#!/usr/bin/env bash
# The broker's CONNACK limits, each against a mosquitto with that one setting
# changed:
# - Maximum Packet Size (MQTT 5): a reading larger than the broker takes is
#   refused clearly (one log line, counted), stays in the outbox, and the
#   other meters keep flowing; the online-rate document is trimmed to fit;
#   the connection is never dropped.
# - Maximum QoS 0: a clear error, and no reading is ever marked delivered.
# - Retain Available 0: readings flow, the state topics go out unretained,
#   and the gateway state says so.
# - Under MQTT 3.1.1 the broker states no limit and closes the connection on
#   a packet too large: the message it closed on twice in a row is set aside
#   and everything else flows.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT P1 < <(free_ports 2)
# A meter whose readings are about 2.9 KB: 60 status words with long names
# (more than the 2 KiB a reading once could not exceed).
{
  echo "name: wide-meter"
  echo "table: holding"
  echo "word_order: abcd"
  echo "fields:"
  for i in $(seq 0 59); do
    printf '  - {name: status_word_with_a_long_descriptive_name_%02d, role: status, address: %d, type: u16}\n' "$i" "$i"
  done
} >"$T/wide.yaml"

# site VERSION DB: 18 normal meters and the wide one on one Modbus TCP line
# (the online-rate document lists them all: about 1.9 KB).
site() {
  {
    cat <<YAML
site: {id: limits}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT", client_id: limits-gw, version: $1}
storage: {path: ./readings-$2.db}
sim: {control: ./sim.sock}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $P1, timeout: 1s}
meters:
  - {id: WIDE, bus: plc, unit: 99, profile: ./wide.yaml, interval: 500ms}
YAML
    for u in $(seq 1 18); do
      echo "  - {id: M$u, bus: plc, unit: $u, profile: mag-00h, interval: 500ms}"
    done
  } >"$T/site-$2.yaml"
}

# broker_with NAME LINE: a fresh mosquitto with one setting changed.
broker_with() {
  rm -rf "$T/broker"
  start_broker "$1" "$MQTT_PORT" "$2"
}

# stamped NAME: a subscriber that prints retain flag, topic and payload.
stamped() {
  start "$1" stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -q 1 -V mqttv5 \
    -t 'water/limits/#' -F '%r %t %p' -d
  local pidvar="${1//-/_}_PID"
  wait_for "$T/$1.out" "received SUBACK" 10 "${!pidvar}"
}

readings_of() { grep -cE "^[01] water/limits/$2/reading " "$T/$1.out" || true; }

site 5 a
start sim "$IC_BIN/intake-sim" --config "$T/site-a.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"

# --- Maximum Packet Size 1500, MQTT 5 ---------------------------------------
broker_with broker1 "max_packet_size 1500"
stamped sub1
start col1 "$IC_BIN/intake-collector" --config "$T/site-a.yaml"
wait_for "$T/col1.log" "broker connected" 20 "$col1_PID"
check "the daemon read the limit from the CONNACK" \
  grep -q "maximum packet size 1500" "$T/col1.log"
enough1() { [ "$(readings_of sub1 M6)" -ge 10 ]; }
wait_until 30 "ten readings of M6" enough1
# Five seconds of readings: about ten of WIDE were taken.
sleep_until=$(( $(now_ms) + 5000 ))
later() { [ "$(now_ms)" -ge "$sleep_until" ]; }
wait_until 10 "five more seconds" later
DB="$T/readings-a.db"
wide_rows=$(sql "$DB" "SELECT count(*) FROM readings WHERE meter = 'WIDE'")
check "readings of the wide meter were stored ($wide_rows)" test "$wide_rows" -ge 5
expect_eq "none of them reached the broker" 0 "$(readings_of sub1 WIDE)"
expect_eq "they all stay in the outbox" "$wide_rows" \
  "$(sql "$DB" "SELECT count(*) FROM readings WHERE meter = 'WIDE' AND delivered = 0")"
expect_eq "the other meters' readings are all delivered but the last moments'" 0 \
  "$(sql "$DB" "SELECT count(*) FROM readings WHERE meter != 'WIDE' AND delivered = 0
                AND ts_ms < $(( $(now_ms) - 2000 ))")"
expect_eq "the refusal is logged once for the meter" 1 \
  "$(grep -c 'a reading of meter WIDE is [0-9]* bytes, larger than the broker takes (Maximum Packet Size 1500)' "$T/col1.log")"
expect_eq "the connection was never dropped" 0 "$(grep -c 'connection lost' "$T/col1.log" || true)"
rate=$(grep -E '^[01] water/limits/online-rate ' "$T/sub1.out" | tail -n 1 | cut -d' ' -f3-)
check "the online-rate document arrived" test -n "$rate"
check "trimmed to fit: its per-meter list left out, the counts kept" \
  jq -e '.meters_omitted == 19 and .meters_total == 19 and (has("meters") | not)' <<<"$rate"
check "within the broker's limit (${#rate} bytes)" test "${#rate}" -lt 1450
gwstate=$(grep -E '^[01] water/limits/gateway/state ' "$T/sub1.out" | tail -n 1 | cut -d' ' -f3-)
check "the gateway state gives the limit and counts the refusals" \
  jq -e '.mqtt.maximum_packet_size == 1500 and .mqtt.version == "5" and .counters.too_large >= 1' \
  <<<"$gwstate"
stop_pid "$col1_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
stop_pid "$sub1_PID"
stop_pid "$broker1_PID"

# --- Maximum QoS 0 ------------------------------------------------------------
site 5 b
broker_with broker2 "max_qos 0"
start col2 "$IC_BIN/intake-collector" --config "$T/site-b.yaml"
wait_for "$T/col2.log" "grants QoS 0 only" 20 "$col2_PID"
taken() { [ "$(sql "$T/readings-b.db" 'SELECT count(*) FROM readings')" -ge 30 ]; }
wait_until 20 "readings taken meanwhile" taken
expect_eq "no reading is marked delivered" 0 \
  "$(sql "$T/readings-b.db" 'SELECT count(*) FROM readings WHERE delivered = 1')"
check "an error line says what to change on the broker" \
  grep -qE "^error .*grants QoS 0 only.*allow QoS 1 on the broker" "$T/col2.log"
check "and the daemon never called the broker connected" \
  bash -c "! grep -q 'broker connected' '$T/col2.log'"
stop_pid "$col2_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
stop_pid "$broker2_PID"

# --- Retain Available 0 ---------------------------------------------------------
site 5 c
broker_with broker3 "retain_available false"
stamped sub3
start col3 "$IC_BIN/intake-collector" --config "$T/site-c.yaml"
wait_for "$T/col3.log" "broker connected" 20 "$col3_PID"
enough3() { [ "$(readings_of sub3 M1)" -ge 5 ] && grep -qE '^0 water/limits/gateway/state ' "$T/sub3.out"; }
wait_until 30 "readings and a gateway state" enough3
# A retained publish would make this broker close the connection (MQTT 5
# reason 0x9A): the gateway sent none.
expect_eq "the connection was never dropped" 0 "$(grep -c 'connection lost' "$T/col3.log" || true)"
gwstate=$(grep -E '^0 water/limits/gateway/state ' "$T/sub3.out" | tail -n 1 | cut -d' ' -f3-)
check "the gateway state says the broker keeps no retained messages" \
  jq -e '.mqtt.retain_available == false' <<<"$gwstate"
expect_eq "the log says so once" 1 "$(grep -c 'keeps no retained messages (Retain Available 0)' "$T/col3.log")"
stop_pid "$col3_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
stop_pid "$sub3_PID"
stop_pid "$broker3_PID"

# --- MQTT 3.1.1, a broker that closes on a packet too large -------------------
site 3.1.1 d
broker_with broker4 "max_packet_size 1500"
stamped sub4
start col4 "$IC_BIN/intake-collector" --config "$T/site-d.yaml"
wait_for "$T/col4.log" "set aside" 60 "$col4_PID"
enough4() { [ "$(readings_of sub4 M6)" -ge 10 ]; }
wait_until 60 "the other meters flow after the set-aside" enough4
expect_eq "none of the wide meter's readings reached the broker" 0 "$(readings_of sub4 WIDE)"
check "the log names the meter it set aside" \
  grep -q "closed the connection twice on the reading of meter WIDE" "$T/col4.log"
drops=$(grep -c 'connection lost' "$T/col4.log" || true)
# Two for each of the two messages too large (the online-rate document and
# the wide meter's reading), and some to find them: what goes first after a
# connect shifts while the meters' states come and go (5 on a quiet
# machine, 9 under load).
check "a bounded number of dropped connections ($drops)" test "$drops" -le 16
check "the online-rate document was set aside too" \
  grep -q "closed the connection twice on the site's online-rate message: set aside" "$T/col4.log"
sleep_until=$(( $(now_ms) + 5000 ))
wait_until 10 "five more seconds" later
expect_eq "no connection dropped since" "$drops" "$(grep -c 'connection lost' "$T/col4.log" || true)"
expect_eq "the other meters' readings are all delivered but the last moments'" 0 \
  "$(sql "$T/readings-d.db" "SELECT count(*) FROM readings WHERE meter != 'WIDE' AND delivered = 0
                             AND ts_ms < $(( $(now_ms) - 2000 ))")"
stop_pid "$col4_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"

# --- A CONNACK with Receive Maximum 0 (a protocol error) ----------------------
# No real broker sends one: a stand-in that answers every CONNECT so.
stop_pid "$broker4_PID"
site 5 e
start rm0 stdbuf -oL node "$IC_SOURCE_DIR/tests/tools/rm0-broker.js" "$MQTT_PORT"
wait_for "$T/rm0.out" '^ready' 10 "$rm0_PID"
start col5 "$IC_BIN/intake-collector" --config "$T/site-e.yaml"
thrice() { [ "$(grep -c '^connect' "$T/rm0.out")" -ge 3 ]; }
wait_until 30 "three connects answered with Receive Maximum 0" thrice
stop_pid "$col5_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
expect_eq "Receive Maximum 0 is logged once over three attempts" 1 \
  "$(grep -c 'Receive Maximum of 0, a protocol error' "$T/col5.log" || true)"
expect_eq "and no reading is marked delivered" 0 \
  "$(sql "$T/readings-e.db" 'SELECT count(*) FROM readings WHERE delivered = 1')"
stop_pid "$rm0_PID"

# --- PUBACKs for a packet id never sent ---------------------------------------
# Another stand-in: it acknowledges everything, and three times sends one
# more PUBACK, for packet id 65000.
site 5 f
read -r MPORT < <(free_ports 1)
echo "metrics: {listen: \"127.0.0.1:$MPORT\"}" >>"$T/site-f.yaml"
start stray stdbuf -oL node "$IC_SOURCE_DIR/tests/tools/stray-ack-broker.js" "$MQTT_PORT"
wait_for "$T/stray.out" '^ready' 10 "$stray_PID"
start col6 "$IC_BIN/intake-collector" --config "$T/site-f.yaml"
three_strays() { [ "$(grep -c '^stray' "$T/stray.out")" -ge 3 ]; }
wait_until 30 "three stray PUBACKs sent" three_strays
said() { grep -q 'acknowledged packet id 65000, which has no message in flight' "$T/col6.log"; }
wait_until 10 "the stray PUBACK logged" said
more_acked() { [ "$(sql "$T/readings-f.db" 'SELECT count(*) FROM readings WHERE delivered = 1')" -ge 40 ]; }
wait_until 30 "readings delivered on after the strays" more_acked
expect_eq "the gateway counts all three strays, and nothing else as one" 3 \
  "$(curl -s -m 5 "http://127.0.0.1:$MPORT/status" | jq .counters.stray_acks)"
stop_pid "$col6_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
expect_eq "a PUBACK for an unknown packet id is logged once over three" 1 \
  "$(grep -c 'acknowledged packet id' "$T/col6.log" || true)"
check "it is a warning naming packet id 65000" grep -q '^warn .*acknowledged packet id 65000' "$T/col6.log"
stop_pid "$stray_PID"
finish
