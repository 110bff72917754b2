#include "reports/rate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meter/quality.h"

static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

double rate_delta_pp(double rate, double baseline) {
  return round((rate - baseline) * 10000) / 100;
}

bool rate_meets(double rate, double baseline) { return rate + 1e-12 >= baseline; }

long rate_slots(int64_t from_ms, int64_t to_ms, int64_t interval_ms,
                int64_t phase_ms) {
  if (to_ms <= from_ms || interval_ms <= 0) return 0;
  /* Slots s with from <= s < to: k from ceil((from - phase) / iv) to
   * ceil((to - phase) / iv) - 1. */
  int64_t k0 = -floor_div(-(from_ms - phase_ms), interval_ms);
  int64_t k1 = -floor_div(-(to_ms - phase_ms), interval_ms);
  return (long)(k1 - k0);
}

/* Is the meter online at time T (by its changes), given that each gateway run
 * starts with the state unknown? Returns the length of time in [a, b) that it
 * was online, within one gateway run [a, b). */
static int64_t online_time_in_run(const rate_meter_input *in, int64_t run_start,
                                  int64_t a, int64_t b) {
  int64_t total = 0;
  bool online = false; /* unknown at the start of a run */
  int64_t since = run_start;
  for (size_t i = 0; i < in->nchanges && in->changes[i].ts_ms < b; i++) {
    const rate_change *c = &in->changes[i];
    if (c->ts_ms < run_start) continue;
    if (c->online == online) continue;
    if (online) {
      int64_t s = since > a ? since : a;
      int64_t e = c->ts_ms < b ? c->ts_ms : b;
      if (e > s) total += e - s;
    }
    online = c->online;
    since = c->ts_ms;
  }
  if (online) {
    int64_t s = since > a ? since : a;
    if (b > s) total += b - s;
  }
  return total;
}

static void add_outage(rate_meter_result *out, int64_t a, int64_t b,
                       const char *error) {
  if (b <= a) return;
  if (out->noutages == RATE_OUTAGES_MAX) {
    out->outages_dropped++;
    return;
  }
  out->outages[out->noutages].start_ms = a;
  out->outages[out->noutages].end_ms = b;
  snprintf(out->outages[out->noutages].error, sizeof out->outages[0].error, "%s",
           error[0] ? error : "offline");
  out->noutages++;
}

static int by_start(const void *x, const void *y) {
  const int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
  return a < b ? -1 : a > b;
}

/* Offline stretches within one gateway run, clipped to [a, b). */
static void run_outages(const rate_meter_input *in, int64_t run_start, int64_t a,
                        int64_t b, rate_meter_result *out) {
  bool off = false;
  int64_t since = 0;
  const char *err = "";
  for (size_t i = 0; i < in->nchanges && in->changes[i].ts_ms < b; i++) {
    const rate_change *c = &in->changes[i];
    if (c->ts_ms < run_start) continue;
    if (!c->online && !off) {
      off = true;
      since = c->ts_ms;
      err = c->error;
    } else if (c->online && off) {
      off = false;
      add_outage(out, since > a ? since : a, c->ts_ms, err);
    }
  }
  if (off) add_outage(out, since > a ? since : a, b, err);
}

/* Volume by walking consecutive readings from index I0 to I1 (inclusive). */
static double walk_volume(const rate_meter_input *in, size_t i0, size_t i1,
                          unsigned *flags, double *excluded) {
  double vol = 0;
  for (size_t i = i0 + 1; i <= i1; i++) {
    const rate_reading *p = &in->readings[i - 1], *r = &in->readings[i];
    if (isnan(p->total_m3) || isnan(r->total_m3)) continue;
    double d = r->total_m3 - p->total_m3;
    if (d < -1e-6) {
      double ro = in->rollover_m3;
      if (ro > 0 && p->total_m3 > ro * 0.9 && r->total_m3 < ro * 0.1) {
        vol += (ro - p->total_m3) + r->total_m3;
        *flags |= RATE_VOL_ROLLOVER;
      } else {
        /* Reset or replaced: the counter starts again from zero. */
        vol += r->total_m3;
        *flags |= RATE_VOL_RESET;
      }
      continue;
    }
    double hours = (double)(r->ts_ms - p->ts_ms) / 3600000.0;
    double fp = isnan(p->flow_m3h) ? 0 : fabs(p->flow_m3h);
    double fr = isnan(r->flow_m3h) ? 0 : fabs(r->flow_m3h);
    bool have_flow = !isnan(p->flow_m3h) || !isnan(r->flow_m3h);
    double allowed = (fp > fr ? fp : fr) * hours * QUALITY_JUMP_FACTOR +
                     QUALITY_JUMP_SLACK_M3;
    if (have_flow && d > allowed) {
      *excluded += d;
      *flags |= RATE_VOL_SUSPECT;
      continue;
    }
    vol += d;
  }
  return vol;
}

void rate_meter(const rate_meter_input *in, const rate_span *up, size_t nup,
                int64_t start_ms, int64_t end_ms, const rate_params *p,
                rate_meter_result *out) {
  memset(out, 0, sizeof *out);
  out->volume_m3 = NAN;
  int64_t from = in->configured_since_ms > start_ms ? in->configured_since_ms
                                                    : start_ms;
  out->configured = from < end_ms;
  if (!out->configured) {
    out->volume_flags = RATE_VOL_UNKNOWN;
    return;
  }

  /* Readings: valid ones in the window, and the edges for the volume. */
  long valid = 0;
  long before_start = -1, before_end = -1, first_in = -1;
  for (size_t i = 0; i < in->nreadings; i++) {
    int64_t t = in->readings[i].ts_ms;
    if (t <= start_ms) before_start = (long)i;
    if (t <= end_ms) before_end = (long)i;
    if (t >= start_ms && t < end_ms) {
      valid++;
      if (first_in < 0) first_in = (long)i;
    }
  }
  out->valid = valid;
  out->expected = rate_slots(from, end_ms, in->interval_ms, in->phase_ms);
  out->completeness = out->expected > 0 ? (double)valid / (double)out->expected : 0;
  if (out->completeness > 1) out->completeness = 1; /* a slot read twice */
  out->online = valid >= (p->min_readings > 0 ? p->min_readings : 1) &&
                out->completeness + 1e-12 >= p->min_completeness;
  if (before_end >= 0) out->last_seen_ms = in->readings[before_end].ts_ms;

  /* Availability: online time while the gateway ran, over configured time. */
  int64_t online_ms = 0;
  for (size_t i = 0; i < nup; i++) {
    int64_t a = up[i].start_ms > from ? up[i].start_ms : from;
    int64_t b = up[i].end_ms < end_ms ? up[i].end_ms : end_ms;
    if (b > a) online_ms += online_time_in_run(in, up[i].start_ms, a, b);
  }
  out->availability = (double)online_ms / (double)(end_ms - from);

  /* Outages: the gateway's downtime, and offline stretches while it ran. */
  int64_t cursor = from;
  for (size_t i = 0; i < nup && cursor < end_ms; i++) {
    if (up[i].end_ms <= cursor) continue;
    if (up[i].start_ms > cursor)
      add_outage(out, cursor, up[i].start_ms < end_ms ? up[i].start_ms : end_ms,
                 "gateway_down");
    if (up[i].end_ms > cursor) cursor = up[i].end_ms;
  }
  if (cursor < end_ms) add_outage(out, cursor, end_ms, "gateway_down");
  for (size_t i = 0; i < nup; i++) {
    int64_t a = up[i].start_ms > from ? up[i].start_ms : from;
    int64_t b = up[i].end_ms < end_ms ? up[i].end_ms : end_ms;
    if (b > a) run_outages(in, up[i].start_ms, a, b, out);
  }
  /* By start: the struct begins with start_ms. */
  qsort(out->outages, out->noutages, sizeof out->outages[0], by_start);

  /* Volume. */
  if (before_end < 0) {
    out->volume_flags |= RATE_VOL_UNKNOWN | RATE_VOL_INCOMPLETE;
  } else {
    long i0 = before_start;
    if (i0 < 0) {
      out->volume_flags |= RATE_VOL_INCOMPLETE;
      i0 = first_in >= 0 ? first_in : before_end;
    }
    if (in->readings[before_end].ts_ms < start_ms) {
      /* Nothing since before the window: the end edge is missing. */
      out->volume_flags |= RATE_VOL_INCOMPLETE;
    }
    out->volume_m3 = walk_volume(in, (size_t)i0, (size_t)before_end,
                                 &out->volume_flags, &out->excluded_m3);
  }

  /* The outage of a meter that was not online in the window. */
  if (!out->online) {
    /* Without a recorded offline change, the outage runs from the last
     * valid reading, or from when the meter was configured. */
    int64_t since = out->last_seen_ms ? out->last_seen_ms : from;
    const char *err = out->last_seen_ms ? "no_valid_reading" : "never_seen";
    for (size_t i = 0; i < in->nchanges && in->changes[i].ts_ms < end_ms; i++) {
      if (!in->changes[i].online) {
        since = in->changes[i].ts_ms;
        err = in->changes[i].error[0] ? in->changes[i].error : "no_valid_reading";
      } else {
        since = end_ms; /* came back: a later offline change restarts it */
        err = "no_valid_reading";
      }
    }
    if (since >= end_ms) since = out->last_seen_ms ? out->last_seen_ms : from;
    if (out->last_seen_ms == 0 && strcmp(err, "no_valid_reading") == 0) err = "never_seen";
    out->outage_since_ms = since;
    out->outage_ms = end_ms - since;
    snprintf(out->last_error, sizeof out->last_error, "%s", err);
  }
}

/* ------------------------------------------------------------------------ */

int rate_period_parse(const char *s, rate_period *out) {
  memset(out, 0, sizeof *out);
  if (!strcmp(s, "hour") || !strcmp(s, "hourly")) {
    out->kind = RATE_HOUR;
    snprintf(out->name, sizeof out->name, "hourly");
    return 0;
  }
  if (!strcmp(s, "day") || !strcmp(s, "daily")) {
    out->kind = RATE_DAY;
    snprintf(out->name, sizeof out->name, "daily");
    return 0;
  }
  if (!strcmp(s, "month") || !strcmp(s, "monthly")) {
    out->kind = RATE_MONTH;
    snprintf(out->name, sizeof out->name, "monthly");
    return 0;
  }
  /* A duration: whole numbers with units, largest first. */
  int64_t total = 0;
  const char *p = s;
  if (!*p) return -1;
  while (*p) {
    char *end;
    long long v = strtoll(p, &end, 10);
    if (end == p || v <= 0) return -1;
    int64_t unit;
    if (!strncmp(end, "ms", 2)) unit = 1, end += 2;
    else if (*end == 's') unit = 1000, end++;
    else if (*end == 'm') unit = 60000, end++;
    else if (*end == 'h') unit = 3600000, end++;
    else if (*end == 'd') unit = 86400000, end++;
    else return -1;
    if (v > INT64_MAX / unit || total > INT64_MAX - v * unit) return -1;
    total += v * unit;
    p = end;
  }
  if (total < 1000) return -1;
  out->kind = RATE_FIXED;
  out->fixed_ms = total;
  snprintf(out->name, sizeof out->name, "%s", s);
  return 0;
}

long rate_utc_offset_s(int64_t t_ms) {
  time_t t = (time_t)floor_div(t_ms, 1000);
  struct tm tm;
  localtime_r(&t, &tm);
  return tm.tm_gmtoff;
}

void rate_window(const rate_period *period, int64_t t_ms, int64_t *start_ms,
                 int64_t *end_ms) {
  if (period->kind == RATE_FIXED) {
    int64_t off = (int64_t)rate_utc_offset_s(t_ms) * 1000;
    int64_t local = t_ms + off;
    int64_t s = floor_div(local, period->fixed_ms) * period->fixed_ms;
    *start_ms = s - off;
    *end_ms = *start_ms + period->fixed_ms;
    return;
  }
  time_t t = (time_t)floor_div(t_ms, 1000);
  struct tm tm;
  localtime_r(&t, &tm);
  tm.tm_sec = 0;
  tm.tm_min = 0;
  if (period->kind != RATE_HOUR) tm.tm_hour = 0;
  if (period->kind == RATE_MONTH) tm.tm_mday = 1;
  tm.tm_isdst = -1;
  struct tm a = tm, b = tm;
  time_t s = mktime(&a);
  if (period->kind == RATE_HOUR) b.tm_hour += 1;
  else if (period->kind == RATE_DAY) b.tm_mday += 1;
  else b.tm_mon += 1;
  b.tm_isdst = -1;
  time_t e = mktime(&b);
  *start_ms = (int64_t)s * 1000;
  *end_ms = (int64_t)e * 1000;
}

void rate_format_local(int64_t t_ms, char *buf, size_t len) {
  time_t t = (time_t)floor_div(t_ms, 1000);
  struct tm tm;
  localtime_r(&t, &tm);
  long off = tm.tm_gmtoff;
  char sign = off < 0 ? '-' : '+';
  if (off < 0) off = -off;
  snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d%c%02ld:%02ld",
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
           tm.tm_sec, sign, off / 3600, (off % 3600) / 60);
}
