#!/usr/bin/env bash
# The layout's rules (docs/architecture.md) hold in the source: drivers/
# names no header of config/ or collector/, config/ none of collector/,
# intake-sim none of collector/ outside base/; no function of the gateway
# (collector/gateway/) is longer than 80 lines.
source "$(dirname "$0")/lib.sh"
S=$IC_SOURCE_DIR

# quoted_includes DIR: "file: header" for every #include "..." below DIR.
quoted_includes() {
  grep -rHo '^#include "[^"]*"' "$S/$1" --include='*.c' --include='*.h' |
    sed -E "s|^$S/||; s|:#include \"(.*)\"$|: \1|"
}

bad=$(quoted_includes drivers | grep -vE ': (proto|profile|transport)/' || true)
expect_eq "drivers/ includes only its own rooms' headers" "" "$bad"

bad=$(quoted_includes config |
  grep -vE ': ((proto|profile|transport)/|(cfg|ydoc|fleet|profile_load|uplink)\.h$)' || true)
expect_eq "config/ includes only its own and drivers/ headers" "" "$bad"

collector_rooms=$(cd "$S/collector" && ls -d */ | tr -d / | grep -vx base | paste -sd'|')
bad=$(quoted_includes firmware-sim | grep -E ": ($collector_rooms)/" || true)
expect_eq "intake-sim includes no collector/ header outside base/" "" "$bad"

# A function starts at a line in column 0 that opens a body (its signature
# may span lines) and ends at the "}" in column 0.
long=$(awk '
  /^[A-Za-z_].*\(/ && !/;[ \t]*$/ { start = FNR; name = $0 }
  /^}/ && start { n = FNR - start + 1; if (n > 80) printf "%s:%d %d lines: %s\n", FILENAME, start, n, name; start = 0 }
' "$S"/collector/gateway/*.c)
expect_eq "no function of collector/gateway/ is over 80 lines" "" "$long"
n=$(ls "$S"/collector/gateway/*.c | wc -l)
check "the check read the gateway's $n files" test "$n" -ge 5

finish
