#!/usr/bin/env bash
# Install what bench/run.sh needs: the project's own packages (scripts/deps.sh),
# then the peer (collectd with its modbus and mqtt plugins' libraries, which
# collectd-core only suggests), the MQTT client library the measuring
# subscriber is built against, and the profilers. Does nothing when all are
# present already.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

PACKAGES=(
  # the peer: collectd's modbus plugin needs libmodbus5, its mqtt plugin
  # libmosquitto1
  collectd-core libmodbus5 libmosquitto1
  # the measuring subscriber (bench/tools/ic-bench.c)
  libmosquitto-dev
  # profiling the collector
  linux-perf valgrind
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

echo "bench deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# collectd-core's recommends pull in a web of plugin libraries the benchmark
# does not load.
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
