#!/usr/bin/env bash
# `intake-collector report` refuses what it cannot do before doing any work:
# a range of more windows than it builds (1970 to 2100 in hours) is refused
# at once, and a date that is not of the calendar is called that, not taken
# for a range the wrong way round.
source "$(dirname "$0")/lib.sh"

cat >"$T/site.yaml" <<YAML
site: {id: reportargs}
mqtt: {url: "mqtt://127.0.0.1:1883"}
storage: {path: ./readings.db}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: 1502}
meters:
  - {id: M1, bus: plc, unit: 1, profile: mag-00h}
YAML

# A database as the daemon leaves it (no broker, no meter answering).
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
stop_pid "$collector_PID"
expect_eq "the daemon made its database and stopped" 0 "$STOP_RC"

rc=0
# The guard is far above what a refusal takes: building the windows took
# 18 s and 474 MB.
timeout 15 "$IC_BIN/intake-collector" report --config "$T/site.yaml" --from 1970-01-01 \
  --to 2100-01-01 --period hour >"$T/huge.out" 2>"$T/huge.err" || rc=$?
expect_eq "130 years of hourly windows are refused (exit 2)" 2 "$rc"
check "saying how many windows it builds at most" \
  grep -q "more than 100000 hour windows from 1970-01-01 to 2100-01-01" "$T/huge.err"

rc=0
"$IC_BIN/intake-collector" report --config "$T/site.yaml" --from 2026-02-30 --to 2026-03-02 \
  >"$T/feb.out" 2>"$T/feb.err" || rc=$?
expect_eq "2026-02-30 is refused (exit 2)" 2 "$rc"
check "as no date of the calendar" grep -q -- "--from 2026-02-30 is not a date of the calendar" "$T/feb.err"
rc=0
"$IC_BIN/intake-collector" report --config "$T/site.yaml" --from 2024-02-28 --to 2024-02-31 \
  >"$T/feb2.out" 2>"$T/feb2.err" || rc=$?
check "--to 2024-02-31 too" grep -q -- "--to 2024-02-31 is not a date of the calendar" "$T/feb2.err"
# Today's hourly report: the windows up to now, the last one in progress
# and measured up to now; no window of the hours to come, and no outage
# that runs past now.
today=$(TZ=Asia/Shanghai date +%F)
tomorrow=$(TZ=Asia/Shanghai date -d tomorrow +%F)
hour=$(TZ=Asia/Shanghai date +%H)
rc=0
"$IC_BIN/intake-collector" report --config "$T/site.yaml" --from "$today" --to "$tomorrow" \
  --period hour --format json >"$T/today.json" 2>"$T/today.err" || rc=$?
expect_eq "today's hourly report is written" 0 "$rc"
expect_eq "one window per hour begun today ($((10#$hour + 1)))" "$((10#$hour + 1))" \
  "$(jq 'length' "$T/today.json")"
check "the last window is marked partial, measured to now" \
  jq -e 'last | .window.partial == true and (.window.measured_to | length) > 0' "$T/today.json"
check "the windows before it are whole" \
  jq -e '.[:-1] | all(.window.partial != true)' "$T/today.json"
# Times share the site's offset, so they compare as text.
late=$(jq '[.[] | .window as $w | .meters[]?.outages[]?
            | select(.end > ($w.measured_to // $w.end))] | length' "$T/today.json")
expect_eq "no outage runs past the time measured to" 0 "$late"
"$IC_BIN/intake-collector" report --config "$T/site.yaml" --from "$today" --to "$tomorrow" \
  --period hour --format csv >"$T/today.csv"
expect_eq "the CSV has a site row and a meter row per window begun" "$((2 * (10#$hour + 1) + 1))" \
  "$(wc -l <"$T/today.csv")"
finish
