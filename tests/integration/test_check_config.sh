#!/usr/bin/env bash
# `intake-collector --check-config` and `intake-sim --check-config` accept a
# good site file (exit 0) and refuse a bad one with exit 1 and exactly one
# line on stderr: FILE:LINE:COL: message.
source "$(dirname "$0")/lib.sh"

for bin in intake-collector intake-sim; do
  rc=0
  "$IC_BIN/$bin" --check-config "$IC_SOURCE_DIR/config/examples/demo.yaml" \
    >"$T/good.out" 2>"$T/good.err" || rc=$?
  expect_eq "$bin accepts the demo site" 0 "$rc"
  expect_eq "$bin prints nothing on stderr for a good file" "" "$(cat "$T/good.err")"
done

good_head() {
  cat <<'YAML'
site:
  id: kekeya
storage:
  path: ./readings.db
mqtt:
  url: mqtt://127.0.0.1:1883
YAML
}

# case NAME LINE COL REGEX: the file $T/NAME.yaml must be refused at LINE:COL
# with a message matching REGEX, by both programs.
case_() {
  local name=$1 line=$2 col=$3 regex=$4 f="$T/$1.yaml"
  for bin in intake-collector intake-sim; do
    local rc=0
    "$IC_BIN/$bin" --check-config "$f" >"$T/$name.out" 2>"$T/$name.err" || rc=$?
    if [ "$rc" -eq 0 ]; then
      not_ok "$bin refuses $name (it exited 0)"
      continue
    fi
    local lines
    lines=$(wc -l <"$T/$name.err")
    local msg
    msg=$(cat "$T/$name.err")
    if [ "$lines" -eq 1 ] && [[ "$msg" == "$f:$line:$col: "* ]] && grep -Eq -- "$regex" <<<"$msg"; then
      ok "$bin: $name -> $msg"
    else
      not_ok "$bin: $name: expected one line '$f:$line:$col: /$regex/', got: $msg"
    fi
  done
}

{ good_head; cat <<'YAML'; } >"$T/unknown-key.yaml"
buses:
  - id: line1
    transport: rtu
    device: /dev/ttyUSB0
    bauds: 9600
meters:
  - {id: M1, bus: line1, unit: 1, profile: tuf2000m}
YAML
case_ unknown-key 11 5 'unknown key "bauds"'

{ good_head; cat <<'YAML'; } >"$T/no-such-bus.yaml"
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0}
meters:
  - id: M1
    bus: line2
    unit: 1
    profile: tuf2000m
YAML
case_ no-such-bus 11 10 'line2'

{ good_head; cat <<'YAML'; } >"$T/duplicate-meter.yaml"
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0}
meters:
  - {id: M1, bus: line1, unit: 1, profile: tuf2000m}
  - {id: M1, bus: line1, unit: 2, profile: tuf2000m}
YAML
case_ duplicate-meter 11 10 'duplicate meter id "M1"'

{ good_head; cat <<'YAML'; } >"$T/same-unit.yaml"
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0}
meters:
  - {id: M1, bus: line1, unit: 1, profile: tuf2000m}
  - {id: M2, bus: line1, unit: 1, profile: tuf2000m}
YAML
case_ same-unit 11 32 'unit 1 on bus "line1" is already used by meter "M1"'

{ good_head; cat <<'YAML'; } >"$T/bad-duration.yaml"
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0, timeout: 5 minutes}
meters:
  - {id: M1, bus: line1, unit: 1, profile: tuf2000m}
YAML
case_ bad-duration 8 64 'expected a duration'

{ good_head; cat <<'YAML'; } >"$T/out-of-range.yaml"
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0}
meters:
  - {id: M1, bus: line1, unit: 300, profile: tuf2000m}
YAML
case_ out-of-range 10 32 'between 1 and 247'

{ good_head; cat <<'YAML'; } >"$T/no-profile.yaml"
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0}
meters:
  - {id: M1, bus: line1, unit: 1, profile: tuf3000x}
YAML
case_ no-profile 10 44 "unknown profile 'tuf3000x'"

{ good_head; cat <<'YAML'; } >"$T/syntax.yaml"
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0
meters:
  - {id: M1, bus: line1, unit: 1, profile: tuf2000m}
YAML
if "$IC_BIN/intake-collector" --check-config "$T/syntax.yaml" 2>"$T/syntax.err"; then
  not_ok "a YAML syntax error is refused"
else
  check "a YAML syntax error names the file, line and column" \
    grep -Eq "^$T/syntax.yaml:[0-9]+:[0-9]+: " "$T/syntax.err"
fi

# Secret files must be regular files: a directory, a FIFO without a writer
# (which would hold the daemon before it starts) and /dev/zero are refused.
mkdir -p "$T/secrets.d"
mkfifo "$T/pw.fifo"
for kind in "secrets.d:a directory" "pw.fifo:a FIFO" "/dev/zero:a character device"; do
  path=${kind%%:*}
  [[ "$path" == /* ]] || path="./$path"
  name="secret-$(basename "$path")"
  { good_head; echo "  password_file: $path"; cat <<'YAML'; } >"$T/$name.yaml"
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0}
meters:
  - {id: M1, bus: line1, unit: 1, profile: tuf2000m}
YAML
  case_ "$name" 7 18 "password_file .* is ${kind#*:}: expected a regular file"
done
{ good_head; cat <<'YAML'; } >"$T/token-zero.yaml"
reports:
  push_url: http://127.0.0.1:9/reports
  token_file: /dev/zero
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0}
meters:
  - {id: M1, bus: line1, unit: 1, profile: tuf2000m}
YAML
case_ token-zero 9 15 'token_file /dev/zero is a character device'

# The site's own topic levels cannot be meter ids, nor "fleet" a site id.
{ good_head; cat <<'YAML'; } >"$T/meter-report.yaml"
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0}
meters:
  - {id: report, bus: line1, unit: 1, profile: tuf2000m}
YAML
case_ meter-report 10 10 'meter id "report" is reserved'
{ good_head | sed 's/id: kekeya/id: fleet/'; cat <<'YAML'; } >"$T/site-fleet.yaml"
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0}
meters:
  - {id: M1, bus: line1, unit: 1, profile: tuf2000m}
YAML
case_ site-fleet 2 7 'site id "fleet" is reserved'

# One serial port through two paths (a link to the device, as
# /dev/serial/by-id/ holds) is one line.
ln -s /dev/null "$T/by-id-link"
{ good_head; cat <<'YAML'; } >"$T/same-port.yaml"
buses:
  - {id: line1, transport: rtu, device: /dev/null}
  - {id: line2, transport: rtu, device: ./by-id-link}
meters:
  - {id: M1, bus: line1, unit: 1, profile: tuf2000m}
YAML
case_ same-port 9 41 'is /dev/null, the serial port of bus "line1"'

# A UTF-8 byte-order mark, as Windows editors write, is not an error.
{ printf '\xEF\xBB\xBF'; cat "$IC_SOURCE_DIR/config/examples/demo.yaml"; } >"$T/bom.yaml"
rc=0
"$IC_BIN/intake-collector" --check-config "$T/bom.yaml" >"$T/bom.out" 2>"$T/bom.err" || rc=$?
expect_eq "a site file with a UTF-8 byte-order mark is accepted" 0 "$rc"

rc=0
"$IC_BIN/intake-collector" --check-config "$T/does-not-exist.yaml" 2>"$T/missing.err" || rc=$?
expect_eq "a missing file exits 1" 1 "$rc"
check "a missing file is named in the error" grep -q "does-not-exist.yaml" "$T/missing.err"
# A serial line asked for more polls than it carries is accepted with a
# warning that says by how much; the demo site's lines fit and get none.
expect_eq "the demo site's lines fit" "" \
  "$(grep warning "$T/good.out" || true)"
{
  good_head
  echo "buses:"
  echo "  - {id: line1, transport: rtu, device: /dev/ttyS0, baud: 9600}"
  echo "  - {id: line2, transport: rtu, device: /dev/ttyS1, baud: 9600}"
  echo "meters:"
  for u in $(seq 1 32); do
    echo "  - {id: S$u, bus: line1, unit: $u, profile: tuf2000m, interval: 100ms}"
  done
  echo "  - {id: T1, bus: line2, unit: 1, profile: tuf2000m, interval: 1s}"
} >"$T/busy.yaml"
rc=0
"$IC_BIN/intake-collector" --check-config "$T/busy.yaml" >"$T/busy.out" 2>"$T/busy.err" || rc=$?
expect_eq "an oversubscribed line is still a valid site" 0 "$rc"
w=$(grep -c "warning: bus line1: its 32 meters need about [0-9.]* s of line time a second at 9600 baud" "$T/busy.out" || true)
expect_eq "and gets one warning, for that line only" "1 1" "$w $(grep -c warning "$T/busy.out" || true)"
# metrics.listen: an address literal and a port.
for bad in "localhost:9464" "127.0.0.1" "127.0.0.1:0" "127.0.0.1:65536" "::1:9464" "[::1]9464" "1.2.3:80"; do
  { good_head; cat <<YAML; } >"$T/metrics-listen.yaml"
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0}
meters:
  - {id: M1, bus: line1, unit: 1, profile: tuf2000m}
metrics:
  listen: "$bad"
YAML
  case_ metrics-listen 12 11 'expected ADDRESS:PORT'
done
{ good_head; cat <<'YAML'; } >"$T/metrics-key.yaml"
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0}
meters:
  - {id: M1, bus: line1, unit: 1, profile: tuf2000m}
metrics:
  listen: 127.0.0.1:9464
  port: 1
YAML
case_ metrics-key 13 3 'unknown key "port" in metrics'
for good in "127.0.0.1:9464" "[::1]:9464" "0.0.0.0:1"; do
  { good_head; cat <<YAML; } >"$T/metrics-good.yaml"
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0}
meters:
  - {id: M1, bus: line1, unit: 1, profile: tuf2000m}
metrics:
  listen: "$good"
YAML
  rc=0
  "$IC_BIN/intake-collector" --check-config "$T/metrics-good.yaml" >/dev/null 2>"$T/metrics-good.err" || rc=$?
  expect_eq "metrics.listen $good is accepted" 0 "$rc"
done

# DTUs that dial in: a server, and rtu-dtu buses bound to it by registration.
dtu_site() {
  good_head
  cat <<YAML
dtu_servers:
  - id: dtu-in
    listen: "$1"
    allow: [$2]
buses:
  - id: canal-3
    transport: rtu-dtu
    server: $3
    registration: "$4"
    heartbeat: "hex:FE"
meters:
  - {id: M1, bus: canal-3, unit: 1, profile: tuf2000m}
YAML
}
dtu_site "[::]:9000" "10.64.0.0/16, 127.0.0.1" dtu-in KKY-DTU-03 >"$T/dtu-good.yaml"
for bin in intake-collector intake-sim; do
  rc=0
  "$IC_BIN/$bin" --check-config "$T/dtu-good.yaml" >/dev/null 2>"$T/dtu-good.err" || rc=$?
  expect_eq "$bin accepts an rtu-dtu bus on a DTU server" 0 "$rc"
done
sed -i '/allow:/d' "$T/dtu-good.yaml"
out=$("$IC_BIN/intake-collector" --check-config "$T/dtu-good.yaml" 2>&1)
check "a DTU server without allow is accepted with a warning" \
  grep -q 'warning: DTU server dtu-in has no allow list' <<<"$out"
dtu_site "0.0.0.0:9000" "10.64.0.0/16" nowhere KKY >"$T/dtu-server.yaml"
case_ dtu-server 14 13 'unknown DTU server "nowhere"'
dtu_site "0.0.0.0:9000" "10.64.0.0/99" dtu-in KKY >"$T/dtu-allow.yaml"
case_ dtu-allow 10 13 'expected an address range'
dtu_site "0.0.0.0:9000" "10.64.0.0/16" dtu-in "hex:GG" >"$T/dtu-registration.yaml"
case_ dtu-registration 15 19 'expected 1..40 bytes as text or as "hex:"'
dtu_site "dtu.example:9000" "10.64.0.0/16" dtu-in KKY >"$T/dtu-listen.yaml"
case_ dtu-listen 9 13 'expected ADDRESS:PORT'

# The uplink section (the bureau's monitoring centre).
uplink_site() {
  good_head
  cat <<'YAML'
buses:
  - {id: line1, transport: rtu, device: /dev/ttyUSB0}
meters:
  - {id: M1, bus: line1, unit: 1, profile: tuf2000m}
  - {id: M2, bus: line1, unit: 2, profile: tuf2000m}
uplink:
  host: 127.0.0.1
  port: 6000
YAML
}
{ uplink_site; cat <<'YAML'; } >"$T/uplink-good.yaml"
  protocol: sl427
  stations:
    - {admin: "530381", station: 13, meters: [M2, M1]}
YAML
rc=0
"$IC_BIN/intake-collector" --check-config "$T/uplink-good.yaml" >/dev/null 2>"$T/uplink-good.err" || rc=$?
expect_eq "an uplink section is accepted" 0 "$rc"
{ uplink_site; cat <<'YAML'; } >"$T/uplink-no-meter.yaml"
  stations:
    - {admin: "530381", station: 13, meters: [M1, M3]}
YAML
case_ uplink-no-meter 16 51 'no meter "M3" in meters'
{ uplink_site; cat <<'YAML'; } >"$T/uplink-two-stations.yaml"
  stations:
    - {admin: "530381", station: 13, meters: [M1]}
    - {admin: "530381", station: 14, meters: [M2, M1]}
YAML
case_ uplink-two-stations 17 51 'meter "M1" is already reported by the station at line 16'
{ uplink_site; cat <<'YAML'; } >"$T/uplink-admin.yaml"
  stations:
    - {admin: "5303810", station: 13, meters: [M1]}
YAML
case_ uplink-admin 16 15 'six-digit administrative division code'
{ uplink_site; cat <<'YAML'; } >"$T/uplink-station.yaml"
  stations:
    - {admin: "530381", station: 60001, meters: [M1]}
YAML
case_ uplink-station 16 34 'between 1 and 60000'
{ uplink_site; cat <<'YAML'; } >"$T/uplink-raw.yaml"
  stations:
    - {raw_address: "5303810D", meters: [M1]}
YAML
case_ uplink-raw 16 21 'ten hexadecimal digits'
{ uplink_site; cat <<'YAML'; } >"$T/uplink-interval.yaml"
  report_interval: 5s
  stations:
    - {admin: "530381", station: 13, meters: [M1]}
YAML
case_ uplink-interval 15 20 'expected a duration between 10s and 1d'
{ uplink_site; cat <<'YAML'; } >"$T/uplink-protocol.yaml"
  protocol: szy651
  stations:
    - {admin: "530381", station: 13, meters: [M1]}
YAML
case_ uplink-protocol 15 13 'expected szy206 or sl427'

finish
