#!/usr/bin/env bash
# `intake-collector report --format html` writes one self-contained page;
# headless Chromium renders it: the DOM has one chart point per window, the
# baseline line at 94.68 %, the repair rows and volume rows, and a
# screenshot has chart pixels (the rate line's colour) and nothing is
# fetched from the network.
source "$(dirname "$0")/lib.sh"

read -r MQTT_PORT TCP_PORT < <(free_ports 2)
cat >"$T/site.yaml" <<YAML
site: {id: html, name: "柯柯亚灌区渠首"}
mqtt: {url: "mqtt://127.0.0.1:$MQTT_PORT"}
storage: {path: ./readings.db}
reports: {periods: [5s]}
buses:
  - {id: plc, transport: tcp, host: 127.0.0.1, port: $TCP_PORT, timeout: 200ms}
meters:
  - {id: KKY-01, name: "1# 干渠", bus: plc, unit: 1, profile: mag-00h, interval: 1s,
     sim: {fixed: {flow_m3h: 360}}}
  - {id: KKY-02, name: "二塘沟分水闸", bus: plc, unit: 2, profile: mag-00h, interval: 1s,
     sim: {fault: offline}}
YAML
DB="$T/readings.db"

start_broker broker "$MQTT_PORT"
start sim "$IC_BIN/intake-sim" --config "$T/site.yaml"
wait_for "$T/sim.out" '^ready' 20 "$sim_PID"
start collector "$IC_BIN/intake-collector" --config "$T/site.yaml"
wait_for "$T/collector.out" '^ready' 20 "$collector_PID"
three() { [ "$(sql "$DB" 'SELECT count(*) FROM reports')" -ge 3 ]; }
wait_until 40 "three closed windows" three
stop_pid "$collector_PID"

# Exactly the windows of the stored reports.
first=$(sql "$DB" "SELECT min(start_ms) FROM reports")
last=$(sql "$DB" "SELECT max(end_ms) FROM reports")
nwin=$(sql "$DB" "SELECT count(*) FROM reports")
iso() { date -u -d "@$(($1 / 1000))" +%Y-%m-%dT%H:%M:%SZ; }
"$IC_BIN/intake-collector" report --config "$T/site.yaml" --from "$(iso "$first")" \
  --to "$(iso "$last")" --period 5s --format html --output "$T/report.html"
check "the page was written" test -s "$T/report.html"
if grep -Eq '(src|href)="https?:' "$T/report.html"; then
  not_ok "the page must not load anything from the network"
else
  ok "the page is self-contained"
fi

CHROME=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
        --disable-background-networking --disable-component-update --disable-sync)
"${CHROME[@]}" --user-data-dir="$T/chrome1" --dump-dom "file://$T/report.html" \
  >"$T/dom.html" 2>"$T/chrome.log"
expect_eq "one chart point per window" "$nwin" "$(grep -o 'class="rate-point"' "$T/dom.html" | wc -l)"
check "the baseline line is at 94.68 %" grep -q 'class="baseline" data-baseline="0.9468"' "$T/dom.html"
# The baseline's y must be 94.68 % of the way up the plot (plot 16..220).
y=$(grep -o 'class="baseline"[^>]*y1="[0-9.]*"' "$T/dom.html" | sed -E 's/.*y1="([0-9.]*)"/\1/')
expect_eq "the baseline is drawn at 94.68 % of the chart's height" 26.85 "$y"
check "the offline meter is on the repair list" grep -q 'class="repair-row" data-meter="KKY-02"' "$T/dom.html"
if grep -q 'class="repair-row" data-meter="KKY-01"' "$T/dom.html"; then
  not_ok "the answering meter must not be on the repair list"
else
  ok "the answering meter is not on the repair list"
fi
check "the rate of a window is 50 %" grep -q 'class="rate-point"[^>]*data-rate="0.500000"' "$T/dom.html"
check "each meter has a volume row" test "$(grep -o 'class="volume-row"' "$T/dom.html" | wc -l)" -eq 2
check "the Chinese labels are there" grep -q '取水口计量在线率报告' "$T/dom.html"

"${CHROME[@]}" --user-data-dir="$T/chrome2" --window-size=900,1000 \
  --screenshot="$T/shot.png" "file://$T/report.html" >>"$T/chrome.log" 2>&1
check "a screenshot was taken" test -s "$T/shot.png"
# The rate line and points are drawn in #1f77b4 (31 119 180).
px=$(pngtopnm "$T/shot.png" | ppmhist -noheader | awk '$1 == 31 && $2 == 119 && $3 == 180 {print $5}')
check "the screenshot has chart pixels (${px:-0} of the line's colour)" test "${px:-0}" -ge 300
finish
