#!/usr/bin/env bash
# Install what is missing, build with AddressSanitizer and UBSan, and run the
# whole test suite under CTest. Extra arguments go to ctest (for example
# `-L unit` or `-R mbpoll`).
#
# Environment: BUILD_DIR (default build), IC_SANITIZE (default ON).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

build=${BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug \
  -DIC_SANITIZE="${IC_SANITIZE:-ON}" -DIC_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$build"
ctest --output-on-failure -j2 "$@"
