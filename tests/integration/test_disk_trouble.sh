#!/usr/bin/env bash
# Disk trouble: the database sits on a small tmpfs (mounted in a private
# mount namespace, `unshare -Urm`) that fills up while the daemon runs, and
# later turns read-only (its files refuse writes, through tests/tools/failfs.c:
# the kernel will not remount a file system read-only while a file on it is
# open for writing). Each time: the readings keep going out live (without a
# sequence number, "stored": false), the trouble is logged once when it starts
# and once when it ends, and when space returns the held readings are stored
# and published with their sequence numbers: every meter's numbers reach the
# broker without a gap and every live-only reading is among them.
if [ -z "${IC_IN_NS:-}" ]; then
  exec unshare -Urm env IC_IN_NS=1 bash "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
DBDIR="$T/db"
mkdir -p "$DBDIR"
mount -t tmpfs -o size=4m tmpfs "$DBDIR"
# The mount goes with the namespace when the test ends.
{
  cat <<YAML
site: {id: disk}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: $DBDIR/readings.db, max_size: 2MiB, maintenance_interval: 1h}
reports: {periods: [hourly]}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
YAML
  for u in 1 2 3 4 5 6 7 8; do
    echo "  - {id: M$u, bus: plc, unit: $u, profile: tuf2000m, interval: 100ms}"
  done
} >"$T/site.yaml"
DB="$DBDIR/readings.db"

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" "water/disk/#"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
IC_FAILFS_DIR="$DBDIR" IC_FAILFS_FLAG="$T/readonly" LD_PRELOAD="$IC_TEST_BIN/ic-failfs.so" \
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
  start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"

numbered() { messages sub reading | jq -c 'select(.seq != null)' | wc -l; }
unstored() { messages sub reading | jq -c 'select(.stored == false)' | wc -l; }
at_least() { [ "$("$1")" -ge "$2" ]; }
gateway_storage() {
  grep -E "^water/disk/gateway/state " "$T/sub.out" | tail -n 1 | cut -d' ' -f2- | jq -r .storage
}
trouble_lines() { grep -c "cannot write the database" "$T/collector.log" || true; }
recovered_lines() { grep -c "storage: writing again" "$T/collector.log" || true; }
storage_is() { [ "$(gateway_storage)" = "$1" ]; }

wait_until 30 "readings published before the trouble" at_least numbered 200

# Trouble: one for each way the file system can let the daemon down.
phase() { # NAME START STOP N
  local name=$1 n=$4
  local before
  before=$(unstored)
  eval "$2"
  wait_until 60 "$name: the daemon notices" at_least trouble_lines "$n"
  check "$name: the gateway state says the storage is failing" \
    wait_until 10 "gateway state failing" storage_is failing
  # 8 meters at 10 readings/s: 800 live readings take 10 s, long enough for
  # several attempts (after 1, 2, 4 and 8 s); each must not log again.
  check "$name: readings keep going out live" \
    wait_until 60 "800 live readings" at_least unstored $((before + 800))
  expect_eq "$name: logged once when it started" "$n" "$(trouble_lines)"
  eval "$3"
  check "$name: storage recovers when the file system takes writes again" \
    wait_until 20 "recovery" at_least recovered_lines "$n"
  check "$name: the gateway state says the storage is ok again" \
    wait_until 10 "gateway state ok" storage_is ok
  expect_eq "$name: logged once when it ended" "$n" "$(recovered_lines)"
}
phase "disk full" \
  'dd if=/dev/zero of="$DBDIR/fill" bs=64k 2>/dev/null || true; ok "the file system is full: $(df -k --output=avail "$DBDIR" | tail -n 1 | tr -d " ") kB left"' \
  'rm -f "$DBDIR/fill"' 1
phase "read-only" 'touch "$T/readonly"' 'rm -f "$T/readonly"' 2

# Some more readings stored normally; then the meters stop, the outbox
# empties, and the daemon stops cleanly.
n=$(numbered)
wait_until 30 "readings published after the trouble" at_least numbered $((n + 200))
stop_meters "$T/collector.log" 8
outbox_empty() { [ "$(sql "$DB" 'SELECT count(*) FROM readings WHERE delivered = 0')" = 0 ]; }
wait_until 20 "every stored reading delivered" outbox_empty
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
expect_eq "the database is intact" ok "$(sql "$DB" 'PRAGMA integrity_check')"

# Nothing lost: each meter's sequence numbers are contiguous on the broker,
# and every reading that went out live only is there with its number too.
wait_until 10 "the subscriber has every stored reading" \
  at_least numbered "$(sql "$DB" 'SELECT count(*) FROM readings')"
messages sub reading >"$T/readings.jsonl"
for m in M1 M2 M3 M4 M5 M6 M7 M8; do
  last=$(sql "$DB" "SELECT last_seq FROM meters WHERE id = '$m'")
  expect_eq "meter $m: sequence numbers 1..$last all on the broker" 0 \
    "$(missing_seqs "$T/readings.jsonl" "$m" "$last")"
done
lost=$(jq -s '([.[] | select(.seq != null) | "\(.meter) \(.ts)"] | unique) as $num
  | [.[] | select(.stored == false) | "\(.meter) \(.ts)"] | unique - $num | length' "$T/readings.jsonl")
expect_eq "every live-only reading was stored and published with its number" 0 "$lost"
late=$(jq -s '([.[] | select(.stored == false) | "\(.meter) \(.ts)"] | unique) as $u
  | [.[] | select(.seq != null and .historical != true) | "\(.meter) \(.ts)"
     | select(. as $k | $u | index($k))] | length' "$T/readings.jsonl")
expect_eq "those numbered later are flagged historical" 0 "$late"
umount "$DBDIR" # so that the clean-up can remove the folder
expect_eq "no (meter, seq) names two different readings on the broker" 0 \
  "$(seq_clashes "$T/readings.jsonl")"
finish
