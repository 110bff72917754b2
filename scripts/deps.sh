#!/usr/bin/env bash
# Install the Debian packages that the build, the tests and the demo need.
# Does nothing when they are all present already.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake pkg-config
  libmodbus-dev libuv1-dev libsqlite3-dev libyaml-dev libpaho-mqtt-dev
  libcjson-dev libssl-dev libcmocka-dev libcurl4-openssl-dev
  # sd_notify: readiness, status, the watchdog (docs/daemon.md, Under systemd)
  libsystemd-dev
  # tests and demo
  mosquitto mosquitto-clients mbpoll sqlite3 jq openssl
  # namespaces of the tests' own (a silent DNS server)
  iproute2
  # the power-cut test: ext4 in an image on a loop device
  e2fsprogs util-linux mount
  # wall-clock steps in the clock test
  libfaketime
  # the HTML report, checked as a reader sees it
  chromium fonts-noto-cjk netpbm
  # the fuzz targets (libFuzzer)
  clang libclang-rt-14-dev
  # the install and package checks: the .deb, its lint, the units, the manuals
  dpkg-dev fakeroot file lintian systemd man-db groff-base
  # the metrics endpoint: scraped by curl, promtool and a Prometheus server
  curl prometheus
  # the notify socket of the sd_notify test (tests/tools/notifysink.py)
  python3
)

# Installed for this machine's architecture (or for all): a cross build's
# libraries for another architecture (libsystemd-dev:arm64) do not count.
ARCH=$(dpkg --print-architecture)
missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${db:Status-Abbrev}${Architecture}\n' "$p" 2>/dev/null |
    grep -Eq "^ii +($ARCH|all)\$"; then
    missing+=("$p")
  fi
done
# The second test broker (aedes, tests/tools/aedes) runs on Node.js 20 or
# later with npm; a machine that has them from another source keeps those.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
