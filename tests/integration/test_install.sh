#!/usr/bin/env bash
# `cmake --install` of this build into a DESTDIR: the layout, the installed
# programs accepting the installed example site and finding the installed
# profiles (a moved copy of the tree finds its own, not the source tree's),
# the manuals rendering without warnings, every key of docs/configuration.md
# in intake-collector.yaml(5), and the systemd units (verify prints nothing,
# exposure at most 2.0). scripts/check-install.sh does the checking.
source "$(dirname "$0")/lib.sh"

rc=0
"$IC_SOURCE_DIR/scripts/check-install.sh" "$(dirname "$IC_BIN")" "$T/work" >"$T/check.out" 2>"$T/check.log" || rc=$?
cat "$T/check.out"
expect_eq "scripts/check-install.sh passes" 0 "$rc"
finish
