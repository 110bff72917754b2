#!/usr/bin/env bash
# A database the daemon's user cannot write, or in a folder it cannot write
# in, is refused at start with the path, the user and the system's words,
# rather than run in disk-trouble mode and lose the readings held at stop.
source "$(dirname "$0")/lib.sh"

command -v setpriv >/dev/null || { echo "setpriv (util-linux) is needed" >&2; exit 1; }
read -r MQTT_PORT TCP_PORT < <(free_ports 2)
# Readable by the unprivileged user that runs the daemon below.
chmod 755 "$T"
mkdir -p "$T/data"
cat >"$T/site.yaml" <<YAML
site: {id: unwritable}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./data/readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 1s}
meters:
  - {id: M1, bus: plc, unit: 1, profile: ./mag-00h.yaml}
YAML
# The program and the profile as nobody can reach them, wherever the build
# and the sources live.
cp "$IC_SOURCE_DIR/drivers/profiles/mag-00h.yaml" "$IC_BIN/intake-collector" "$T/"
chmod 644 "$T/site.yaml" "$T/mag-00h.yaml"
chmod 755 "$T/intake-collector"
# The database made by another user (root, here).
start first "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/first.out" '^ready' 20 "$first_PID"
stop_pid "$first_PID"
expect_eq "the database was made" 0 "$STOP_RC"

as_nobody() {
  setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
}

# The folder is root's, 755: nobody cannot make the -wal file there.
rc=0
as_nobody "$T/intake-collector" --config "$T/site.yaml" >"$T/dir.out" 2>"$T/dir.log" || rc=$?
expect_eq "a database in a folder the user cannot write is refused (exit 1)" 1 "$rc"
check "naming the folder, the user and the cause" \
  grep -q "its folder $T/data is not writable for user nobody (uid 65534): Permission denied" \
  "$T/dir.log"
check "before ready" bash -c "! grep -q ready '$T/dir.out'"

# The folder is open to all; the database file is still root's, 644.
chmod 777 "$T/data"
rc=0
as_nobody "$T/intake-collector" --config "$T/site.yaml" >"$T/file.out" 2>"$T/file.log" || rc=$?
expect_eq "a database file the user cannot write is refused (exit 1)" 1 "$rc"
check "naming the file, the user and the cause" \
  grep -q "$T/data/readings.db is not writable for user nobody (uid 65534): Permission denied" \
  "$T/file.log"
check "not started in disk-trouble mode" bash -c "! grep -q 'cannot write the database' '$T/file.log'"
finish
