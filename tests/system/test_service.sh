#!/usr/bin/env bash
# The Debian package as a service under a real systemd: a Debian 12 root
# booted with systemd-nspawn, the .deb installed with apt, mosquitto and
# intake-sim inside, then intake-collector started by systemctl.
#
# It proves: readings reach the broker and the database (delivered); the
# unit's StatusText carries the daemon's status; a stopped (SIGSTOP) daemon
# is ended and restarted by the watchdog (WatchdogSec lowered to 4s by a
# drop-in) and readings flow again; a meter that stops answering shows in
# `journalctl -p warning`; `systemctl stop` leaves nothing running; the user
# intake is in the group dialout; `apt-get remove` keeps the database and
# `apt-get purge` deletes it.
#
# Not part of CTest or CI: the first run downloads a root with debootstrap.
#
#   tests/system/test_service.sh            (as root)
#
# Environment:
#   IC_SYSTEM_ROOT  where the pristine root is kept (default build/system-root);
#                   each run boots a copy of it (cp -a --reflink=auto) that is
#                   removed afterwards. Delete the folder to download afresh.
#   IC_MIRROR       the Debian mirror (default: the first bookworm URI of
#                   /etc/apt/sources.list and /etc/apt/sources.list.d/)
#   IC_KEEP=1       keep the run's copy of the root and its logs
#
# Needs (installed with apt-get when missing): debootstrap, systemd-container
# (systemd-nspawn), util-linux (nsenter), and what scripts/package.sh needs.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=$PWD

if [ "$(id -u)" -ne 0 ]; then
  echo "test_service.sh: must run as root (debootstrap, systemd-nspawn)" >&2
  exit 2
fi

# --- What the script needs on the build machine -----------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v nsenter >/dev/null || need+=(util-linux)
if [ "${#need[@]}" -gt 0 ]; then
  echo "# installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

CACHE=${IC_SYSTEM_ROOT:-$src/build/system-root}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
PRISTINE=$CACHE/root
MACHINE=ic-svc-$$

PASSES=0
FAILS=0
ok() { PASSES=$((PASSES + 1)); echo "ok - $*"; }
not_ok() { FAILS=$((FAILS + 1)); echo "not ok - $*"; }
check() {
  local desc=$1
  shift
  if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}
expect_eq() {
  if [ "$2" == "$3" ]; then ok "$1"; else not_ok "$1: expected [$2], got [$3]"; fi
}
# wait_until TIMEOUT_S DESCRIPTION CMD...: poll CMD until it succeeds.
wait_until() {
  local timeout=$1 desc=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if "$@"; then return 0; fi
    sleep 0.2
  done
  echo "# timed out after ${timeout}s: $desc" >&2
  return 1
}

# --- The mirror --------------------------------------------------------------
# The first URI of a bookworm entry (not -security, -updates), in either
# format of apt's sources.
host_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { for (i = 2; i < NF; i++) if ($i ~ /^[a-z+]+:\/\//) {
           if ($(i + 1) == "bookworm") print $i; break } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = "" } {
           n = split($0, l, "\n"); uri = ""; hit = 0; deb = 0
           for (i = 1; i <= n; i++) {
             if (l[i] ~ /^#/) continue
             if (l[i] ~ /^Types:/ && l[i] ~ /[ \t]deb([ \t]|$)/) deb = 1
             if (l[i] ~ /^URIs:/) { split(l[i], u, /[ \t]+/); uri = u[2] }
             if (l[i] ~ /^Suites:/ && l[i] ~ /[ \t]bookworm([ \t]|$)/) hit = 1
           }
           if (deb && hit && uri != "") print uri }' "$f"
  done
}
MIRROR=${IC_MIRROR:-$(host_mirror | head -n 1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

# --- The package and intake-sim ------------------------------------------------
t0=$SECONDS
echo "# building the package (scripts/package.sh --arch amd64)"
deb=$(scripts/package.sh --arch amd64 2>"$CACHE/package.log" | tail -n 1) ||
  { cat "$CACHE/package.log" >&2; exit 1; }
SIM=$src/build/pkg-amd64/bin/intake-sim
[ -x "$SIM" ] || { echo "test_service.sh: no $SIM" >&2; exit 1; }
echo "# $(basename "$deb") built in $((SECONDS - t0)) s"

# The packages the .deb depends on (first of each alternative, no versions).
deb_depends() {
  dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/[[:space:]]//g' | grep -v '^$'
}
# What the root holds besides minbase: an init, the bus, the broker and its
# clients, sqlite3 and jq to look at what the daemon did, the package's
# dependencies (so that the container needs no network).
BASE_PKGS=(systemd systemd-sysv dbus mosquitto mosquitto-clients sqlite3 jq procps
           ca-certificates)

# --- The pristine root (made once) ---------------------------------------------
t0=$SECONDS
if [ ! -f "$CACHE/root.done" ]; then
  echo "# making a Debian 12 root in $PRISTINE from $MIRROR (once)"
  rm -rf "$PRISTINE" "$CACHE/root.new"
  include=$(printf '%s\n' "${BASE_PKGS[@]}" $(deb_depends) | sort -u | paste -sd, -)
  if ! debootstrap --variant=minbase --include="$include" bookworm "$CACHE/root.new" "$MIRROR" \
       >"$CACHE/debootstrap.log" 2>&1; then
    echo "test_service.sh: debootstrap failed, see $CACHE/debootstrap.log" >&2
    tail -n 20 "$CACHE/debootstrap.log" >&2
    exit 1
  fi
  # apt's lists, so that apt-get install ./PKG.deb resolves inside.
  chroot "$CACHE/root.new" apt-get update -q >/dev/null
  chroot "$CACHE/root.new" apt-get clean
  mv "$CACHE/root.new" "$PRISTINE"
  touch "$CACHE/root.done"
  echo "# root made in $((SECONDS - t0)) s"
fi
# A package that gained a dependency since the root was made: add it.
missing=()
for p in $(deb_depends); do
  chroot "$PRISTINE" dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' ||
    missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "# adding ${missing[*]} to the root"
  chroot "$PRISTINE" apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive chroot "$PRISTINE" apt-get install -y -q "${missing[@]}" >/dev/null
  chroot "$PRISTINE" apt-get clean
fi

# --- This run's copy, booted ----------------------------------------------------
RUN=$(mktemp -d "$CACHE/run.XXXXXX")
ROOT=$RUN/root
NSPAWN_PID=""
LEADER=""
cleanup() {
  local rc=$?
  set +e
  if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    # SIGRTMIN+4 to the container's init: a clean poweroff.
    if [ -n "$LEADER" ]; then kill -s SIGRTMIN+4 "$LEADER" 2>/dev/null; fi
    local deadline=$((SECONDS + 30))
    while kill -0 "$NSPAWN_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
      echo "# the container did not power off; killing systemd-nspawn $NSPAWN_PID"
      kill -KILL "$NSPAWN_PID" 2>/dev/null
    fi
    wait "$NSPAWN_PID" 2>/dev/null
  fi
  if [ "$FAILS" -ne 0 ] || [ "$rc" -ne 0 ] || [ "${IC_KEEP:-0}" = 1 ]; then
    echo "# kept: $RUN (the boot log: $RUN/console.log)" >&2
    [ "$rc" -ne 0 ] || rc=1
    [ "$FAILS" -ne 0 ] || [ "${IC_KEEP:-0}" != 1 ] || rc=0
  else
    rm -rf "$RUN"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$SECONDS
cp -a --reflink=auto "$PRISTINE" "$ROOT"
mkdir -p "$ROOT/srv/ic"
cp "$deb" "$ROOT/srv/ic/"
install -m 0755 "$SIM" "$ROOT/usr/local/bin/intake-sim"
DEB_IN=/srv/ic/$(basename "$deb")

nspawn_args=(--quiet -D "$ROOT" -M "$MACHINE" --boot --private-network --console=read-only)
# Without systemd-machined on this machine, nothing to register with.
if ! { [ -d /run/systemd/system ] && systemctl is-active -q systemd-machined 2>/dev/null; }; then
  nspawn_args+=(--register=no --keep-unit)
fi
echo "# booting $MACHINE"
systemd-nspawn "${nspawn_args[@]}" >"$RUN/console.log" 2>&1 </dev/null &
NSPAWN_PID=$!

# The container's init: the child of systemd-nspawn, running systemd.
find_leader() {
  local c
  if ! kill -0 "$NSPAWN_PID" 2>/dev/null; then
    echo "test_service.sh: systemd-nspawn exited:" >&2
    tail -n 20 "$RUN/console.log" >&2
    exit 1
  fi
  for c in $(cat /proc/"$NSPAWN_PID"/task/*/children 2>/dev/null); do
    if [ "$(readlink /proc/"$c"/exe 2>/dev/null)" != "$(readlink /proc/"$NSPAWN_PID"/exe)" ]; then
      LEADER=$c
      return 0
    fi
  done
  return 1
}
wait_until 30 "the container's init" find_leader || { echo "test_service.sh: no container init" >&2; cat "$RUN/console.log" >&2; exit 1; }

# inside CMD...: run CMD in the container (every namespace of its init), with
# a clean environment.
inside() {
  nsenter -t "$LEADER" -a -- /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 HOME=/root "$@"
}
booted() {
  local st
  st=$(inside systemctl is-system-running --wait 2>/dev/null) || true
  case "$st" in running|degraded) return 0 ;; esac
  return 1
}
wait_until 120 "the container's boot" booted || { echo "test_service.sh: the container did not boot" >&2; tail -n 40 "$RUN/console.log" >&2; exit 1; }
state=$(inside systemctl is-system-running || true)
echo "# booted in $((SECONDS - t0)) s ($state)"
[ "$state" = running ] || inside systemctl --failed --no-legend | sed 's/^/# failed: /'

# --- Install --------------------------------------------------------------------
if inside env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$DEB_IN" \
     >"$RUN/apt-install.log" 2>&1; then
  ok "apt-get install ./$(basename "$deb") inside a booted Debian 12"
else
  not_ok "apt-get install ./$(basename "$deb") (see $RUN/apt-install.log)"
  tail -n 20 "$RUN/apt-install.log" | sed 's/^/# /'
  exit 1
fi
check "the system user intake exists" bash -c "nsenter -t $LEADER -a getent passwd intake >/dev/null"
check "intake is in the group dialout" bash -c "nsenter -t $LEADER -a id -nG intake | tr ' ' '\n' | grep -qx dialout"
expect_eq "the package does not enable the service" disabled "$(inside systemctl is-enabled intake-collector || true)"
expect_eq "the service is not started by the install" inactive "$(inside systemctl is-active intake-collector || true)"

# --- The broker, the meters, the site -------------------------------------------
wait_until 20 "mosquitto active" inside systemctl is-active -q mosquitto ||
  inside systemctl start mosquitto
check "mosquitto (Debian's unit) runs" inside systemctl is-active -q mosquitto

cat >"$ROOT/etc/intake-collector/site.yaml" <<'YAML'
# The service test's site: four Modbus TCP meters on loopback, served by
# intake-sim, and the local mosquitto.
site: {id: svctest, name: "service test"}
mqtt: {url: "mqtt://127.0.0.1:1883", client_id: svctest-gw}
storage: {path: /var/lib/intake-collector/readings.db}
sim: {control: /run/intake-sim/sim.sock}
buses:
  - {id: plc1, transport: tcp, host: 127.0.0.1, port: 5021, timeout: 500ms}
  - {id: plc2, transport: tcp, host: 127.0.0.1, port: 5022, timeout: 500ms}
meters:
  - {id: M1, bus: plc1, unit: 1, profile: mag-00h, interval: 1s,
     sim: {fixed: {flow_m3h: 80.5, total_m3: 4321, velocity_ms: 0.5}}}
  - {id: M2, bus: plc1, unit: 2, profile: open-channel, interval: 1s}
  - {id: M3, bus: plc2, unit: 1, profile: tuf2000m, interval: 1s}
  - {id: M4, bus: plc2, unit: 2, profile: mag-00h, interval: 1s}
YAML
check "the site file passes --check-config" bash -c "nsenter -t $LEADER -a intake-collector --check-config /etc/intake-collector/site.yaml >/dev/null"

inside systemd-run -q --unit=intake-sim -p RuntimeDirectory=intake-sim \
  /usr/local/bin/intake-sim --config /etc/intake-collector/site.yaml \
  --profile-dir /usr/share/intake-collector/profiles
sim_ready() { inside intake-sim ctl --socket /run/intake-sim/sim.sock status >/dev/null 2>&1; }
wait_until 20 "intake-sim's control socket" sim_ready
check "intake-sim runs (a transient unit)" sim_ready

# A subscriber that keeps every message, with its arrival time.
inside systemd-run -q --unit=ic-sub -p StandardOutput=file:/root/sub.out \
  stdbuf -oL mosquitto_sub -h 127.0.0.1 -p 1883 -q 1 -t 'water/#' -v
SUB=$ROOT/root/sub.out
# count PATTERN: how many messages the subscriber got on topics matching it.
count() {
  local n
  n=$(grep -cE "^$1 " "$SUB" 2>/dev/null) || true
  echo "${n:-0}"
}
readings() { count 'water/svctest/M[0-9]/reading'; }
# readings_of M: how many reading messages of meter M.
readings_of() { count "water/svctest/$1/reading"; }
sql() { inside sqlite3 -batch -noheader /var/lib/intake-collector/readings.db "$1"; }

# The watchdog interval, lowered for the test.
mkdir -p "$ROOT/etc/systemd/system/intake-collector.service.d"
cat >"$ROOT/etc/systemd/system/intake-collector.service.d/watchdog.conf" <<'CONF'
[Service]
WatchdogSec=4s
RestartSec=1s
CONF
inside systemctl daemon-reload

# --- Start -------------------------------------------------------------------------
if inside systemctl start intake-collector; then
  ok "systemctl start intake-collector (Type=notify: READY=1 came)"
else
  not_ok "systemctl start intake-collector"
  inside journalctl -u intake-collector --no-pager -n 30 | sed 's/^/# /'
  exit 1
fi
check "the unit is active" inside systemctl is-active -q intake-collector
expect_eq "the daemon runs as intake" intake "$(inside ps -o user= -p "$(inside systemctl show -p MainPID --value intake-collector)" | tr -d ' ')"

# (a) readings reach the broker and are delivered in the database.
all_meters() {
  local m
  for m in M1 M2 M3 M4; do [ "$(readings_of $m)" -ge 3 ] || return 1; done
}
check "three readings of each of the four meters reach mosquitto" wait_until 30 "readings" all_meters
expect_eq "M1's pinned flow is what the subscriber sees" 80.5 \
  "$(grep -m1 '^water/svctest/M1/reading ' "$SUB" | cut -d' ' -f2- | inside jq -r .flow_m3h)"
delivered() { [ "$(sql 'SELECT count(*) FROM readings WHERE delivered = 1')" -ge 12 ]; }
check "the database holds delivered rows (sqlite3 on /var/lib/intake-collector)" \
  wait_until 20 "delivered rows" delivered
expect_eq "the database belongs to intake" intake:intake "$(inside stat -c %U:%G /var/lib/intake-collector/readings.db)"

# (b) the status line.
status_text() { inside systemctl show -p StatusText --value intake-collector; }
all_online() { status_text | grep -q '^4/4 meters online'; }
wait_until 10 "StatusText 4/4" all_online || true
st=$(status_text)
check "StatusText carries the daemon's status: \"$st\"" all_online

# (c) the watchdog ends a stopped daemon and systemd restarts it.
pid1=$(inside systemctl show -p MainPID --value intake-collector)
nr1=$(inside systemctl show -p NRestarts --value intake-collector)
inside systemctl kill -s SIGSTOP intake-collector
t_stop=$SECONDS
restarted() {
  local p
  p=$(inside systemctl show -p MainPID --value intake-collector)
  [ "$p" != 0 ] && [ "$p" != "$pid1" ] && inside systemctl is-active -q intake-collector
}
if wait_until 30 "a new MainPID" restarted; then
  ok "the SIGSTOP-ed daemon was restarted after $((SECONDS - t_stop)) s (WatchdogSec=4s)"
else
  not_ok "the SIGSTOP-ed daemon was not restarted within 30 s"
fi
nr2=$(inside systemctl show -p NRestarts --value intake-collector)
expect_eq "NRestarts went up by one" "$((nr1 + 1))" "$nr2"
check "the journal says the watchdog ended it" \
  bash -c "nsenter -t $LEADER -a journalctl -u intake-collector --no-pager | grep -q 'Watchdog timeout'"
check "the old process is gone" bash -c "! nsenter -t $LEADER -a kill -0 $pid1 2>/dev/null"
before=$(readings)
more() { [ "$(readings)" -ge $((before + 8)) ]; }
check "readings flow again after the restart" wait_until 30 "readings after restart" more

# (d) a meter that stops answering is a warning in the journal.
inside intake-sim ctl --socket /run/intake-sim/sim.sock fault M3 offline >/dev/null
m3_off() { inside journalctl -u intake-collector -p warning --no-pager -o cat | grep -q 'M3.*offline'; }
check "journalctl -p warning -u intake-collector shows M3 going offline" wait_until 30 "M3 offline" m3_off
inside journalctl -u intake-collector -p warning --no-pager -o cat | grep 'M3.*offline' | head -n 1 | sed 's/^/#   /'
three_online() { status_text | grep -q '^3/4 meters online'; }
check "StatusText follows: 3/4 meters online" wait_until 10 "StatusText 3/4" three_online

# (e) a stop leaves nothing running.
mainpid=$(inside systemctl show -p MainPID --value intake-collector)
check "pgrep finds the running daemon" bash -c "nsenter -t $LEADER -a pgrep -f '^/usr/bin/intake-collector ' >/dev/null"
if inside systemctl stop intake-collector; then ok "systemctl stop intake-collector"; else not_ok "systemctl stop intake-collector"; fi
expect_eq "the unit is inactive" inactive "$(inside systemctl is-active intake-collector || true)"
expect_eq "its Result is success (exit 0 on SIGTERM)" success "$(inside systemctl show -p Result --value intake-collector)"
check "no intake-collector process is left" bash -c "! nsenter -t $LEADER -a pgrep -f '^/usr/bin/intake-collector '"
check "the last main process ($mainpid) is gone" bash -c "! nsenter -t $LEADER -a kill -0 $mainpid 2>/dev/null"
expect_eq "every stored reading was delivered" 0 "$(sql 'SELECT count(*) FROM readings WHERE delivered = 0')"

# (f) remove keeps the database, purge deletes it.
rows=$(sql 'SELECT count(*) FROM readings')
inside env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q intake-collector >"$RUN/apt-remove.log" 2>&1 ||
  not_ok "apt-get remove failed (see $RUN/apt-remove.log)"
check "apt-get remove: the program is gone" test ! -e "$ROOT/usr/bin/intake-collector"
check "apt-get remove keeps /var/lib/intake-collector/readings.db" test -f "$ROOT/var/lib/intake-collector/readings.db"
expect_eq "with all its rows" "$rows" "$(sql 'SELECT count(*) FROM readings')"
check "the site file stays (a conffile)" test -f "$ROOT/etc/intake-collector/site.yaml"
inside env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q intake-collector >"$RUN/apt-purge.log" 2>&1 ||
  not_ok "apt-get purge failed (see $RUN/apt-purge.log)"
check "apt-get purge deletes /var/lib/intake-collector" test ! -e "$ROOT/var/lib/intake-collector"
check "apt-get purge deletes the site file" test ! -e "$ROOT/etc/intake-collector/site.yaml"
expect_eq "the package is gone from dpkg's status" "" \
  "$(inside dpkg-query -W -f='${db:Status-Abbrev}' intake-collector 2>/dev/null | tr -d ' ' || true)"

echo "$PASSES passed, $FAILS failed"
[ "$FAILS" -eq 0 ]
