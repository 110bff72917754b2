#!/usr/bin/env bash
# A bus host name whose DNS server never answers does not hold SIGTERM: the
# daemon exits within the bus timeout plus one second, the lookup left to
# its own thread. Nor does the monitoring centre's host name (uplink.host). Run in network and mount namespaces of the test's own:
# loopback only, a resolver on 127.0.0.1:53 that answers nothing, and a
# resolv.conf naming it.
source "$(dirname "$0")/lib.sh"

command -v unshare >/dev/null && command -v ip >/dev/null ||
  { echo "unshare and ip (util-linux, iproute2) are needed" >&2; exit 1; }
read -r MQTT_PORT < <(free_ports 1)
cat >"$T/site.yaml" <<YAML
site: {id: dnsstop}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
buses:
  - {id: plc, transport: tcp, host: meter.unanswered.example, port: 502, timeout: 1s}
meters:
  - {id: M1, bus: plc, unit: 1, profile: mag-00h, interval: 1s}
YAML
printf 'nameserver 127.0.0.1\noptions timeout:5 attempts:3\n' >"$T/resolv.conf"
# Inside: loopback up, the silent resolver, then the daemon in this process
# (exec), so the PID the test holds is the daemon's.
cat >"$T/inside.sh" <<SH
set -e
ip link set lo up
mount --bind "$T/resolv.conf" /etc/resolv.conf
"$IC_TEST_BIN/ic-babbler" --silent-udp 53 >"$T/dns.out" 2>"$T/dns.log" &
echo \$! >"$T/dns.pid"
exec "$IC_BIN/intake-collector" --config "$T/site.yaml"
SH
start collector unshare --net --mount bash "$T/inside.sh"
wait_for "$T/dns.out" '^query' 20 "$collector_PID"
ok "the daemon asked the silent resolver"
dns_pid=$(cat "$T/dns.pid")
IC_PIDS+=("$dns_pid")
# Let a poll start its lookup, and the lookup hang.
wait_for "$T/collector.log" "resolve meter.unanswered.example: no answer within 1000 ms" 20 \
  "$collector_PID"
stop_pid "$collector_PID"
expect_eq "the daemon exits 0" 0 "$STOP_RC"
check "within the bus timeout plus one second (${STOP_MS} ms)" test "$STOP_MS" -le 2000
kill -TERM "$dns_pid" 2>/dev/null || true

# The centre's host name: the bus is an address (its polls fail at once,
# nobody listens there), so the only lookup is the uplink's.
read -r DEAD_PORT < <(free_ports 1)
cat >"$T/site.yaml" <<YAML
site: {id: dnsstop}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings2.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $DEAD_PORT, timeout: 1s}
meters:
  - {id: M1, bus: plc, unit: 1, profile: mag-00h, interval: 1s}
uplink:
  protocol: szy206
  host: centre.unanswered.example
  port: 6000
  stations:
    - {admin: "530381", station: 13, meters: [M1]}
YAML
rm -f "$T/dns.out" "$T/dns.pid"
start collector2 unshare --net --mount bash "$T/inside.sh"
wait_for "$T/dns.out" '^query' 20 "$collector2_PID"
ok "the daemon asked the silent resolver for the centre"
dns_pid=$(cat "$T/dns.pid")
IC_PIDS+=("$dns_pid")
# Stopped while the lookup hangs (it would for 15 s): a lookup held on the
# loop would hold the stop with it.
stop_pid "$collector2_PID"
expect_eq "the daemon exits 0 with the centre's lookup hanging" 0 "$STOP_RC"
check "within the bus timeout plus one second (${STOP_MS} ms)" test "$STOP_MS" -le 2000
kill -TERM "$dns_pid" 2>/dev/null || true
finish
