#!/usr/bin/env bash
# Build the Debian package (scripts/package.sh) and check it: its contents
# and fields, the conffile, the maintainer scripts, lintian (no error; the
# warnings are printed), the packaged programs on the packaged site file,
# the manuals, the configuration keys of intake-collector.yaml(5) and the
# systemd units. Exits non-zero on any failure.
#
#   scripts/check-package.sh [--deb FILE | package.sh arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/check-lib.sh

work=$(mktemp -d /tmp/ic-check-package.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ "${1:-}" = "--deb" ]; then
  deb=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
else
  deb=$(scripts/package.sh "$@" 2>"$work/package.err" | tail -n 1) ||
    { cat "$work/package.err" >&2; echo "not ok - scripts/package.sh"; exit 1; }
fi
echo "# $deb"
ck "the package is built" test -f "$deb"

dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$work/contents"
for f in /usr/bin/intake-collector /usr/bin/intake-sim \
         /usr/share/intake-collector/profiles/tuf2000m.yaml \
         /usr/share/intake-collector/profiles/mag-00h.yaml \
         /usr/share/intake-collector/profiles/open-channel.yaml \
         /etc/intake-collector/site.yaml \
         /lib/systemd/system/intake-collector.service \
         /lib/systemd/system/intake-collector-fleet.service \
         /usr/share/man/man8/intake-collector.8.gz /usr/share/man/man1/intake-sim.1.gz \
         /usr/share/man/man5/intake-collector.yaml.5.gz \
         /usr/share/doc/intake-collector/copyright \
         /usr/share/doc/intake-collector/changelog.Debian.gz \
         /usr/share/doc/intake-collector/examples/site.yaml \
         /usr/share/doc/intake-collector/examples/fleet.yaml; do
  ck "dpkg-deb -c: $f" grep -qx "$f" "$work/contents"
done

mkdir -p "$work/control" "$work/root"
dpkg-deb -e "$deb" "$work/control"
dpkg-deb -x "$deb" "$work/root"
ck "conffile /etc/intake-collector/site.yaml" grep -qx /etc/intake-collector/site.yaml "$work/control/conffiles"
depends=$(dpkg-deb -f "$deb" Depends)
ck "Depends computed from the binaries ($depends)" \
  grep -Eq 'adduser.*libc6 \(>=.*libmodbus5.*libpaho-mqtt1\.3.*libsqlite3-0.*libuv1' <<<"$depends"
for s in postinst prerm postrm; do
  ck "maintainer script $s parses" sh -n "$work/control/$s"
done
ck "postinst makes the system user intake, in the group dialout" \
  grep -q 'adduser --quiet intake dialout' "$work/control/postinst"
ck "postinst enables a unit only when it was installed before (never on a first install)" \
  grep -q 'deb-systemd-helper debian-installed' "$work/control/postinst"
ck "prerm stops both services on remove" \
  grep -q 'deb-systemd-invoke stop intake-collector.service' "$work/control/prerm"
ck "postrm deletes /var/lib/intake-collector on purge only" \
  awk '/"\$1" = "purge"/ { p = 1 } p && /rm -rf \/var\/lib\/intake-collector/ { f = 1 } END { exit !f }' "$work/control/postrm"
ck "changelog.Debian.gz is a Debian changelog" \
  sh -c "gzip -dc '$work/root/usr/share/doc/intake-collector/changelog.Debian.gz' | dpkg-parsechangelog -l- -SVersion | grep -qx '$(dpkg-deb -f "$deb" Version)'"

# lintian: errors fail; warnings are listed.
lintian --no-tag-display-limit "$deb" >"$work/lintian" 2>"$work/lintian.err" || true
sed 's/^/# lintian: /' "$work/lintian"
ck "lintian reports no error" sh -c "! grep -q '^E: ' '$work/lintian'"

ck_programs "$work/root/usr/bin" "$work/root/etc/intake-collector/site.yaml" \
  "$work/root/usr/share/doc/intake-collector/examples/fleet.yaml" "$work/progs"
ck_manuals "$work/root/usr/share/man"
ck_config_keys "$work/root/usr/share/man/man5/intake-collector.yaml.5.gz"
ck_units "$work/root/lib/systemd/system" "$work/root/usr/bin" "$work/root/usr/share/man" "$work/units"
ck_finish
