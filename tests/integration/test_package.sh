#!/usr/bin/env bash
# The Debian package, built from this source in a folder of the build
# (pkg/, kept between runs) and checked by scripts/check-package.sh: its
# contents, fields and conffile, the maintainer scripts, lintian without
# errors, the packaged programs and profiles, the manuals and the units.
source "$(dirname "$0")/lib.sh"

rc=0
"$IC_SOURCE_DIR/scripts/check-package.sh" --build-dir "$(dirname "$IC_BIN")/pkg" \
  >"$T/check.out" 2>"$T/check.log" || rc=$?
cat "$T/check.out"
expect_eq "scripts/check-package.sh passes" 0 "$rc"
finish
