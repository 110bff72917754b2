#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfg.h"
#include "cli/cli.h"
#include "base/clock.h"
#include "reports/rate.h"
#include "reports/report.h"
#include "reports/report_html.h"

/* Windows one report command builds, at most. */
#define REPORT_WINDOWS_MAX 100000

static void report_usage(FILE *f) {
  fprintf(f,
          "usage: intake-collector report --config FILE --from DATE --to DATE\n"
          "                               [--period day|hour|month|DURATION]\n"
          "                               [--format json|csv|html] [--output FILE]\n"
          "\n"
          "Reads the site's database (read-only; the daemon may be running) and\n"
          "writes one online-rate report per window from the window holding\n"
          "--from up to --to (exclusive). Dates are the site's local time:\n"
          "2026-11-28, 2026-11-28T08:00, or RFC 3339 with an offset or Z.\n");
}

/* Is TM (as strptime filled it) a day of the calendar? strptime takes any
 * day 1-31 in any month and mktime would carry 2026-02-30 into March. */
static bool real_day(const struct tm *tm) {
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int y = tm->tm_year + 1900, m = tm->tm_mon;
  if (m < 0 || m > 11 || tm->tm_mday < 1) return false;
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return tm->tm_mday <= days[m] + (m == 1 && leap);
}

/* Parse a date in the site's local time (TZ is set to it): 0, -1 when it is
 * not in a form we read, -2 when it names no day of the calendar. */
static int parse_date(const char *s, int64_t *out) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (!end) {
    memset(&tm, 0, sizeof tm);
    end = strptime(s, "%Y-%m-%dT%H:%M", &tm);
  }
  if (!end) {
    memset(&tm, 0, sizeof tm);
    end = strptime(s, "%Y-%m-%d", &tm);
  }
  if (!end) return -1;
  if (!real_day(&tm)) return -2;
  if (*end == '\0') {
    tm.tm_isdst = -1;
    time_t t = mktime(&tm);
    if (t == (time_t)-1) return -1;
    *out = (int64_t)t * 1000;
    return 0;
  }
  /* An explicit offset: Z or +HH:MM / -HH:MM. */
  long off;
  if (strcmp(end, "Z") == 0) {
    off = 0;
  } else {
    int hh, mm;
    char sign;
    if (sscanf(end, "%c%2d:%2d", &sign, &hh, &mm) != 3 || (sign != '+' && sign != '-') ||
        strlen(end) != 6)
      return -1;
    off = (hh * 3600L + mm * 60L) * (sign == '-' ? -1 : 1);
  }
  time_t t = timegm(&tm);
  *out = ((int64_t)t - off) * 1000;
  return 0;
}

int cli_report(int argc, char **argv) {
  const char *config = NULL, *from = NULL, *to = NULL, *period_s = "day",
             *format = "json", *output = NULL, *profile_dir = NULL;
  static const struct option longopts[] = {
      {"config", required_argument, 0, 'c'},
      {"from", required_argument, 0, 'f'},
      {"to", required_argument, 0, 't'},
      {"period", required_argument, 0, 'p'},
      {"format", required_argument, 0, 'F'},
      {"output", required_argument, 0, 'o'},
      {"profile-dir", required_argument, 0, 'P'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "c:o:h", longopts, NULL)) != -1) {
    switch (ch) {
      case 'c': config = optarg; break;
      case 'f': from = optarg; break;
      case 't': to = optarg; break;
      case 'p': period_s = optarg; break;
      case 'F': format = optarg; break;
      case 'o': output = optarg; break;
      case 'P': profile_dir = optarg; break;
      case 'h': report_usage(stdout); return 0;
      default: report_usage(stderr); return 2;
    }
  }
  if (!config || !from || !to || optind != argc) {
    report_usage(stderr);
    return 2;
  }
  if (strcmp(format, "json") != 0 && strcmp(format, "csv") != 0 &&
      strcmp(format, "html") != 0) {
    fprintf(stderr, "report: unknown format \"%s\" (expected json, csv or html)\n", format);
    return 2;
  }
  rate_period period;
  if (rate_period_parse(period_s, &period) != 0) {
    fprintf(stderr,
            "report: unknown period \"%s\" (expected day, hour, month or a "
            "duration such as 15m)\n", period_s);
    return 2;
  }
  char err[CFG_ERR_MAX];
  cfg *c = NULL;
  if (cfg_load(config, profile_dir, &c, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  /* Windows and dates follow the site's time zone. */
  setenv("TZ", c->site.timezone, 1);
  tzset();
  int64_t from_ms, to_ms;
  int frc = parse_date(from, &from_ms), trc = frc == 0 ? parse_date(to, &to_ms) : 0;
  if (frc == -2 || trc == -2) {
    fprintf(stderr, "report: %s %s is not a date of the calendar\n",
            frc == -2 ? "--from" : "--to", frc == -2 ? from : to);
    cfg_free(c);
    return 2;
  }
  if (frc != 0 || trc != 0) {
    fprintf(stderr, "report: dates look like 2026-11-28, 2026-11-28T08:00 or "
                    "2026-11-28T08:00:00+08:00 (got \"%s\" and \"%s\")\n", from, to);
    cfg_free(c);
    return 2;
  }
  if (to_ms <= from_ms) {
    fprintf(stderr, "report: --to must be after --from\n");
    cfg_free(c);
    return 2;
  }
  /* Count the windows before building any: a range of a century in hours
   * is refused at once, not after minutes and gigabytes. */
  {
    int64_t ws, we;
    size_t n = 0;
    rate_window(&period, from_ms, &ws, &we);
    while (ws < to_ms && ws < clock_wall_ms() && n <= REPORT_WINDOWS_MAX) {
      n++;
      rate_window(&period, we, &ws, &we);
    }
    if (n > REPORT_WINDOWS_MAX) {
      fprintf(stderr, "report: more than %d %s windows from %s to %s; choose a longer "
                      "period or a shorter range\n",
              REPORT_WINDOWS_MAX, period_s, from, to);
      cfg_free(c);
      return 2;
    }
  }
  sqlite3 *db = report_open_db(c->storage.path, err, sizeof err);
  if (!db) {
    fprintf(stderr, "report: %s\n", err);
    cfg_free(c);
    return 1;
  }
  FILE *out = stdout;
  if (output && !(out = fopen(output, "w"))) {
    fprintf(stderr, "report: cannot write %s: %m\n", output);
    sqlite3_close(db);
    cfg_free(c);
    return 1;
  }
  int rc = 0;
  int64_t now = clock_wall_ms();
  int64_t ws, we;
  rate_window(&period, from_ms, &ws, &we);
  cJSON *all = cJSON_CreateArray();
  if (strcmp(format, "csv") == 0) report_csv_header(out);
  /* Windows that have not begun are not reported; the one holding now is,
   * measured up to now and marked partial. */
  while (ws < to_ms && ws < now) {
    cJSON *rep = report_build(c, db, &period, ws, we, now, 0, err, sizeof err);
    if (!rep) {
      fprintf(stderr, "report: %s\n", err);
      rc = 1;
      break;
    }
    if (strcmp(format, "csv") == 0) {
      report_csv_rows(out, rep);
      cJSON_Delete(rep);
    } else {
      cJSON_AddItemToArray(all, rep);
    }
    int64_t ns, ne;
    rate_window(&period, we, &ns, &ne);
    ws = ns;
    we = ne;
  }
  if (rc == 0 && strcmp(format, "html") == 0) report_html(out, all);
  if (rc == 0 && strcmp(format, "json") == 0) {
    char *s = cJSON_Print(all);
    if (s) {
      fputs(s, out);
      fputc('\n', out);
    }
    free(s);
  }
  cJSON_Delete(all);
  if (out != stdout && fclose(out) != 0) rc = 1;
  sqlite3_close(db);
  cfg_free(c);
  return rc;
}
