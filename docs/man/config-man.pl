#!/usr/bin/perl
# Write intake-collector.yaml(5) from docs/configuration.md on stdout, so the
# manual and the reference cannot drift apart.
#   perl docs/man/config-man.pl docs/configuration.md VERSION > intake-collector.yaml.5
#
# What it understands is what configuration.md uses: headings (## becomes a
# section, ### a subsection), paragraphs, "- " lists, ``` blocks and tables.
# A table row becomes a tagged paragraph: its first cell the tag, the other
# cells "column: value" (the last one, the meaning, as it is).
use strict;
use warnings;
use utf8;
use open qw(:std :encoding(UTF-8));

my ($md, $version) = @ARGV;
die "usage: $0 configuration.md VERSION\n" unless defined $version;
open(my $in, '<', $md) or die "$md: $!\n";
my @lines = <$in>;
close $in;
chomp @lines;

# Characters groff's UTF-8 and ASCII devices know by name.
my %glyph = ('≤' => '\(<=', '≥' => '\(>=', '→' => '\(->', '×' => '\(mu',
             '…' => '...', '–' => '\(en', '—' => '\(em', '·' => '\(pc',
             '“' => '\(lq', '”' => '\(rq', '’' => '\(cq', '‘' => '\(oq');

# Plain text to roff: backslashes, then characters by name, any other
# non-ASCII character as \[uXXXX].
sub esc {
    my ($s) = @_;
    $s =~ s/\\/\\e/g;
    $s =~ s/([^\x00-\x7f])/exists $glyph{$1} ? $glyph{$1} : sprintf('\\[u%04X]', ord $1)/ge;
    return $s;
}

# Markdown inline markup to roff: `code` bold with real minus signs,
# **strong** bold, [text](link) its text.
sub inline {
    my ($s) = @_;
    my @out;
    while (length $s) {
        if ($s =~ s/^`([^`]*)`//) {
            my $c = esc($1);
            $c =~ s/-/\\-/g;
            push @out, "\\fB$c\\fR";
        } elsif ($s =~ s/^\*\*([^*]+)\*\*//) {
            push @out, '\fB' . esc($1) . '\fR';
        } elsif ($s =~ s/^\[([^\]]+)\]\([^)]*\)//) {
            push @out, inline($1);
        } elsif ($s =~ s/^([^`*\[]+|.)//s) {
            push @out, esc($1);
        }
    }
    return join '', @out;
}

# A line of roff text must not start with a control character.
sub textline {
    my ($s) = @_;
    $s =~ s/^\s+//;
    $s = "\\&$s" if $s =~ /^[.']/;
    return "$s\n";
}

sub cells {
    my ($row) = @_;
    $row =~ s/^\s*\|//;
    $row =~ s/\|\s*$//;
    # A | inside `code` is not a cell boundary.
    my @c;
    my $cur = '';
    my $code = 0;
    for my $ch (split //, $row) {
        $code = !$code if $ch eq '`';
        if ($ch eq '|' && !$code) { push @c, $cur; $cur = ''; next; }
        $cur .= $ch;
    }
    push @c, $cur;
    s/^\s+|\s+$//g for @c;
    return @c;
}

my $out = '';
$out .= ".\\\" Generated from docs/configuration.md by docs/man/config-man.pl: edit those.\n";
$out .= ".TH INTAKE-COLLECTOR.YAML 5 \"\" \"intake-collector $version\" \"File Formats\"\n";
$out .= ".SH NAME\nintake-collector.yaml \\- site configuration of intake-collector and intake-sim\n";
$out .= ".SH SYNOPSIS\n.B /etc/intake-collector/site.yaml\n";
$out .= ".PP\n.B intake-collector \\-\\-check-config\n.I FILE\n";
$out .= ".SH DESCRIPTION\n";

my $i = 0;
# Skip the document's title.
$i++ while $i < @lines && $lines[$i] !~ /^# /;
$i++;
my $para = 0;
while ($i < @lines) {
    my $l = $lines[$i];
    if ($l =~ /^(#{2,3}) (.*)$/) {
        my ($level, $title) = (length $1, $2);
        $title =~ s/`//g;
        if ($level == 2) {
            $out .= '.SH ' . inline(uc $title) . "\n";
        } else {
            $out .= '.SS "' . inline($title) . "\"\n";
        }
        $para = 0;
        $i++;
    } elsif ($l =~ /^```/) {
        $out .= ".PP\n.RS 4\n.EX\n";
        $i++;
        while ($i < @lines && $lines[$i] !~ /^```/) {
            my $c = esc($lines[$i]);
            $c = "\\&$c" if $c =~ /^[.']/;
            $out .= "$c\n";
            $i++;
        }
        $out .= ".EE\n.RE\n";
        $i++;
        $para = 0;
    } elsif ($l =~ /^\|/) {
        my @head = cells($l);
        $i += 2;    # the header and its |---| line
        while ($i < @lines && $lines[$i] =~ /^\|/) {
            my @c = cells($lines[$i]);
            $out .= ".TP\n" . textline(inline($c[0]));
            my @rest;
            for my $k (1 .. $#c) {
                next if $c[$k] eq '';
                if ($k == $#c && $head[$k] =~ /^(meaning|notes|what)$/) {
                    push @rest, inline($c[$k]);
                } else {
                    push @rest, inline("$head[$k]: $c[$k]");
                }
            }
            $out .= textline(join('; ', @rest) . (@rest ? '.' : ''))
                if @rest;
            $out =~ s/\.\.\n$/.\n/;
            $i++;
        }
        $para = 0;
    } elsif ($l =~ /^- (.*)$/) {
        my $item = $1;
        $i++;
        while ($i < @lines && $lines[$i] =~ /^  \S/) {
            $item .= ' ' . ($lines[$i] =~ s/^\s+//r);
            $i++;
        }
        $out .= ".IP \\(bu 2\n" . textline(inline($item));
        $para = 0;
    } elsif ($l =~ /^\s*$/) {
        $para = 0;
        $i++;
    } else {
        my $text = $l;
        $i++;
        while ($i < @lines && $lines[$i] !~ /^\s*$/ && $lines[$i] !~ /^(#|```|\||- )/) {
            $text .= ' ' . $lines[$i];
            $i++;
        }
        $out .= ".PP\n" . textline(inline($text));
    }
}

$out .= <<'ROFF';
.SH FILES
.TP
.I /etc/intake-collector/site.yaml
the gateway's site, read by the intake-collector service
.TP
.I /etc/intake-collector/fleet.yaml
the register of the fleet view (intake-collector-fleet service)
.TP
.I /usr/share/intake-collector/profiles/
the built-in meter profiles
.TP
.I /usr/share/doc/intake-collector/examples/
example site and fleet files
.SH SEE ALSO
.BR intake-collector (8),
.BR intake-sim (1)
ROFF
print $out;
