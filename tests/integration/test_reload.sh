#!/usr/bin/env bash
# Reloading the site file on a running gateway (`intake-collector reload`,
# SIGHUP): a meter added starts polling; a removed one is said offline with
# reason "removed" and its undelivered readings still go out; a changed one
# (unit, interval) is re-planned and keeps its sequence numbers; a changed
# bus is reopened while the buses left alone keep their connections
# (intake-sim's accept counts); no
# meter skips a sequence number; a broken file and a new storage.path are
# refused while the running configuration polls on; a change of mqtt.*
# reconnects with the outbox kept; 100 reloads in a row under load lose no
# reading and leak nothing (AddressSanitizer at exit).
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT ROT_PORT < <(free_ports 3)
DB="$T/readings.db"

# buses [DTU_TIMEOUT] [LINE1_TIMEOUT] [LINE2]
buses() {
  cat <<YAML
buses:
  - {id: line1, transport: rtu, device: ./ttySIM0, baud: 38400, timeout: ${2:-500ms}}
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 1s}
  - {id: dtu, transport: rtu-over-tcp, host: 127.0.0.1, port: $ROT_PORT, timeout: ${1:-1s}}
YAML
  if [ "${3:-line2}" = line2 ]; then
    echo "  - {id: line2, transport: rtu, device: ./ttySIM1, baud: 38400, timeout: 500ms}"
  fi
}

# intake-sim serves every meter any version of the site file names; T-2B is
# what the gateway's T-2 reads once it is moved to unit 4.
{
  echo "site: {id: reloadtest}"
  echo "mqtt: {url: \"mqtt://127.0.0.1:$MQTT_PORT\"}"
  echo "storage: {path: ./sim-unused.db}"
  echo "sim: {control: ./sim.sock}"
  buses
  cat <<'YAML'
meters:
  - {id: T-1, bus: plc, unit: 1, profile: mag-00h, sim: {fixed: {flow_m3h: 10, total_m3: 100, velocity_ms: 0.1}}}
  - {id: T-2, bus: plc, unit: 2, profile: mag-00h, sim: {fixed: {flow_m3h: 20, total_m3: 200, velocity_ms: 0.2}}}
  - {id: NEW, bus: plc, unit: 3, profile: mag-00h, sim: {fixed: {flow_m3h: 30, total_m3: 300, velocity_ms: 0.3}}}
  - {id: T-2B, bus: plc, unit: 4, profile: mag-00h, sim: {fixed: {flow_m3h: 44, total_m3: 444, velocity_ms: 0.4}}}
  - {id: D-1, bus: dtu, unit: 5, profile: mag-00h, sim: {fixed: {flow_m3h: 50, total_m3: 500, velocity_ms: 0.5}}}
  - {id: GONE, bus: dtu, unit: 6, profile: mag-00h, sim: {fixed: {flow_m3h: 60, total_m3: 600, velocity_ms: 0.6}}}
  - {id: R-1, bus: line1, unit: 1, profile: mag-00h, sim: {fixed: {flow_m3h: 70, total_m3: 700, velocity_ms: 0.7}}}
  - {id: R-2, bus: line2, unit: 1, profile: mag-00h, sim: {fixed: {flow_m3h: 80, total_m3: 800, velocity_ms: 0.8}}}
YAML
} >"$T/sim.yaml"

# site VERSION [T1_INTERVAL] [KEEPALIVE]: the gateway's file.
site() {
  local v=$1 t1=${2:-1s} ka=${3:-30s}
  echo "site: {id: reloadtest}"
  echo "mqtt: {url: \"mqtt://127.0.0.1:$MQTT_PORT\", client_id: reloadtest-gw, keepalive: $ka}"
  echo "storage: {path: ./readings.db}"
  if [ "$v" = 1 ]; then buses 1s 500ms line2; else buses 1500ms 600ms none; fi
  echo "meters:"
  echo "  - {id: T-1, bus: plc, unit: 1, profile: mag-00h, interval: $t1}"
  if [ "$v" = 1 ]; then
    echo "  - {id: T-2, bus: plc, unit: 2, profile: mag-00h, interval: 1s}"
    echo "  - {id: GONE, bus: dtu, unit: 6, profile: mag-00h, interval: 1s}"
  else
    echo "  - {id: T-2, bus: plc, unit: 4, profile: mag-00h, interval: 2s}"
    echo "  - {id: NEW, bus: plc, unit: 3, profile: mag-00h, interval: 1s}"
  fi
  echo "  - {id: D-1, bus: dtu, unit: 5, profile: mag-00h, interval: 1s}"
  echo "  - {id: R-1, bus: line1, unit: 1, profile: mag-00h, interval: 1s}"
  [ "$v" = 1 ] && echo "  - {id: R-2, bus: line2, unit: 1, profile: mag-00h, interval: 1s}"
  return 0
}

applied() { grep -c "reload: applied" "$T/collector.log" || true; }
accepted() {
  "$IC_BIN/intake-sim" ctl --socket "$T/sim.sock" status |
    sed -nE "s/^bus $1 accepted=([0-9]+) .*/\1/p"
}
count_of() { messages sub reading | jq -s --arg m "$1" '[.[] | select(.meter == $m)] | length'; }

site 1 >"$T/site.yaml"
start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/#'
start sim "$IC_BIN/intake-sim" --config "$T/sim.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"

three_each() {
  [ "$(messages sub reading | jq -s 'group_by(.meter) | map(select(length >= 3)) | length')" -ge 6 ]
}
wait_until 30 "three readings from each of the six meters" three_each
plc_before=$(accepted plc)
dtu_before=$(accepted dtu)
expect_eq "the tcp bus was connected once" 1 "$plc_before"
expect_eq "the rtu-over-tcp bus was connected once" 1 "$dtu_before"

# --- The broker goes away: GONE's readings pile up undelivered -------------
stop_pid "$broker_PID"
wait_for "$T/collector.log" "broker connection lost" 20 "$collector_PID"
gone_piled() { [ "$(sql "$DB" "SELECT count(*) FROM readings WHERE meter = 'GONE' AND delivered = 0")" -ge 3 ]; }
wait_until 20 "three undelivered readings of GONE" gone_piled

# --- Add NEW, remove GONE, move T-2 to unit 4 every 2 s, the dtu bus's
# timeout to 1.5 s -----------------------------------------------------------
site 2 >"$T/site.yaml"
reload_ms=$(now_ms)
rc=0
"$IC_BIN/intake-collector" reload --config "$T/site.yaml" >"$T/reload.out" 2>&1 || rc=$?
expect_eq "intake-collector reload exits 0" 0 "$rc"
check "it names the gateway's pid" grep -q "pid $collector_PID" "$T/reload.out"
wait_until 10 "the reload applied" bash -c "[ \$(grep -c 'reload: applied' '$T/collector.log') -ge 1 ]"
check "the log says GONE was removed" grep -q "reload: meter GONE removed" "$T/collector.log"
check "the log says NEW was added" grep -q "reload: meter NEW added on bus plc" "$T/collector.log"
check "the log says what changed in T-2" \
  grep -q "reload: meter T-2 changed: unit 2 -> 4, interval 1000 ms -> 2000 ms" "$T/collector.log"
check "the log says the dtu bus was reopened" grep -q "reload: bus dtu changed: reopened" "$T/collector.log"
check "the log says serial line1 is set anew on its own thread" \
  grep -q "reload: bus line1 changed: its line is opened again with the new settings" "$T/collector.log"
check "the log says R-2 (on the removed line2) was removed" grep -q "reload: meter R-2 removed" "$T/collector.log"
gone_last=$(sql "$DB" "SELECT max(seq) FROM readings WHERE meter = 'GONE'")
gone_rows=$(sql "$DB" "SELECT count(*) FROM readings WHERE meter = 'GONE'")

start_broker broker2 "$MQTT_PORT"
gone_drained() { [ "$(sql "$DB" "SELECT count(*) FROM readings WHERE meter = 'GONE' AND delivered = 0")" -eq 0 ]; }
wait_until 30 "GONE's backlog delivered after the reload" gone_drained
expect_eq "no reading of GONE was taken after its removal" "$gone_rows" \
  "$(sql "$DB" "SELECT count(*) FROM readings WHERE meter = 'GONE'")"
gone_sub() { [ "$(messages sub reading | jq -s --argjson l "$gone_last" '[.[] | select(.meter == "GONE" and .seq == $l)] | length')" -ge 1 ]; }
wait_until 20 "GONE's last reading reached the subscriber" gone_sub
messages sub reading >"$T/r1.json"
expect_eq "GONE's readings 1..$gone_last all reached the subscriber" 0 \
  "$(missing_seqs "$T/r1.json" GONE "$gone_last")"
gone_state=$(mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t water/reloadtest/GONE/state -C 1 -W 5)
expect_eq "GONE's retained state: offline, reason removed" "false removed" \
  "$(jq -r '"\(.online) \(.reason)"' <<<"$gone_state")"

new_and_moved() {
  [ "$(count_of NEW)" -ge 3 ] &&
    [ "$(messages sub reading | jq -s '[.[] | select(.meter == "T-2" and .flow_m3h == 44)] | length')" -ge 3 ]
}
wait_until 30 "three readings of NEW and of T-2 at unit 4" new_and_moved
messages sub reading >"$T/r2.json"
expect_eq "NEW reads intake-sim's unit 3 values" '[30]' \
  "$(jq -s -c '[.[] | select(.meter == "NEW") | .flow_m3h] | unique' "$T/r2.json")"
# The shortest time between two readings of T-2 at unit 4, in ms.
gap=$(jq -s '[.[] | select(.meter == "T-2" and .flow_m3h == 44) | .ts
              | ((sub("\\.[0-9]+Z$"; "Z") | fromdate) * 1000
                 + ((capture("\\.(?<ms>[0-9]{3})Z$").ms // "0") | tonumber))] | sort
             | [range(1; length) as $i | .[$i] - .[$i - 1]] | min' "$T/r2.json")
check "T-2 at unit 4 is polled every 2 s (shortest gap ${gap} ms)" [ "$gap" -ge 1900 ]
for m in T-1 T-2 D-1 R-1; do
  last=$(sql "$DB" "SELECT max(seq) FROM readings WHERE meter = '$m' AND delivered = 1")
  expect_eq "$m: no sequence number skipped across the reload (1..$last)" 0 \
    "$(missing_seqs "$T/r2.json" "$m" "$last")"
done
expect_eq "the tcp bus, left alone, kept its connection" "$plc_before" "$(accepted plc)"
expect_eq "the rtu-over-tcp bus, changed, was connected again once" $((dtu_before + 1)) \
  "$(accepted dtu)"

# Reports count NEW from its addition, T-1 from the start.
expect_eq "NEW counts in the reports from the reload on" 1 \
  "$(sql "$DB" "SELECT configured_since_ms >= $reload_ms FROM meters WHERE id = 'NEW'")"
expect_eq "T-1 counts from before the reload" 1 \
  "$(sql "$DB" "SELECT configured_since_ms < $reload_ms FROM meters WHERE id = 'T-1'")"
day=$(TZ=Asia/Shanghai date +%F)
"$IC_BIN/intake-collector" report --config "$T/site.yaml" --from "$day" \
  --to "$(TZ=Asia/Shanghai date -d tomorrow +%F)" --period day --format json >"$T/report.json"
check "today's report expects fewer readings of NEW than of T-1 (added later)" \
  jq -e '[.[0].meters[] | select(.id == "NEW" or .id == "T-1") | {(.id): .expected_readings}] | add
         | .NEW < ."T-1"' "$T/report.json"

state=$(mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t water/reloadtest/gateway/state -C 1 -W 5)
expect_eq "the gateway state names the applied file's SHA-256" \
  "$(sha256sum "$T/site.yaml" | cut -d' ' -f1)" "$(jq -r .config.sha256 <<<"$state")"
expect_eq "the gateway state counts one reload" 1 "$(jq -r .config.reloads <<<"$state")"

# --- Refused: a broken file, a new database --------------------------------
cp "$T/site.yaml" "$T/good.yaml"
printf 'site: {id: reloadtest}\nmeters: [\n' >"$T/site.yaml"
rc=0
"$IC_BIN/intake-collector" reload --config "$T/site.yaml" >"$T/reload-bad.out" 2>&1 || rc=$?
expect_eq "intake-collector reload refuses a broken file (exit 1)" 1 "$rc"
check "and says where it is broken" grep -q "site.yaml:[0-9]*:[0-9]*" "$T/reload-bad.out"
kill -HUP "$collector_PID"
wait_for "$T/collector.log" "reload refused: .*site.yaml:[0-9]+:[0-9]+" 10 "$collector_PID"
kill -USR1 "$collector_PID"
wait_for "$T/collector.log" "SIGUSR1 ignored: SIGHUP reloads the configuration, SIGTERM stops" 10 "$collector_PID"
kill -USR2 "$collector_PID"
wait_for "$T/collector.log" "SIGUSR2 ignored: SIGHUP reloads the configuration, SIGTERM stops" 10 "$collector_PID"
sed 's|path: ./readings.db|path: ./other.db|' "$T/good.yaml" >"$T/site.yaml"
kill -HUP "$collector_PID"
wait_for "$T/collector.log" "reload refused: storage.path cannot change on reload" 10 "$collector_PID"
t1_before=$(count_of T-1)
more_t1() { [ "$(count_of T-1)" -ge $((t1_before + 3)) ]; }
wait_until 20 "T-1 polled on after the refusals" more_t1
check "the refused files changed nothing (no database opened at the new path)" \
  [ ! -e "$T/other.db" ]

# --- mqtt.* changed: a new connection, the outbox kept ---------------------
site 2 1s 20s >"$T/site.yaml"
kill -HUP "$collector_PID"
wait_for "$T/collector.log" "reload: mqtt settings changed" 10 "$collector_PID"
wait_until 20 "connected again after the mqtt change" \
  bash -c "[ \$(grep -c 'broker connected' '$T/collector.log') -ge 3 ]"

# --- 100 reloads in a row, each one a change, under load -------------------
n0=$(applied)
for i in $(seq 1 100); do
  if [ $((i % 2)) -eq 1 ]; then site 2 200ms 20s; else site 2 300ms 20s; fi >"$T/site.yaml"
  kill -HUP "$collector_PID"
  want=$((n0 + i))
  wait_until 10 "reload $i applied" bash -c "[ \$(grep -c 'reload: applied' '$T/collector.log') -ge $want ]"
done
expect_eq "100 reloads applied" $((n0 + 100)) "$(applied)"
t1_now=$(count_of T-1)
busy() { [ "$(count_of T-1)" -ge $((t1_now + 10)) ]; }
wait_until 20 "T-1 polled at its new interval after the reloads" busy
all_drained() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" -eq 0 ]; }
wait_until 30 "every reading delivered" all_drained
stop_pid "$collector_PID"
expect_eq "the gateway exits 0 after the reloads" 0 "$STOP_RC"
check "no sanitizer report from the gateway" bash -c "! grep -Eq '$IC_SANITIZER_RE' '$T/collector.log'"
sub_has_all() { [ "$(messages sub reading | wc -l)" -ge "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 1')" ]; }
wait_until 20 "the subscriber has every delivered reading" sub_has_all
messages sub reading >"$T/r3.json"
# A reading taken after the last check may wait in the outbox for the next
# start: in the database, never missing.
for m in T-1 T-2 NEW D-1 R-1 R-2 GONE; do
  expect_eq "$m: its sequence numbers in the database run 1..max without a hole" \
    "$(sql "$DB" "SELECT max(seq) FROM readings WHERE meter = '$m'")" \
    "$(sql "$DB" "SELECT count(DISTINCT seq) FROM readings WHERE meter = '$m'")"
  last=$(sql "$DB" "SELECT max(seq) FROM readings WHERE meter = '$m' AND delivered = 1")
  expect_eq "$m: every delivered reading 1..$last reached the subscriber" 0 \
    "$(missing_seqs "$T/r3.json" "$m" "$last")"
done
expect_eq "no (meter, seq) names two readings" 0 "$(seq_clashes "$T/r3.json")"
finish
