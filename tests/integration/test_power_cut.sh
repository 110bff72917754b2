#!/usr/bin/env bash
# A power cut, for real as far as the disk goes: the database sits on ext4 in
# an image file behind a loop device. Under load the daemon is frozen
# (SIGSTOP) and the image is copied at once, without syncing the file system:
# the copy holds what the "disk" had, and nothing of what was still in the
# page cache of the file system above it, as after a power cut. The copy is
# then mounted again (ext4 replays its journal), and:
# - the database passes PRAGMA integrity_check;
# - every reading that reached the broker is in it, with the same ts:
#   a reading is published only after its commit is on disk
#   (synchronous = FULL), so a power cut cannot take back a published seq.
# Five cuts at random moments. Mounts live in a private mount namespace
# (`unshare -m`, as root: loop devices need it) and go with it.
if [ -z "${IC_IN_NS:-}" ]; then
  exec unshare -m env IC_IN_NS=1 bash "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
DISK="$T/disk"
mkdir -p "$DISK" "$T/back"
truncate -s 64M "$T/disk.img"
mkfs.ext4 -q -F "$T/disk.img"
{
  cat <<YAML
site: {id: cut}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: $DISK/readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 300ms}
meters:
YAML
  for u in 1 2 3 4 5 6; do
    echo "  - {id: M$u, bus: plc, unit: $u, profile: mag-00h, interval: 100ms}"
  done
} >"$T/site.yaml"

start_broker broker "$MQTT_PORT"
start_sub sub "$MQTT_PORT" 'water/cut/+/reading'
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"

# published_n: readings the subscriber has so far.
published_n() { grep -c '/reading ' "$T/sub.out" || true; }

bad_integrity=0 missing_total=0 checked_total=0
for i in 1 2 3 4 5; do
  mount -o loop "$T/disk.img" "$DISK"
  "$IC_BIN/intake-collector" --config "$T/site.yaml" >"$T/run$i.out" 2>"$T/run$i.log" &
  pid=$!
  wait_for "$T/run$i.out" '^ready' 20 "$pid"
  n0=$(published_n)
  # Under load for 1 to 3 s of readings after they started to arrive.
  more() { [ "$(published_n)" -ge $((n0 + 60 + RANDOM % 120)) ]; }
  wait_until 30 "readings published in run $i" more
  # The cut: the daemon stops doing anything at once, and the disk's
  # content is taken as it is, the file system above it not synced.
  kill -STOP "$pid"
  cp --sparse=always "$T/disk.img" "$T/back/cut$i.img"
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  umount "$DISK"
  # What reached the broker by the cut (the process was frozen: nothing
  # more can have been published).
  messages sub reading >"$T/published$i.jsonl"
  # Power back: the copy is the disk now.
  cp --sparse=always "$T/back/cut$i.img" "$T/disk.img"
  mount -o loop "$T/disk.img" "$DISK"
  if [ "$(sql "$DISK/readings.db" 'PRAGMA integrity_check' 2>&1 || true)" != ok ]; then
    bad_integrity=$((bad_integrity + 1))
    echo "# integrity check failed after cut $i" >&2
  fi
  # Every published (meter, seq) is in the database with the same ts.
  { sql "$DISK/readings.db" "SELECT meter || ' ' || seq || ' ' || ts_ms FROM readings" ||
    true; } 2>/dev/null | sort -u >"$T/stored$i.txt"
  # ts on the broker is RFC 3339 with milliseconds; compare in ms.
  jq -r 'select(.seq != null) | [.meter, (.seq | tostring),
          ((.ts | .[0:19] + "Z" | fromdateiso8601) * 1000 + (.ts | .[20:23] | tonumber) | tostring)]
         | join(" ")' "$T/published$i.jsonl" | sort -u >"$T/pub$i.txt"
  missing=$(comm -23 "$T/pub$i.txt" "$T/stored$i.txt" | wc -l)
  checked_total=$((checked_total + $(wc -l <"$T/pub$i.txt")))
  missing_total=$((missing_total + missing))
  [ "$missing" -eq 0 ] || echo "# cut $i: $missing published readings not on the disk, e.g. $(comm -23 "$T/pub$i.txt" "$T/stored$i.txt" | head -3 | tr '\n' ';')" >&2
  umount "$DISK"
done
expect_eq "the database passes its integrity check after each of 5 power cuts" 0 "$bad_integrity"
check "readings were published before the cuts ($checked_total)" test "$checked_total" -ge 300
expect_eq "every published reading survived the cuts, with its ts" 0 "$missing_total"
finish
