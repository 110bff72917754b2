#!/usr/bin/env bash
# Check `cmake --install` of a build folder: the layout, the installed
# programs on the installed example (finding the installed profiles, not the
# source tree's), the manuals, the configuration keys of
# intake-collector.yaml(5) and the systemd units. Exits non-zero on any
# failure.
#
#   scripts/check-install.sh BUILD_DIR [WORK_DIR]
set -euo pipefail
build=$(cd "${1:?usage: check-install.sh BUILD_DIR [WORK_DIR]}" && pwd)
work=${2:-$(mktemp -d /tmp/ic-check-install.XXXXXX)}
mkdir -p "$work"
source "$(dirname "$0")/check-lib.sh"

dest=$work/dest
rm -rf "$dest"
DESTDIR=$dest cmake --install "$build" >"$work/install.log"
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$build/CMakeCache.txt")
root=$dest$prefix
echo "# installed into $dest (prefix $prefix)"

for f in bin/intake-collector bin/intake-sim \
         share/man/man8/intake-collector.8.gz share/man/man1/intake-sim.1.gz \
         share/man/man5/intake-collector.yaml.5.gz \
         share/doc/intake-collector/examples/site.yaml \
         share/doc/intake-collector/examples/fleet.yaml \
         share/doc/intake-collector/copyright \
         share/doc/intake-collector/changelog.Debian.gz; do
  ck "installed: $f" test -f "$root/$f"
done
for p in "$CK_SRC"/drivers/profiles/*.yaml; do
  ck "installed profile: $(basename "$p")" cmp -s "$p" "$root/share/intake-collector/profiles/$(basename "$p")"
done
site=$(find "$dest" -path '*/etc/intake-collector/site.yaml' | head -n 1)
ck "installed: etc/intake-collector/site.yaml" test -n "$site"
unitdir=$(dirname "$(find "$dest" -name intake-collector.service | head -n 1)")
ck "installed: the systemd units" test -f "$unitdir/intake-collector-fleet.service"
ck "the units run the installed program" \
  grep -qx "ExecStart=$prefix/bin/intake-collector --config .*/site.yaml" "$unitdir/intake-collector.service"

ck_programs "$root/bin" "$site" "$root/share/doc/intake-collector/examples/fleet.yaml" "$work"
ck_manuals "$root/share/man"
ck_config_keys "$root/share/man/man5/intake-collector.yaml.5.gz"
ck_units "$unitdir" "$root/bin" "$root/share/man" "$work/units"
ck_finish
