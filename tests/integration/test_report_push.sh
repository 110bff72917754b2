#!/usr/bin/env bash
# Reports are POSTed to the bureau (a real local HTTP server): while it
# refuses, they wait in the outbox and are retried with back-off; once it
# accepts, every report arrives exactly once, in order, also across a
# restart of the collector; the bearer token is sent and never logged.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT HTTP_PORT < <(free_ports 3)
mkdir -p "$T/bureau"
TOKEN="s3cret-$$-token"
printf '%s\n' "$TOKEN" >"$T/token"
chmod 600 "$T/token"
cat >"$T/site.yaml" <<YAML
site: {id: push}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
reports: {periods: [5s], push_url: "http://127.0.0.1:$HTTP_PORT/api/reports",
          token_file: ./token, push_timeout: 2s}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
  - {id: A, bus: plc, unit: 1, profile: mag-00h, interval: 1s}
YAML
DB="$T/readings.db"

start_broker broker "$MQTT_PORT"
touch "$T/bureau/refuse"
start sink "$IC_TEST_BIN/ic-httpsink" "$HTTP_PORT" "$T/bureau"
wait_for "$T/sink.out" '^ready' 10 "$sink_PID"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
# libcurl is loaded for the push, and only then (test_daemon_poll checks a
# gateway without one never maps it).
check "the daemon that pushes has libcurl mapped" grep -q 'libcurl' "/proc/$collector_PID/maps"

reports() { sql "$DB" 'SELECT count(*) FROM reports'; }
unpushed() { sql "$DB" 'SELECT count(*) FROM reports WHERE pushed_ms IS NULL'; }
two() { [ "$(reports)" -ge 2 ]; }
wait_until 20 "two reports while the bureau refuses" two
wait_for "$T/collector.log" "pushing reports to .* failed: HTTP 503" 10 "$collector_PID"
ok "the refusal is logged once: $(grep -c 'pushing reports' "$T/collector.log") line(s)"
check "nothing was accepted while refusing" test "$(ls "$T/bureau" | grep -c '\.json$')" -eq 0
check "refused reports stay in the outbox" test "$(unpushed)" -ge 2

# The bureau comes back: everything goes out.
rm "$T/bureau/refuse"
drained() { [ "$(unpushed)" -eq 0 ] && [ "$(reports)" -ge 3 ]; }
wait_until 30 "the outbox drained" drained
check "the recovery is logged" grep -q "bureau accepts reports again" "$T/collector.log"

# Refusing again, then a restart of the collector with reports queued.
touch "$T/bureau/refuse"
queued() { [ "$(unpushed)" -ge 1 ]; }
wait_until 20 "a report queued again" queued
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
before=$(unpushed)
start collector2 "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector2.out" '^ready' 20 "$collector2_PID"
rm "$T/bureau/refuse"
more() { [ "$(unpushed)" -eq 0 ] && [ "$(ls "$T/bureau" | grep -c '\.json$')" -ge "$(reports)" ]; }
wait_until 30 "everything delivered after the restart" more
stop_pid "$collector2_PID"
check "reports queued across the restart were delivered ($before)" test "$before" -ge 1

# Exactly once, in order: the bodies' windows, by arrival, are the stored
# reports' windows in order, each once.
got=$(for f in "$T"/bureau/req-*.json; do jq -r '.window.start' "$f"; done | tr '\n' ' ')
want=$(sql "$DB" "SELECT body FROM reports ORDER BY id" | jq -r '.window.start' | tr '\n' ' ')
expect_eq "every report reached the bureau once, in order" "$want" "$got"
uniq_count=$(for f in "$T"/bureau/req-*.json; do jq -r '.window.start' "$f"; done | sort -u | wc -l)
expect_eq "no report arrived twice" "$(ls "$T"/bureau/req-*.json | wc -l)" "$uniq_count"
check "each report carries the site and the rate" jq -e '.site.id == "push" and (.online_rate | type == "number")' "$T/bureau/req-000001.json"
expect_eq "the bearer token was sent" "Bearer $TOKEN" "$(cat "$T/bureau/req-000001.auth")"
if grep -q "can be read by others" "$T"/collector*.log; then
  not_ok "a token file readable only by its owner must not be warned about"
else
  ok "no warning for a token file of mode 600"
fi
if grep -q "$TOKEN" "$T"/collector*.log "$T"/collector*.out; then
  not_ok "the token appears in the collector's output"
else
  ok "the token never appears in the collector's output"
fi
finish
