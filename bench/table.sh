#!/usr/bin/env bash
# Print the benchmark table from a results.json written by bench/run.sh, so
# an earlier run can be shown again: bench/table.sh RESULTS.json
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: bench/table.sh RESULTS.json" >&2; exit 2; }

jq -r '
  def f($d): if . == null then "-" else (. * pow(10; $d) | round / pow(10; $d) | tostring) end;
  def pc: if . == null then null else . * 100 end;
  def r: if . == null then "-" else "x" + f(2) end;
  def lat: "\(.p50 | f(1))/\(.p99 | f(1))/\(.max | f(0))";
  def share: "\(.readings_per_s | f(0))/\(.expected_per_s | f(0)) (\(.delivered_share * 100 | f(1))%)";
  def note:
    if .windows and .windows.stage != "live" then
      "RM \(.windows.receive_maximum)\(if .windows.link_delay_ms_each_way > 0 then " +\(.windows.link_delay_ms_each_way) ms each way" else "" end): \(.windows.messages_per_s | f(0)) msg/s (drain \(.outage.drain_per_s | f(0))); peer \(.windows.peer.msgs_per_s | f(0)) msg/s, RTT p50 \(.windows.peer.rtt_ms.p50 | f(2)) ms (bare \(.windows.peer_bare_rtt.rtt_ms.p50 | f(2))); of window/RTT \(.windows.share_of_window_rtt | pc | f(1))%, of window/bare RTT \(.windows.share_of_window_bare_rtt | pc | f(1))%, of peer \(.windows.share_of_peer | pc | f(1))%"
    elif .windows then "RM \(.windows.receive_maximum)"
    elif .outage then "drain \(.outage.drain_per_s | f(0)) msg/s (peak \(.outage.drain_peak_per_s)/s), backlog \(.outage.backlog), left \(.outage.backlog_left)"
    elif .serial then "\(.serial.polls_per_s | f(1)) polls/s = \(.serial.share_of_bound * 100 | f(1))% of bound \(.serial.bound_polls_per_s | f(1)); \(.serial.requests_per_poll | f(2)) req/poll (min \(.serial.planner_min_requests)); emulated line \(.serial.emulated_exchange_ms | f(2)) ms/exchange: \(.serial.share_of_emulated_bound * 100 | f(1))% of its bound"
    else "" end;
  "commit \(.commit)\(if .dirty then "+dirty" else "" end), \(.date), \(.machine.cpus) x \(.machine.cpu), collectd \(.collectd_version), \(.duration_s) s per phase",
  "",
  (["phase", "meters", "readings/s got/expected", "CPU us/reading", "peak RSS MB", "lateness ms p50/p99/max", "poll->sub ms p50/p99/max", "notes"] | @tsv),
  (.phases[] |
    if .failed and (.serial | not) and ((.windows.stage // "live") == "live") then
      [.name, .meters, share, "FAILED", (.peak_rss_kb / 1024 | f(1)), (.lateness_ms | lat), (.latency_ms | lat),
       "delivered \(.delivered_share * 100 | f(1))% < 99%\(if .windows then "; RM \(.windows.receive_maximum)" else "" end)"]
    else
      [.name, .meters, share, (.cpu_us_per_reading | f(1)), (.peak_rss_kb / 1024 | f(1)),
       (.lateness_ms | lat), (.latency_ms | lat), note]
    end | @tsv),
  (.phases[] | select(.system == "ours" and (.shape | test("^[0-9]+$"))) | . as $o
    | if .ratio_to_collectd != null then
        ["  \(.name) / collectd", "", "", (.ratio_to_collectd.cpu_per_reading | r), (.ratio_to_collectd.peak_rss | r),
         "p99 \(.ratio_to_collectd.lateness_p99 | r)", "p50 \(.ratio_to_collectd.latency_p50 | r) p99 \(.ratio_to_collectd.latency_p99 | r)", ""] | @tsv
      else empty end),
  "",
  "targets:",
  (.targets[] | "  [\(if .pass then "pass" else "FAIL" end)] \(.target): \(.value | f(2)) (limit \(.limit | f(2)))")
' "$1" | awk -F'\t' '
  # Align the tab-separated rows into columns.
  NF > 1 { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) }; nf[NR] = NF; next }
  { line[NR] = $0 }
  END {
    for (r = 1; r <= NR; r++) {
      if (r in line) { print line[r]; continue }
      s = ""
      for (i = 1; i <= nf[r]; i++) s = s sprintf(i < nf[r] ? "%-" w[i] "s  " : "%s", cell[r, i])
      print s
    }
  }'
