/* rate: the online rate, completeness, availability, outages and water volume
 * of meters over a window, from their stored history. Pure: histories in,
 * figures out; the report module loads them from the database.
 *
 * Definitions (docs/online-rate.md states them for the bureau):
 * - expected readings: aligned poll slots (k * interval + phase) in the part
 *   of the window while the meter was configured, gateway downtime included;
 * - completeness: valid readings in the window / expected readings;
 * - online for the window: at least min_readings valid readings and a
 *   completeness of at least min_completeness;
 * - availability: time online / time configured within the window; a meter
 *   is online from an online state change to the next offline one, and never
 *   while the gateway is down (its state is unknown then);
 * - volume: the totalizer at the last valid reading at or before the window's
 *   end minus the same at or before its start, walked reading by reading so
 *   that a wrap at the meter's rollover, a reset (the counter drops, e.g. a
 *   replaced meter) and a jump beyond what the flow allows are detected and
 *   flagged: a wrap adds the distance to the rollover, a reset counts on from
 *   zero, a suspect jump is left out (and reported as excluded).
 */
#ifndef IC_RATE_H
#define IC_RATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  int64_t ts_ms;
  double total_m3; /* NAN when the reading carries no totalizer */
  double flow_m3h; /* NAN when it carries no flow */
} rate_reading;

typedef struct {
  int64_t ts_ms;
  bool online;
  char error[32]; /* failure kind that took it offline, "" otherwise */
} rate_change;

typedef struct {
  int64_t start_ms, end_ms; /* a span the gateway was running */
} rate_span;

typedef struct {
  int64_t interval_ms;
  int64_t phase_ms;
  int64_t configured_since_ms; /* when the meter entered the configuration */
  double rollover_m3;          /* where the totalizer wraps; 0 when unknown */
  const rate_reading *readings; /* valid readings, by time; may start before
                                   the window (the one at or before its start
                                   is needed for the volume) */
  size_t nreadings;
  const rate_change *changes;   /* state changes, by time */
  size_t nchanges;
} rate_meter_input;

typedef struct {
  int min_readings;        /* default 1 */
  double min_completeness; /* default 0 */
} rate_params;

#define RATE_OUTAGES_MAX 32

/* Volume flags. */
#define RATE_VOL_INCOMPLETE 0x01 /* no reading at one edge of the window */
#define RATE_VOL_ROLLOVER 0x02   /* the counter wrapped at its rollover */
#define RATE_VOL_RESET 0x04      /* the counter dropped: reset or replaced */
#define RATE_VOL_SUSPECT 0x08    /* a jump beyond the flow was left out */
#define RATE_VOL_UNKNOWN 0x10    /* no reading at all up to the window's end */

typedef struct {
  bool configured;       /* configured during some of the window */
  bool online;           /* by the window rule */
  long valid;            /* valid readings in the window */
  long expected;         /* aligned slots while configured */
  double completeness;   /* valid / expected (0 when nothing expected) */
  double availability;   /* time online / time configured */
  int64_t last_seen_ms;  /* last valid reading at or before the end; 0 none */
  double volume_m3;      /* NAN when unknown */
  double excluded_m3;    /* suspect jumps left out */
  unsigned volume_flags; /* RATE_VOL_* */
  /* For a meter not online in the window: its outage. */
  int64_t outage_since_ms; /* when it went (or was last known) offline */
  int64_t outage_ms;       /* up to the window's end */
  char last_error[32];     /* kind of the failure, or "never_seen" */
  /* Every outage inside the window while configured, by start: offline
   * stretches (with the failure kind that began them) and stretches with
   * the gateway down ("gateway_down"). At most RATE_OUTAGES_MAX are kept;
   * outages_dropped counts the rest. */
  size_t noutages;
  size_t outages_dropped;
  struct {
    int64_t start_ms, end_ms;
    char error[32];
  } outages[RATE_OUTAGES_MAX];
} rate_meter_result;

/* Figures for one meter over [start_ms, end_ms), the gateway running during
 * the NUP spans UP (sorted, disjoint). */
void rate_meter(const rate_meter_input *in, const rate_span *up, size_t nup,
                int64_t start_ms, int64_t end_ms, const rate_params *p,
                rate_meter_result *out);

/* --- Against the baseline ------------------------------------------------ */

/* RATE's difference from BASELINE in percentage points, to 0.01. */
double rate_delta_pp(double rate, double baseline);

/* RATE meets BASELINE: equal is enough, whatever the floating-point error
 * of the division that made RATE (2367 / 2500 meets 0.9468). */
bool rate_meets(double rate, double baseline);

/* Number of slots k * interval + phase in [from_ms, to_ms). */
long rate_slots(int64_t from_ms, int64_t to_ms, int64_t interval_ms,
                int64_t phase_ms);

/* --- Windows in the site's time zone ------------------------------------- */

typedef enum { RATE_HOUR = 0, RATE_DAY, RATE_MONTH, RATE_FIXED } rate_period_kind;

typedef struct {
  rate_period_kind kind;
  int64_t fixed_ms; /* RATE_FIXED: the duration */
  char name[32];    /* "hourly", "daily", "monthly", or the duration as written */
} rate_period;

/* Parse "hour"/"hourly", "day"/"daily", "month"/"monthly" or a duration such
 * as "15m". 0 or -1. */
int rate_period_parse(const char *s, rate_period *out);

/* The window of PERIOD containing T_MS, in the process's local time zone
 * (the daemon sets TZ to the site's). Fixed durations are aligned to local
 * midnight of 1970-01-01. */
void rate_window(const rate_period *period, int64_t t_ms, int64_t *start_ms,
                 int64_t *end_ms);

/* UTC offset of local time at T_MS, in seconds. */
long rate_utc_offset_s(int64_t t_ms);

/* Format T_MS as local RFC 3339 with the offset: 2026-11-28T08:00:00+08:00. */
void rate_format_local(int64_t t_ms, char *buf, size_t len);

#endif
