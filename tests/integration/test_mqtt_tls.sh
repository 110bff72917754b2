#!/usr/bin/env bash
# MQTT over TLS with a user name and password, against mosquitto with a TLS
# listener, a CA and certificates made here with openssl, and a password
# file: the right settings deliver; a wrong password and a wrong CA are
# refused with a clear log line and retried with back-off (1 s, doubling),
# measured at the broker; a certificate whose name does not match the url's
# host is refused (host name checking is on); the password (600 bytes, read
# whole) never appears in the output or the command line.
source "$(dirname "$0")/lib.sh"

# stamp: copy stdin to stdout, each line prefixed with the wall-clock
# millisecond it was read at (mosquitto's own time stamps are whole seconds).
stamp() {
  local l
  while IFS= read -r l; do printf '%s %s\n' "$((${EPOCHREALTIME/./} / 1000))" "$l"; done
}

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
cd "$T"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
  -subj "/CN=intake test CA" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -days 2 \
  -subj "/CN=another CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost\n' >ext.cnf
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
  -days 2 -extfile ext.cnf 2>/dev/null
# 600 bytes: longer than a 511-byte buffer once cut passwords short.
PASSWORD="pw-$$-$(head -c 400 /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c 590)"
touch passwd
mosquitto_passwd -b passwd gateway "$PASSWORD"
printf '%s\n' "$PASSWORD" >pw && chmod 600 pw
printf 'not-%s\n' "$PASSWORD" >badpw && chmod 600 badpw

mkdir -p broker
cat >broker/mosquitto.conf <<CONF
listener $MQTT_PORT 127.0.0.1
cafile $T/ca.crt
certfile $T/server.crt
keyfile $T/server.key
allow_anonymous false
password_file $T/passwd
user root
log_dest stderr
log_type all
CONF
# The broker's log, time-stamped to the millisecond as it is written.
mosquitto -c "$T/broker/mosquitto.conf" >"$T/broker.out" 2> >(stamp >"$T/broker.log") &
broker_PID=$!
IC_PIDS+=("$broker_PID")
wait_for "$T/broker.log" " running" 10 "$broker_PID"

# Connection attempts seen by the broker since line MARK of its log: each
# starts with "New connection from" (the TCP accept) and ends with the
# broker's "Client ... disconnected" (after its refusal, or when the client
# gave up the TLS handshake).
attempts() { tail -n +"$(($1 + 1))" "$T/broker.log" | grep -c 'New connection from' || true; }
# backoff_gaps MARK N: the pauses between the end of each of the first N
# attempts since MARK and the start of the next one, in ms: the gateway's
# reconnect delay, without the time an attempt itself takes.
backoff_gaps() {
  tail -n +"$(($1 + 1))" "$T/broker.log" | awk -v n="$2" '
    / New connection from / { if (a > 0 && a <= n && d[a] != "") printf "%d ", $1 - d[a]; a++; next }
    / Client .* disconnected/ { if (a > 0 && d[a] == "") d[a] = $1 }'
}
# backoff_ok "GAPS" EXPECTED...: each gap is its expected delay, at most
# 100 ms early (a timer armed on the loop's cached time) and at most 500 ms
# late (the failure travelling from paho's thread to the loop, the next TCP
# connect).
backoff_ok() {
  local gaps=($1) i=0 want
  shift
  [ "${#gaps[@]}" -eq "$#" ] || return 1
  for want in "$@"; do
    [ "${gaps[$i]}" -ge $((want - 100)) ] && [ "${gaps[$i]}" -le $((want + 500)) ] || return 1
    i=$((i + 1))
  done
}

site() { # name host ca password-file
  cat >"$T/$1.yaml" <<YAML
site: {id: tls}
mqtt: {url: "mqtts://$2:$MQTT_PORT", username: gateway, password_file: ./$4, ca_file: ./$3}
storage: {path: ./$1.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
  - {id: M1, bus: plc, unit: 1, profile: mag-00h, interval: 500ms}
YAML
}
site good localhost ca.crt pw
site badpw localhost ca.crt badpw
site badca localhost other-ca.crt pw
site badname 127.0.0.1 ca.crt pw

start sim "$IC_BIN/intake-sim" --config "$T/good.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"

# The right settings: readings are delivered over TLS.
start good "$IC_BIN/intake-collector" --config "$T/good.yaml"
wait_for "$T/good.log" "broker connected: mqtts://localhost" 20 "$good_PID"
delivered() { [ "$(sql "$T/good.db" 'SELECT count(*) FROM readings WHERE delivered = 1')" -ge 3 ]; }
wait_until 20 "readings delivered over TLS" delivered
ok "readings are delivered over TLS with a password"
check "the command line carries no password" bash -c "! grep -q '$PASSWORD' /proc/$good_PID/cmdline"
stop_pid "$good_PID"

# A wrong password: refused, said so, retried after 1 s, 2 s, 4 s.
mark=$(wc -l <"$T/broker.log")
start badpw "$IC_BIN/intake-collector" --config "$T/badpw.yaml"
four() { [ "$(attempts "$mark")" -ge 4 ]; }
wait_until 40 "four attempts with the wrong password" four
check "a wrong password is refused with a clear line" \
  grep -q 'refused the connection: Not authorized' "$T/badpw.log"
expect_eq "the same refusal is logged once, not at every attempt" 1 \
  "$(grep -c 'refused the connection' "$T/badpw.log")"
gaps=$(backoff_gaps "$mark" 3)
check "and retried with back-off: 1 s, 2 s, 4 s after each refusal (measured at the broker: ${gaps}ms)" \
  backoff_ok "$gaps" 1000 2000 4000
stop_pid "$badpw_PID"
expect_eq "nothing was delivered with the wrong password" 0 \
  "$(sql "$T/badpw.db" 'SELECT count(*) FROM readings WHERE delivered = 1')"

# A CA that did not sign the broker's certificate: the handshake fails,
# and is retried after 1 s, 2 s, 4 s (not at once, as a change of MQTT
# version would be: a handshake that fails says nothing about the version).
mark=$(wc -l <"$T/broker.log")
start badca "$IC_BIN/intake-collector" --config "$T/badca.yaml"
wait_for "$T/badca.log" "TLS handshake failed" 20 "$badca_PID"
ok "a wrong CA is refused with a clear line"
wait_until 40 "four attempts with the wrong CA" four
gaps=$(backoff_gaps "$mark" 3)
check "and retried with back-off: 1 s, 2 s, 4 s after each failed handshake (measured at the broker: ${gaps}ms)" \
  backoff_ok "$gaps" 1000 2000 4000
stop_pid "$badca_PID"
expect_eq "nothing was delivered with the wrong CA" 0 \
  "$(sql "$T/badca.db" 'SELECT count(*) FROM readings WHERE delivered = 1')"

# The certificate names localhost, the url 127.0.0.1: refused.
start badname "$IC_BIN/intake-collector" --config "$T/badname.yaml"
wait_for "$T/badname.log" "TLS handshake failed" 20 "$badname_PID"
stop_pid "$badname_PID"
expect_eq "a certificate for another host name is refused" 0 \
  "$(sql "$T/badname.db" 'SELECT count(*) FROM readings WHERE delivered = 1')"

if grep -q "$PASSWORD" "$T"/good.* "$T"/badpw.* "$T"/badca.* "$T"/badname.* 2>/dev/null; then
  not_ok "the password must never appear in the output"
else
  ok "the password never appears in the output"
fi
finish
