#!/usr/bin/env bash
# Under systemd (Type=notify, WatchdogSec=): the gateway tells its notify
# socket READY=1 once it has printed its ready line, a STATUS= line with the
# meters online out of the total and the readings awaiting delivery, and
# WATCHDOG=1 at half the interval while its threads make progress. When the
# store's writer thread is stuck in a write (tests/tools/failfs.c makes the
# database's writes hang while a flag file exists), WATCHDOG=1 stops within
# about two intervals, so systemd would restart it; it comes back once the
# writer does. SIGTERM sends STOPPING=1 and the daemon exits 0. The fleet
# view says READY, its STATUS, WATCHDOG and STOPPING too. The socket is a
# real unix datagram socket (tests/tools/notifysink.py).
source "$(dirname "$0")/lib.sh"

WD_MS=2000
read -r MQTT_PORT TCP_PORT < <(free_ports 2)
DBDIR="$T/db"
mkdir -p "$DBDIR"
cat >"$T/site.yaml" <<YAML
site: {id: sdn}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: $DBDIR/readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
  - {id: M1, bus: plc, unit: 1, profile: tuf2000m, interval: 500ms}
  - {id: M2, bus: plc, unit: 2, profile: tuf2000m, interval: 500ms}
YAML

# The monotonic clock the sink stamps its lines with.
mono() { python3 -c 'import time; print("%.3f" % time.monotonic())'; }
heard() { grep -E -- "$1" "$T/notify.txt" 2>/dev/null || true; }
count() { heard "$1" | wc -l; }
at_least() { [ "$(count "$1")" -ge "$2" ]; }

start sink python3 "$IC_SOURCE_DIR/tests/tools/notifysink.py" "$T/notify.sock" "$T/notify.txt"
wait_for "$T/sink.out" '^listening' 10 "$sink_PID"
start_broker broker "$MQTT_PORT"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
NOTIFY_SOCKET="$T/notify.sock" WATCHDOG_USEC=$((WD_MS * 1000)) \
  IC_FAILFS_DIR="$DBDIR" IC_FAILFS_FLAG="$T/stuck" IC_FAILFS_MODE=block \
  LD_PRELOAD="$IC_TEST_BIN/ic-failfs.so" \
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
  start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"

check "READY=1 arrives" wait_until 20 "READY=1" at_least '^[0-9.]+ READY=1$' 1
check "the ready line was printed before READY=1" grep -q '^ready' "$T/collector.out"
expect_eq "READY=1 is said once" 1 "$(count 'READY=1')"
check "STATUS= says both meters online, out of two" \
  wait_until 20 "STATUS 2/2" at_least '^[0-9.]+ STATUS=2/2 meters online, [0-9]+ readings awaiting delivery' 1
check "WATCHDOG=1 arrives regularly" wait_until 20 "4 WATCHDOG=1" at_least 'WATCHDOG=1$' 4
# At half the interval (1 s): no gap between two of them reaches the interval.
gap=$(heard 'WATCHDOG=1$' | awk 'NR > 1 { g = $1 - p; if (g > m) m = g } { p = $1 } END { printf "%.3f", m }')
check "WATCHDOG=1 at half the interval (longest gap $gap s, interval $((WD_MS / 1000)) s)" \
  awk -v g="$gap" -v i="$WD_MS" 'BEGIN { exit !(g * 1000 < i * 0.9) }'

# The store's writer is stuck inside a write: the loop and the publisher are
# fine, but WATCHDOG=1 must stop within about two intervals.
t_stuck=$(mono)
touch "$T/stuck"
check "the log says why the watchdog is withheld" \
  wait_for "$T/collector.log" "watchdog: not telling systemd the gateway is alive: the store's writer" 20 "$collector_PID"
n_stuck=$(count 'WATCHDOG=1$')
last=$(heard 'WATCHDOG=1$' | tail -n 1 | cut -d' ' -f1)
check "the last WATCHDOG=1 came within two intervals of the writer sticking ($(awk -v a="$last" -v b="$t_stuck" 'BEGIN { printf "%.1f", a - b }') s)" \
  awk -v a="$last" -v b="$t_stuck" -v i="$WD_MS" 'BEGIN { exit !((a - b) * 1000 <= 2 * i) }'
# Nothing more while it stays stuck: two half-intervals with no ping (this
# waits for an absence, so it can only be a pause).
sleep $((WD_MS / 1000 + 1))
expect_eq "no WATCHDOG=1 while the writer stays stuck" "$n_stuck" "$(count 'WATCHDOG=1$')"
check "the gateway still runs (systemd, not the daemon, restarts it)" kill -0 "$collector_PID"

rm -f "$T/stuck"
check "WATCHDOG=1 comes back once the writer does" \
  wait_until 20 "WATCHDOG=1 again" at_least 'WATCHDOG=1$' $((n_stuck + 2))
check "the log says it is alive again" grep -q "watchdog: the gateway makes progress again" "$T/collector.log"

stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
check "STOPPING=1 at SIGTERM" at_least '^[0-9.]+ STOPPING=1$' 1
stop_at=$(heard 'STOPPING=1$' | tail -n 1 | cut -d' ' -f1)
expect_eq "nothing but the stop after STOPPING=1" 0 \
  "$(awk -v s="$stop_at" '$1 > s && $2 !~ /^STATUS=stopping$/' "$T/notify.txt" | wc -l)"

# The fleet view: READY=1, a STATUS= line with the gateways heard and the
# meters online, WATCHDOG=1 from its loop, STOPPING=1.
cat >"$T/fleet.yaml" <<YAML
fleet: {id: sdnf}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
register:
  - {site: sdn, meter: M1}
  - {site: sdn, meter: M2}
YAML
start collector3 "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector3.out" '^ready' 20 "$collector3_PID"
: >"$T/notify.txt"
NOTIFY_SOCKET="$T/notify.sock" WATCHDOG_USEC=$((WD_MS * 1000)) \
  start fleet "$IC_BIN/intake-collector" fleet --config "$T/fleet.yaml"
check "fleet: READY=1 arrives" wait_until 20 "fleet READY=1" at_least '^[0-9.]+ READY=1$' 1
check "fleet: its ready line was printed before READY=1" grep -q '^ready' "$T/fleet.out"
check "fleet: STATUS= says the gateway heard and both meters online" \
  wait_until 20 "fleet STATUS" at_least '^[0-9.]+ STATUS=1 gateways heard \(1 online\), 2/2 meters online$' 1
check "fleet: WATCHDOG=1 arrives regularly" wait_until 20 "fleet WATCHDOG=1" at_least 'WATCHDOG=1$' 3
stop_pid "$fleet_PID"
expect_eq "fleet: exits 0" 0 "$STOP_RC"
check "fleet: STOPPING=1 at SIGTERM" at_least '^[0-9.]+ STOPPING=1$' 1
stop_pid "$collector3_PID"

# Without NOTIFY_SOCKET nothing is sent (and nothing breaks): a second run
# with the sink still there but not named.
: >"$T/notify.txt"
WATCHDOG_USEC=$((WD_MS * 1000)) start collector2 "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector2.out" '^ready' 20 "$collector2_PID"
stop_pid "$collector2_PID"
expect_eq "without NOTIFY_SOCKET the socket hears nothing" 0 "$(wc -l <"$T/notify.txt")"
finish
