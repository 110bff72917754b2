#!/usr/bin/env bash
# The demo: install what is missing, build, start intake-sim on the example
# site, read every meter the way a field engineer commissioning the site
# would, take one meter offline and bring it back, then stop what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc)" --target intake-collector intake-sim ic-freeport

work=$(mktemp -d /tmp/intake-demo.XXXXXX)
mapfile -t ports < <(build/tests/ic-freeport 2)
IC_TCP_PORT=${ports[0]} IC_ROT_PORT=${ports[1]}
export IC_TCP_PORT IC_ROT_PORT
export IC_RTU_DEVICE="$work/ttyDEMO0" IC_SIM_CONTROL="$work/sim.sock" IC_DB="$work/demo.db"
site=config/examples/demo.yaml

sim_pid=""
cleanup() {
  if [ -n "$sim_pid" ] && kill -0 "$sim_pid" 2>/dev/null; then
    kill -TERM "$sim_pid"
    wait "$sim_pid" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== checking the site file"
build/bin/intake-collector --check-config "$site"

echo "== starting intake-sim (logs in $work/sim.log)"
build/bin/intake-sim --config "$site" >"$work/sim.out" 2>"$work/sim.log" &
sim_pid=$!
for _ in $(seq 1 200); do
  grep -q '^ready' "$work/sim.out" 2>/dev/null && break
  kill -0 "$sim_pid" 2>/dev/null || { cat "$work/sim.log"; exit 1; }
  sleep 0.05
done
cat "$work/sim.out"

echo "== reading every meter once (one of them is configured faulty)"
build/bin/intake-collector read --config "$site" || true

meter=$(build/bin/intake-sim ctl --socket "$IC_SIM_CONTROL" status | awk '/fault=none/ {print $1; exit}')
echo "== taking $meter offline"
build/bin/intake-sim ctl --socket "$IC_SIM_CONTROL" fault "$meter" offline
build/bin/intake-collector read --config "$site" --meter "$meter" || true

echo "== bringing $meter back"
build/bin/intake-sim ctl --socket "$IC_SIM_CONTROL" fault "$meter" none
build/bin/intake-collector read --config "$site" --meter "$meter"
echo "== done"
