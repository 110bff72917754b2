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
# The memory soak (tests/integration/test_soak.sh) measures resident size,
# which means nothing under AddressSanitizer: the two programs are built once
# more, without sanitizers, in $build/rel.
rel="$build/rel"
cmake -S . -B "$rel" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIC_SANITIZE=OFF \
  -DIC_WERROR=ON -DIC_TESTS=OFF >/dev/null
cmake --build "$rel" -j"$(nproc)" --target intake-collector intake-sim
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DIC_TESTS=ON \
  -DIC_SANITIZE="${IC_SANITIZE:-ON}" -DIC_WERROR=ON \
  -DIC_REL_BIN_DIR="$(cd "$rel" && pwd)/bin" >/dev/null
cmake --build "$build" -j"$(nproc)"
# The second test broker, aedes, from the npm registry at the versions its
# lock file names, into the build folder (once; later runs find it there).
tests/tools/aedes/install.sh "$build/aedes" >/dev/null

# Leak checking is forced on: appended to what the caller set (the last
# setting of an option wins).
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0}:detect_leaks=1"
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# A leak inside paho's own message store, not ours: tests/lsan.supp.
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
cd "$build"
# --no-tests=error: a filter or a build that finds no test is a failure.
ctest --output-on-failure --no-tests=error -j2 "$@"
