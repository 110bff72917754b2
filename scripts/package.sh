#!/usr/bin/env bash
# Build the Debian package of intake-collector with CPack.
#
#   scripts/package.sh [--arch amd64|arm64|armhf] [--build-dir DIR]
#                      [--toolchain FILE] [--out DIR]
#
# Without --build-dir it builds afresh in build/pkg-ARCH (emptied first);
# with it, it configures DIR for packaging (prefix /usr, Release, the
# compiler flags of dpkg-buildflags, no tests) and builds there, which a
# cross build for another architecture can prepare with its toolchain
# (--toolchain FILE is passed to CMake as CMAKE_TOOLCHAIN_FILE). The package
# goes to --out (default: the build folder); its path is the last line
# printed. Dependencies are computed from the binaries (dpkg-shlibdeps).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD

arch=$(dpkg --print-architecture)
build=""
toolchain=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=${2:?--arch needs amd64, arm64 or armhf}; shift 2 ;;
    --build-dir) build=${2:?--build-dir needs a folder}; shift 2 ;;
    --toolchain) toolchain=${2:?--toolchain needs a file}; shift 2 ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "package.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$arch" in
  amd64|arm64|armhf) ;;
  *) echo "package.sh: --arch must be amd64, arm64 or armhf, not $arch" >&2; exit 2 ;;
esac
if [ "$arch" != "$(dpkg --print-architecture)" ] && [ -z "$toolchain" ] && [ -z "$build" ]; then
  echo "package.sh: building for $arch here needs --toolchain FILE or a --build-dir configured for it" >&2
  exit 2
fi

if [ -z "$build" ]; then
  build="$src/build/pkg-$arch"
  rm -rf "$build"
fi
mkdir -p "$build"
build=$(cd "$build" && pwd)
out=${out:-$build}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Debian's hardening flags for the target architecture (read by CMake at the
# first configure of a folder).
flags() { DEB_HOST_ARCH=$arch DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get "$1"; }
if [ ! -f "$build/CMakeCache.txt" ]; then
  export CFLAGS="$(flags CFLAGS) $(flags CPPFLAGS)"
  export LDFLAGS="$(flags LDFLAGS)"
fi

args=(-S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr
      -DIC_TESTS=OFF -DIC_SANITIZE=OFF -DIC_FUZZ=OFF -DIC_WERROR=ON
      -DCMAKE_POSITION_INDEPENDENT_CODE=ON
      -DIC_SYSTEMD_UNITDIR=/lib/systemd/system
      -DCPACK_DEBIAN_PACKAGE_ARCHITECTURE="$arch")
[ -z "$toolchain" ] || args+=(-DCMAKE_TOOLCHAIN_FILE="$(cd "$(dirname "$toolchain")" && pwd)/$(basename "$toolchain")")
cmake "${args[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null

(cd "$build" && cpack -G DEB -B "$out" >/dev/null)
rm -rf "$out/_CPack_Packages"
deb="$out/intake-collector_$(sed -n 's/^project(intake-collector VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")-1_$arch.deb"
[ -f "$deb" ] || { echo "package.sh: cpack made no $deb" >&2; exit 1; }
echo "$deb"
