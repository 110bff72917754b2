#!/usr/bin/env bash
# The libFuzzer targets (clang, AddressSanitizer, UBSan) for the protocol
# core, register decoding, the config loaders, the DTU packet filter and the
# uplink's frame each run for 30 seconds (FUZZ_SECONDS) from their seed
# corpus in tests/fuzz/corpus: any crash, leak, undefined behaviour or
# timeout fails the test. Long campaigns: see README.
source "$(dirname "$0")/lib.sh"

SECONDS_EACH=${FUZZ_SECONDS:-30}
build="$IC_BIN/../fuzz"
CC=clang cmake -S "$IC_SOURCE_DIR" -B "$build" -DCMAKE_C_COMPILER=clang -DIC_FUZZ=ON \
  -DIC_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$T/cmake.log" 2>&1 ||
  { cat "$T/cmake.log"; not_ok "configure the fuzz build"; finish; }
cmake --build "$build" -j2 --target fuzz_proto fuzz_decode fuzz_config fuzz_dtu fuzz_uplink >"$T/build.log" 2>&1 ||
  { tail -30 "$T/build.log"; not_ok "build the fuzz targets"; finish; }
ok "the fuzz targets build with clang and libFuzzer"

for t in proto decode config dtu uplink; do
  mkdir -p "$T/corpus-$t"
  rc=0
  "$build/bin/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=5 -rss_limit_mb=2048 \
    -print_final_stats=1 "$T/corpus-$t" "$IC_SOURCE_DIR/tests/fuzz/corpus/$t" \
    >"$T/fuzz-$t.log" 2>&1 || rc=$?
  runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$T/fuzz-$t.log")
  if [ "$rc" -eq 0 ] && [ "${runs:-0}" -gt 100 ]; then
    ok "fuzz_$t: ${runs} inputs in ${SECONDS_EACH}s, no crash"
  else
    tail -40 "$T/fuzz-$t.log"
    not_ok "fuzz_$t failed (exit $rc, ${runs:-0} inputs)"
  fi
done
rm -f /tmp/ic-fuzz-config-*.yaml
finish
