#!/usr/bin/env bash
# Cross-build for an ARM gateway and prove the build under emulation:
#
#   scripts/cross.sh arm64|armhf
#
# installs what is missing (the architecture added to dpkg, Debian's cross
# toolchain, qemu-user-static and the target's -dev packages), configures
# build-ARCH with cmake/toolchains/<triplet>.cmake (no sanitizers, warnings
# are errors), builds, runs the unit tests under qemu (ctest -L unit), makes
# the package when scripts/package.sh is there, and ends with a smoke run
# (tests/cross/smoke.sh): the cross-built intake-collector, under qemu, polls
# the cross-built intake-sim for 10 s and publishes to the build machine's
# mosquitto, every reading delivered. Exits non-zero on any failure.
#
# Environment: BUILD_DIR (default build-ARCH).
set -euo pipefail
cd "$(dirname "$0")/.."

arch=${1:-}
case "$arch" in
  arm64) triplet=aarch64-linux-gnu; qemu=qemu-aarch64-static ;;
  armhf) triplet=arm-linux-gnueabihf; qemu=qemu-arm-static ;;
  *) echo "usage: scripts/cross.sh arm64|armhf" >&2; exit 2 ;;
esac
build=${BUILD_DIR:-build-$arch}

# --- what the build, the emulated tests and the smoke run need -------------
PACKAGES=(
  # the build machine's: the cross toolchain, the emulator, the tools
  cmake pkgconf "crossbuild-essential-$arch" qemu-user-static
  # the smoke run's broker and its checks
  mosquitto mosquitto-clients sqlite3 jq file
)
for p in libmodbus-dev libuv1-dev libsqlite3-dev libyaml-dev libpaho-mqtt-dev \
  libcjson-dev libssl-dev libcmocka-dev libcurl4-openssl-dev libsystemd-dev; do
  PACKAGES+=("$p:$arch") # the target's libraries and headers
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -ne 0 ]; then
  echo "cross: installing ${missing[*]}" >&2
  if [ "$arch" != "$(dpkg --print-architecture)" ] &&
     ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    $SUDO dpkg --add-architecture "$arch"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- build ------------------------------------------------------------------
echo "cross: building for $arch ($triplet) in $build" >&2
cmake -S . -B "$build" -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/toolchains/$triplet.cmake" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIC_SANITIZE=OFF -DIC_WERROR=ON -DIC_TESTS=ON >/dev/null
cmake --build "$build" -j"$(nproc)"

# --- the unit tests, under qemu (the toolchain file names the emulator) -----
echo "cross: unit tests under $qemu" >&2
(cd "$build" && ctest --output-on-failure --no-tests=error -j2 -L unit)

# --- the package --------------------------------------------------------------
if [ -x scripts/package.sh ]; then
  scripts/package.sh --arch "$arch" --build-dir "$build"
else
  echo "cross: no scripts/package.sh here: no package made" >&2
fi

# --- the smoke run --------------------------------------------------------------
echo "cross: smoke run under $qemu" >&2
IC_CROSS_BUILD="$build" IC_EMULATOR="$qemu" tests/cross/smoke.sh
echo "cross: $arch built, unit tests and smoke run passed under $qemu" >&2
