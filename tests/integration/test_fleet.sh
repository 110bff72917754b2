#!/usr/bin/env bash
# The bureau's view over two gateways and a register: a registered meter no
# gateway serves is offline (never heard of), a meter served but not
# registered is listed apart, the fleet rate and each county's are right, and
# when a gateway dies (its Last Will fires) its meters count as offline.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT EAST_PORT WEST_PORT HTTP_PORT < <(free_ports 4)
mkdir -p "$T/bureau"
printf 'fleet-token-%s\n' "$$" >"$T/token"
chmod 644 "$T/token"
site() { # id port meters...
  local id=$1 port=$2
  shift 2
  cat <<YAML
site: {id: $id}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT", keepalive: 2s}
storage: {path: ./$id.db}
reports: {periods: [5s]}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $port, timeout: 300ms}
meters:
YAML
  local u=1
  for m in "$@"; do
    echo "  - {id: $m, bus: plc, unit: $u, profile: mag-00h, interval: 1s}"
    u=$((u + 1))
  done
}
site east "$EAST_PORT" E1 E2 >"$T/east.yaml"
site west "$WEST_PORT" W1 W3 >"$T/west.yaml"
cat >"$T/fleet.yaml" <<YAML
fleet: {id: turpan, name: "吐鲁番市"}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
online: {baseline: 0.9468}
report_grace: 2s
storage: {path: ./fleet.db}
reports: {periods: [5s], push_url: "http://127.0.0.1:$HTTP_PORT/fleet", token_file: ./token}
register:
  - {site: east, meter: E1, name: "东1", county: "鄯善县"}
  - {site: east, meter: E2, name: "东2", county: "鄯善县"}
  - {site: west, meter: W1, name: "西1", county: "高昌区"}
  - {site: west, meter: W2, name: "西2", county: "高昌区"}
YAML

rc=0
"$IC_BIN/intake-collector" fleet --config "$T/fleet.yaml" --check-config >/dev/null || rc=$?
expect_eq "the fleet file checks out" 0 "$rc"
printf 'fleet: {id: x}\nmqtt: {url: "mqtt://h:1"}\nregister:\n  - {site: a, meter: M}\n  - {site: a, meter: M}\n' >"$T/dup.yaml"
rc=0
"$IC_BIN/intake-collector" fleet --config "$T/dup.yaml" --check-config 2>"$T/dup.err" || rc=$?
expect_eq "a meter registered twice is refused" 1 "$rc"
check "with its position" grep -q "^$T/dup.yaml:5:5: meter M of site a is registered twice" "$T/dup.err"
# The bureau's token must come from a regular file, as the gateway's secrets.
printf 'fleet: {id: x}\nmqtt: {url: "mqtt://h:1"}\nstorage: {path: ./f.db}\nreports:\n  push_url: http://127.0.0.1:9/f\n  token_file: /dev/zero\nregister:\n  - {site: a, meter: M}\n' >"$T/tokzero.yaml"
rc=0
"$IC_BIN/intake-collector" fleet --config "$T/tokzero.yaml" --check-config 2>"$T/tokzero.err" || rc=$?
expect_eq "a token_file that is /dev/zero is refused" 1 "$rc"
check "as a character device, with its position" \
  grep -q "^$T/tokzero.yaml:6:15: token_file /dev/zero is a character device: expected a regular file" \
  "$T/tokzero.err"

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/fleet/#'
start sink "$IC_TEST_BIN/ic-httpsink" "$HTTP_PORT" "$T/bureau"
wait_for "$T/sink.out" '^ready' 10 "$sink_PID"
for s in east west; do
  start "sim_$s" "$IC_BIN/intake-sim" --config "$T/$s.yaml"
  pidvar="sim_${s}_PID"
  wait_for "$T/sim_$s.out" '^ready' 20 "${!pidvar}"
  start "col_$s" "$IC_BIN/intake-collector" --config "$T/$s.yaml"
  pidvar="col_${s}_PID"
  wait_for "$T/col_$s.out" '^ready' 20 "${!pidvar}"
done
start fleet "$IC_BIN/intake-collector" fleet --config "$T/fleet.yaml"
wait_for "$T/fleet.out" '^ready' 20 "$fleet_PID"

latest() { grep '^water/fleet/turpan/online-rate ' "$T/sub.out" | tail -n 1 | cut -d' ' -f2-; }
rate_is() { [ "$(latest | jq -r .meters_online 2>/dev/null)" = "$1" ]; }
wait_until 20 "three of four registered meters online" rate_is 3
r=$(latest)
expect_eq "fleet: four registered" 4 "$(jq -r .meters_total <<<"$r")"
expect_eq "fleet rate 3/4" 0.75 "$(jq -r .online_rate <<<"$r")"
expect_eq "fleet delta in percentage points" -19.68 "$(jq -r .delta_pp <<<"$r")"
expect_eq "fleet below the baseline" false "$(jq -r .meets_baseline <<<"$r")"
expect_eq "鄯善县: 2 of 2" "1" "$(jq -r '.counties[] | select(.county == "鄯善县") | .online_rate' <<<"$r")"
expect_eq "高昌区: 1 of 2" "0.5" "$(jq -r '.counties[] | select(.county == "高昌区") | .online_rate' <<<"$r")"
expect_eq "the meter no gateway serves is to repair, never heard of" "W2 never_heard" \
  "$(jq -r '.repair[] | "\(.id) \(.last_error)"' <<<"$r")"
expect_eq "the served but unregistered meter is listed apart" "west/W3" \
  "$(jq -r '.unregistered[] | "\(.site)/\(.id)"' <<<"$r")"

# A fleet window report, assembled from both gateways' reports of a window.
fleet_report() { grep '^water/fleet/turpan/report/5s ' "$T/sub.out" | tail -n 1 | cut -d' ' -f2-; }
# (The window in which a gateway started may hold no reading yet: wait for a
# window both gateways covered whole.)
full_report() {
  fleet_report | jq -e '.gateways_reporting == 2 and .meters_online == 3' >/dev/null 2>&1
}
wait_until 40 "a fleet report with both gateways' windows" full_report
r=$(fleet_report)
expect_eq "fleet report: 3 of 4 online" 3 "$(jq -r .meters_online <<<"$r")"
expect_eq "fleet report: rate 0.75" 0.75 "$(jq -r .online_rate <<<"$r")"
expect_eq "fleet report: the unserved meter is not in its gateway's report" \
  "W2 not_in_gateway_report" "$(jq -r '.repair[] | "\(.id) \(.last_error)"' <<<"$r")"
expect_eq "fleet report: 高昌区 1 of 2" 0.5 \
  "$(jq -r '.counties[] | select(.county == "高昌区") | .online_rate' <<<"$r")"

# The west gateway dies without a word: its Last Will takes W1 down with it.
kill -KILL "$col_west_PID"
reap "$col_west_PID"
wait_until 20 "W1 offline with its gateway" rate_is 2
late_will() {
  mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t 'water/west/gateway/state' -C 1 -W 3 \
    -F '%r %p' 2>/dev/null | grep -q '^1 {"online":false'
}
check "a subscriber that comes after the kill gets the west gateway's Will, retained" \
  wait_until 10 "the retained Will" late_will
r=$(latest)
expect_eq "fleet rate 2/4 with the west gateway down" 0.5 "$(jq -r .online_rate <<<"$r")"
expect_eq "W1 is to repair: gateway offline" gateway_offline \
  "$(jq -r '.repair[] | select(.id == "W1") | .last_error' <<<"$r")"
# Its windows now come without a west report: the fleet counts W1 offline.
west_missing() {
  fleet_report | jq -e '[.repair[] | select(.id == "W1" and .last_error == "gateway_report_missing")] | length == 1' >/dev/null 2>&1
}
wait_until 30 "a fleet report without the west gateway" west_missing
ok "a window without the west gateway's report counts W1 offline"
all_pushed() { [ "$(sql "$T/fleet.db" 'SELECT count(*) FROM outbox WHERE pushed_ms IS NULL')" = 0 ]; }
wait_until 20 "the fleet's outbox drained" all_pushed
# SIGHUP (a closed terminal, a `kill -HUP` meant for a gateway), SIGUSR1 and
# SIGUSR2 do not end the fleet view: each is ignored with a line.
kill -HUP "$fleet_PID"
wait_for "$T/fleet.log" "SIGHUP ignored: the file is read at start only" 10 "$fleet_PID"
kill -USR1 "$fleet_PID"
wait_for "$T/fleet.log" "SIGUSR1 ignored: SIGTERM stops" 10 "$fleet_PID"
kill -USR2 "$fleet_PID"
wait_for "$T/fleet.log" "SIGUSR2 ignored: SIGTERM stops" 10 "$fleet_PID"
check "the fleet view runs on after SIGHUP, SIGUSR1 and SIGUSR2" kill -0 "$fleet_PID"
stop_pid "$fleet_PID"
expect_eq "the fleet view exits 0" 0 "$STOP_RC"

# Every fleet report was also pushed to the bureau, once each, in order.
pushed=$(for f in "$T"/bureau/req-*.json; do jq -r '.window.start' "$f"; done)
check "fleet reports reached the bureau ($(wc -l <<<"$pushed"))" test "$(wc -l <<<"$pushed")" -ge 2
expect_eq "in window order, each once" "$(sort -u <<<"$pushed")" "$pushed"
expect_eq "with the bearer token" "Bearer fleet-token-$$" "$(cat "$T/bureau/req-000001.auth")"
check "a token file others can read is warned about" \
  grep -q "token can be read by others than its owner; chmod 600 it" "$T/fleet.log"
if grep -q "fleet-token-$$" "$T/fleet.log" "$T/fleet.out"; then
  not_ok "the token must never be logged"
else
  ok "the token is never logged"
fi
expect_eq "every pushed report is marked in the fleet's outbox" 0 \
  "$(sql "$T/fleet.db" 'SELECT count(*) FROM outbox WHERE pushed_ms IS NULL')"
finish
