# Shared checks of an installed tree, for scripts/check-install.sh and
# scripts/check-package.sh (sourced). Each check prints "ok - ..." or
# "not ok - ..."; ck_finish exits non-zero when any failed.

CK_FAILS=0
CK_PASSES=0
CK_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

ck_ok() { CK_PASSES=$((CK_PASSES + 1)); echo "ok - $*"; }
ck_not_ok() { CK_FAILS=$((CK_FAILS + 1)); echo "not ok - $*"; }
ck() {
  local desc=$1
  shift
  if "$@"; then ck_ok "$desc"; else ck_not_ok "$desc"; fi
}
ck_finish() {
  echo "$CK_PASSES passed, $CK_FAILS failed"
  [ "$CK_FAILS" -eq 0 ]
}

# ck_manuals MANDIR: every page renders without a warning, both as man-db
# shows it and as lintian checks it.
ck_manuals() {
  local mandir=$1 page out
  for page in man8/intake-collector.8.gz man1/intake-sim.1.gz man5/intake-collector.yaml.5.gz; do
    if [ ! -f "$mandir/$page" ]; then
      ck_not_ok "manual $page is installed"
      continue
    fi
    out=$(MANWIDTH=80 man -l "$mandir/$page" 2>&1 >/dev/null)
    out+=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 \
      man --warnings -E UTF-8 -l -Tutf8 -Z "$mandir/$page" 2>&1 >/dev/null)
    if [ -z "$out" ]; then
      ck_ok "man -l $page renders without warnings"
    else
      ck_not_ok "man -l $page renders without warnings: $out"
    fi
  done
}

# ck_config_keys PAGE: every key of every table of docs/configuration.md is a
# tagged paragraph of intake-collector.yaml(5), in the section of its table.
ck_config_keys() {
  local page=$1 missing
  missing=$(MANWIDTH=80 man -l "$page" 2>/dev/null | col -b | perl -e '
    use strict; use warnings;
    my ($md) = @ARGV; my (%sec, $cur);
    # The rendered page: sections (column 0) and subsections (column 3).
    while (my $l = <STDIN>) {
      if ($l =~ /^(\S.*?)\s*$/ || $l =~ /^   (\S.*?)\s*$/) { $cur = lc $1; next; }
      push @{$sec{$cur}}, $l if defined $cur;
    }
    open(my $in, "<", $md) or die "$md: $!";
    my ($h, $keys, $n, @miss) = ("", 0, 0);
    while (my $l = <$in>) {
      if ($l =~ /^#{2,3} (.*)$/) { ($h = lc $1) =~ s/`//g; $keys = 0; next; }
      if ($l =~ /^\| key \|/) { $keys = 1; next; }
      if ($keys && $l =~ /^\|\s*`([^`]+)`\s*\|/) {
        my $k = $1; $n++;
        push @miss, "$k (in $h)"
          unless grep { /^ {7}\Q$k\E(\s|$)/ } @{$sec{$h} // []};
        next;
      }
      $keys = 0 unless $l =~ /^\|/;
    }
    die "no keys found in $md\n" if $n < 50;
    print join("\n", @miss);
  ' "$CK_SRC/docs/configuration.md") || { ck_not_ok "keys read from docs/configuration.md"; return; }
  if [ -z "$missing" ]; then
    ck_ok "every key of docs/configuration.md is in intake-collector.yaml(5)"
  else
    ck_not_ok "keys of docs/configuration.md missing from intake-collector.yaml(5): $(echo $missing)"
  fi
}

# ck_units UNITDIR BINDIR MANDIR WORK: systemd-analyze verify prints nothing
# and the exposure is at most 2.0. verify looks for the program and the
# manuals on this machine, so it reads a copy of each unit whose ExecStart
# names the program of the tree checked, with MANPATH at its manuals.
ck_units() {
  local unitdir=$1 bindir=$2 mandir=$3 work=$4 u out exposure
  mkdir -p "$work"
  for u in intake-collector.service intake-collector-fleet.service; do
    if [ ! -f "$unitdir/$u" ]; then
      ck_not_ok "unit $u is installed"
      continue
    fi
    sed -E "s|^ExecStart=[^ ]*/intake-collector|ExecStart=$bindir/intake-collector|" \
      "$unitdir/$u" >"$work/$u"
    out=$(cd "$work" && MANPATH=$mandir systemd-analyze verify "./$u" 2>&1)
    if [ -z "$out" ]; then
      ck_ok "systemd-analyze verify $u prints nothing"
    else
      ck_not_ok "systemd-analyze verify $u prints nothing: $out"
    fi
    exposure=$(cd "$work" && systemd-analyze security --offline=yes "./$u" 2>&1 |
      sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
    if [ -n "$exposure" ] && awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }'; then
      ck_ok "$u: exposure $exposure <= 2.0"
    else
      ck_not_ok "$u: exposure '$exposure' <= 2.0"
    fi
  done
}

# ck_programs BINDIR SITE FLEET WORK: the installed programs accept the
# installed examples, and find the built-in profiles of their own tree:
# in a copy of the tree whose profiles are renamed, a profile known only
# there is found and one of the source tree is not.
ck_programs() {
  local bindir=$1 site=$2 fleet=$3 work=$4 out rc prof
  out=$("$bindir/intake-collector" --check-config "$site" 2>&1) && rc=0 || rc=$?
  ck "installed intake-collector accepts the installed site file ($out)" [ "$rc" -eq 0 ]
  out=$("$bindir/intake-sim" --check-config "$site" 2>&1) && rc=0 || rc=$?
  ck "installed intake-sim accepts the installed site file ($out)" [ "$rc" -eq 0 ]
  out=$("$bindir/intake-collector" fleet --config "$fleet" --check-config 2>&1) && rc=0 || rc=$?
  ck "installed intake-collector accepts the example fleet file ($out)" [ "$rc" -eq 0 ]

  # The tree moved elsewhere, as a package or a copy puts it.
  rm -rf "$work/moved"
  mkdir -p "$work/moved"
  cp -a "$(dirname "$bindir")" "$work/moved/root"
  local moved=$work/moved/root
  prof=$moved/share/intake-collector/profiles
  if [ ! -f "$prof/tuf2000m.yaml" ]; then
    ck_not_ok "profiles installed in share/intake-collector/profiles"
    return
  fi
  mv "$prof/tuf2000m.yaml" "$prof/installed-probe.yaml"
  sed 's/profile: tuf2000m/profile: installed-probe/' "$site" >"$work/moved/probe.yaml"
  out=$("$moved/bin/intake-collector" --check-config "$work/moved/probe.yaml" 2>&1) && rc=0 || rc=$?
  ck "a moved installed tree finds its own profiles ($out)" [ "$rc" -eq 0 ]
  cp "$site" "$work/moved/site.yaml"
  out=$("$moved/bin/intake-collector" --check-config "$work/moved/site.yaml" 2>&1) && rc=0 || rc=$?
  ck "and not the source tree's ($out)" \
    grep -q "unknown profile 'tuf2000m' (built-in profiles: .*installed-probe" <<<"$out"
}
