#!/usr/bin/env bash
# The uplink in the field's less happy moments:
#  - a centre that cannot be reached is said at warn level once, not at
#    every retry (and not only at debug level);
#  - a meter that is healthy but slow to answer (here 1.6 s, a DTU's long
#    round trip would do the same) is reported with its values, not as at
#    fault: a report built before the slot's own poll has answered carries
#    the reading of the slot before;
#  - with 10,000 reports kept (the bound), each new one removes the oldest:
#    counted once each as dropped, and said once;
#  - a centre that streams bytes which frame nothing (each four of them
#    starting a frame the CS check must refute) is dropped after 4 KiB.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT CENTRE_PORT METRICS_PORT < <(free_ports 4)
cat >"$T/site.yaml" <<YAML
site: {id: slowtest, timezone: UTC}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
buses:
  - {id: line, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 3s}
meters:
  - {id: M1, bus: line, unit: 1, profile: tuf2000m, interval: 10s,
     sim: {fixed: {flow_m3h: 1801.9, total_m3: 106182.9}, fault: slow, slow_delay: 1600ms}}
metrics: {listen: 127.0.0.1:$METRICS_PORT}
uplink:
  protocol: szy206
  host: 127.0.0.1
  port: $CENTRE_PORT
  report_interval: 10s
  delay_minutes: 0
  stations:
    - {admin: "530381", station: 13, meters: [M1]}
YAML

start_broker broker "$MQTT_PORT"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
# (1) No centre yet: its port refuses. Tried again after 1 s, 2 s...
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml" --log-level debug
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
tries() { [ "$(grep -c "cannot connect to 127.0.0.1:$CENTRE_PORT" "$T/collector.log")" -ge 3 ]; }
wait_until 20 "three failed connects to the centre" tries
expect_eq "a centre that refuses is said once at warn level" 1 \
  "$(grep -c "^warn  uplink: cannot connect to 127.0.0.1:$CENTRE_PORT: .*retrying with back-off" "$T/collector.log")"
start centre "$IC_TEST_BIN/ic-centre" "$CENTRE_PORT" "$T/mode"
wait_for "$T/centre.out" '^ready' 10 "$centre_PID"
wait_for "$T/collector.log" "uplink: connected to 127.0.0.1:$CENTRE_PORT" 30 "$collector_PID"
ok "the gateway connects once the centre is there"

# (2) The slow meter.
reports() { grep '"function":"report"' "$T/centre.out" || true; }
three() { [ "$(reports | wc -l)" -ge 3 ]; }
wait_until 60 "three reports at the centre" three
db_good=$(sql "$T/readings.db" "SELECT count(*) FROM readings WHERE meter = 'M1'")
check "M1 is read, slowly ($db_good readings)" test "$db_good" -ge 2
# The first report may come before M1's first answer; from the second on,
# every report has a reading from a poll of the interval before its slot.
for k in 2 3; do
  line=$(reports | sed -n "${k}p")
  expect_eq "report $k: M1's flow and volume (1801.9 m3/h = 0.501 m3/s), no alarm" \
    "0.501 106182 0000" \
    "$(jq -r '.frame | [.meters[0].flow_m3s, .meters[0].volume_m3, .alarm] | map(tostring) | join(" ")' <<<"$line")"
done
stop_pid "$collector_PID"
expect_eq "the gateway stops cleanly" 0 "$STOP_RC"

# (3) 10,000 reports kept (copies of a real one), the centre silent: each
# slot's new report removes the oldest, counted once.
# Their slots the last 10,000 seconds (well within the retention).
frame=$(reports | sed -n 2p | jq -r .hex)
t=$(now_ms)
sql "$T/readings.db" "DELETE FROM uplink_reports;
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
  INSERT INTO uplink_reports (id, slot_ms, frame) SELECT i, $t - (10001 - i) * 1000, X'$frame' FROM n;"
echo silent >"$T/mode"
start collector2 "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector2.out" '^ready' 20 "$collector2_PID"
status() { curl -s -m 5 "http://127.0.0.1:$METRICS_PORT/status"; }
dropped_some() { [ "$(status | jq '.uplink.dropped')" -ge 1 ] 2>/dev/null; }
wait_until 30 "a report dropped for the bound" dropped_some
read -r kept added < <(sql "$T/readings.db" "SELECT count(*), max(id) - 10000 FROM uplink_reports" | tr '|' ' ')
dropped=$(status | jq '.uplink.dropped')
expect_eq "the database holds 10,000 reports still" 10000 "$kept"
expect_eq "each report removed is counted once ($added added since)" "$added" "$dropped"
check "the bound is said at warn level" grep -q "^warn  uplink: 10000 unconfirmed reports kept" \
  "$T/collector2.log"
stop_pid "$collector2_PID"
expect_eq "the gateway stops cleanly again" 0 "$STOP_RC"

# (4) A hostile centre: 68 FB 68 16 over and over, until the gateway hangs up.
read -r JUNK_PORT < <(free_ports 1)
sed "s/port: $CENTRE_PORT/port: $JUNK_PORT/" "$T/site.yaml" >"$T/junk.yaml"
cat >"$T/junk.py" <<'PY'
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(1)
print("ready", flush=True)
c, _ = srv.accept()
sent = 0
try:
    while sent < 64 * 1024 * 1024:
        c.sendall(bytes([0x68, 0xFB, 0x68, 0x16]) * 256)
        sent += 1024
except OSError:
    pass
print("closed after %d bytes" % sent, flush=True)
PY
start junk python3 "$T/junk.py" "$JUNK_PORT"
wait_for "$T/junk.out" '^ready' 10 "$junk_PID"
start collector3 "$IC_BIN/intake-collector" --config "$T/junk.yaml"
wait_for "$T/collector3.out" '^ready' 20 "$collector3_PID"
wait_for "$T/junk.out" '^closed after' 30 "$junk_PID"
sent=$(sed -n 's/^closed after \([0-9]*\) bytes/\1/p' "$T/junk.out")
check "the gateway hung up on the stream of junk (after $sent bytes sent into its socket)" \
  test "$sent" -lt $((64 * 1024 * 1024))
check "and says why" grep -q "connection to 127.0.0.1:$JUNK_PORT lost: more than 4096 bytes from the centre frame nothing" \
  "$T/collector3.log"
stop_pid "$collector3_PID"
expect_eq "the gateway stops cleanly after the junk" 0 "$STOP_RC"
finish
