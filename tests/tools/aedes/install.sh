#!/usr/bin/env bash
# Install the aedes test broker into DEST_DIR (a build folder, never the
# source tree): copies broker.js, package.json and package-lock.json there
# and runs `npm ci` so that DEST_DIR/node_modules holds exactly the locked
# versions. The tests then run `node DEST_DIR/broker.js --port PORT`.
#
# Usage: tests/tools/aedes/install.sh DEST_DIR
#
# Running it again is cheap: when the lock file and package.json are the
# same as at the last successful install (their checksum is kept in
# DEST_DIR/.aedes-install.sha256) and node_modules is still there, npm is
# not run. Concurrent runs on the same DEST_DIR wait for each other.

set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 DEST_DIR" >&2
  exit 2
fi

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
DEST=$(realpath -m -- "$1")

# node_modules must stay out of the source tree.
case "$DEST/" in
  "$SRC/"*)
    echo "$0: DEST_DIR must not be inside $SRC" >&2
    exit 2
    ;;
esac

mkdir -p "$DEST"

command -v node >/dev/null || { echo "$0: node not found" >&2; exit 1; }
command -v npm >/dev/null || { echo "$0: npm not found" >&2; exit 1; }

exec 9>"$DEST/.aedes-install.lock"
flock 9

# Copy only what changed, so that an up-to-date install leaves the files
# (and their times) alone.
for f in broker.js package.json package-lock.json; do
  if ! cmp -s "$SRC/$f" "$DEST/$f"; then
    cp "$SRC/$f" "$DEST/$f.tmp"
    mv -f "$DEST/$f.tmp" "$DEST/$f"
  fi
done

stamp="$DEST/.aedes-install.sha256"
sum=$(cat "$SRC/package-lock.json" "$SRC/package.json" | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ] &&
   [ -f "$DEST/node_modules/aedes/package.json" ]; then
  echo "aedes test broker up to date in $DEST"
  exit 0
fi

rm -f "$stamp"
(cd "$DEST" && npm ci --omit=dev --no-audit --no-fund)
echo "$sum" >"$stamp"
echo "aedes test broker installed in $DEST"
