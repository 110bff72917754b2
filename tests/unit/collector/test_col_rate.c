/* Online rate, completeness, availability, outages, volumes and windows on
 * hand-built histories. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "reports/rate.h"

#define MIN 60000LL
#define HOUR 3600000LL
#define DAY 86400000LL
/* 2026-11-29T00:00:00+08:00 (local midnight in Asia/Shanghai), which is
 * 2026-11-28T16:00:00Z. */
#define D0 1795881600000LL

static int set_tz(void **state) {
  (void)state;
  setenv("TZ", "Asia/Shanghai", 1);
  tzset();
  return 0;
}

static const rate_params P = {.min_readings = 1, .min_completeness = 0};
static const rate_span ALWAYS[] = {{0, INT64_MAX / 2}};

static rate_reading R(int64_t t, double total, double flow) {
  return (rate_reading){t, total, flow};
}

static void test_windows_in_utc_plus_8(void **state) {
  (void)state;
  rate_period day, hour, month, five;
  assert_int_equal(rate_period_parse("day", &day), 0);
  assert_int_equal(rate_period_parse("hourly", &hour), 0);
  assert_int_equal(rate_period_parse("month", &month), 0);
  assert_int_equal(rate_period_parse("5m", &five), 0);
  assert_int_equal(rate_period_parse("soon", &five) , -1);
  assert_int_equal(rate_period_parse("5m", &five), 0);
  int64_t s, e;
  /* 2026-11-29T10:30+08:00: the local day runs from 16:00Z the day before. */
  rate_window(&day, D0 + 10 * HOUR + 30 * MIN, &s, &e);
  assert_int_equal(s, D0);
  assert_int_equal(e, D0 + DAY);
  /* 23:59:59 local is still the same day; 00:00 local starts the next. */
  rate_window(&day, D0 + DAY - 1000, &s, &e);
  assert_int_equal(s, D0);
  rate_window(&day, D0 + DAY, &s, &e);
  assert_int_equal(s, D0 + DAY);
  rate_window(&hour, D0 + 10 * HOUR + 30 * MIN, &s, &e);
  assert_int_equal(s, D0 + 10 * HOUR);
  assert_int_equal(e, D0 + 11 * HOUR);
  rate_window(&month, D0 + 10 * HOUR, &s, &e);
  /* November 2026 local: from 2026-11-01T00:00+08:00 to 2026-12-01. */
  assert_int_equal(s, D0 - 28 * DAY);
  assert_int_equal(e, D0 + 2 * DAY);
  rate_window(&five, D0 + 7 * MIN + 5, &s, &e);
  assert_int_equal(s, D0 + 5 * MIN);
  assert_int_equal(e, D0 + 10 * MIN);
  char buf[40];
  rate_format_local(D0, buf, sizeof buf);
  assert_string_equal(buf, "2026-11-29T00:00:00+08:00");
  assert_int_equal(rate_utc_offset_s(D0), 8 * 3600);
}

static void test_slots(void **state) {
  (void)state;
  assert_int_equal(rate_slots(0, HOUR, MIN, 0), 60);
  assert_int_equal(rate_slots(0, HOUR, MIN, 100), 60);
  assert_int_equal(rate_slots(1, HOUR, MIN, 0), 59);
  assert_int_equal(rate_slots(D0, D0 + DAY, 5 * MIN, 0), 288);
  assert_int_equal(rate_slots(10, 10, MIN, 0), 0);
}

static void test_never_seen(void **state) {
  (void)state;
  rate_meter_input in = {.interval_ms = MIN, .configured_since_ms = D0 - DAY};
  rate_meter_result r;
  rate_meter(&in, ALWAYS, 1, D0, D0 + DAY, &P, &r);
  assert_true(r.configured);
  assert_false(r.online);
  assert_int_equal(r.valid, 0);
  assert_int_equal(r.expected, 1440);
  assert_true(r.completeness == 0);
  assert_true(r.availability == 0);
  assert_true(isnan(r.volume_m3));
  assert_true(r.volume_flags & RATE_VOL_UNKNOWN);
  assert_string_equal(r.last_error, "never_seen");
  assert_int_equal(r.outage_since_ms, D0);
  assert_int_equal(r.outage_ms, DAY);
}

static void test_full_day_online_with_volume(void **state) {
  (void)state;
  /* One reading an hour at 10 m3/h: 24 of 24 slots, 240 m3. */
  rate_reading rs[26];
  size_t n = 0;
  for (int h = -1; h <= 24; h++) rs[n++] = R(D0 + h * HOUR, 1000 + 10.0 * (h + 1), 10);
  rate_change ch[] = {{D0 - HOUR, true, ""}};
  rate_meter_input in = {.interval_ms = HOUR, .configured_since_ms = 0,
                         .readings = rs, .nreadings = n, .changes = ch, .nchanges = 1};
  rate_meter_result r;
  rate_meter(&in, ALWAYS, 1, D0, D0 + DAY, &P, &r);
  assert_true(r.online);
  assert_int_equal(r.valid, 24);
  assert_int_equal(r.expected, 24);
  assert_true(fabs(r.completeness - 1.0) < 1e-12);
  assert_true(fabs(r.availability - 1.0) < 1e-12);
  assert_true(fabs(r.volume_m3 - 240.0) < 1e-9);
  assert_int_equal(r.volume_flags, 0);
  assert_int_equal(r.last_seen_ms, D0 + DAY);
}

static void test_offline_across_midnight(void **state) {
  (void)state;
  /* Offline from 22:00 on the first day to 02:00 on the second. */
  rate_change ch[] = {{D0 - DAY, true, ""}, {D0 - 2 * HOUR, false, "timeout"},
                      {D0 + 2 * HOUR, true, ""}};
  rate_reading rs[] = {R(D0 - 2 * HOUR - MIN, 50, 1), R(D0 + 2 * HOUR, 52, 1),
                       R(D0 + 3 * HOUR, 53, 1)};
  rate_meter_input in = {.interval_ms = HOUR, .readings = rs, .nreadings = 3,
                         .changes = ch, .nchanges = 3};
  rate_meter_result first, second;
  /* The first day's last hours, with the offline stretch in them. */
  rate_meter(&in, ALWAYS, 1, D0 - 4 * HOUR, D0, &P, &first);
  assert_true(first.online); /* it read at 21:59 */
  assert_true(fabs(first.availability - 0.5) < 1e-12);
  /* The first two hours of the next day: offline all through. */
  rate_meter(&in, ALWAYS, 1, D0, D0 + 2 * HOUR, &P, &second);
  assert_false(second.online);
  assert_true(second.availability == 0);
  assert_string_equal(second.last_error, "timeout");
  assert_int_equal(second.outage_since_ms, D0 - 2 * HOUR); /* began before midnight */
  assert_int_equal(second.outage_ms, 4 * HOUR);
  /* Its outage inside the window: from midnight to 02:00, a timeout. */
  assert_int_equal(second.noutages, 1);
  assert_int_equal(second.outages[0].start_ms, D0);
  assert_int_equal(second.outages[0].end_ms, D0 + 2 * HOUR);
  assert_string_equal(second.outages[0].error, "timeout");
  /* The whole second day: online again (two readings), availability 22/24. */
  rate_meter_result day;
  rate_meter(&in, ALWAYS, 1, D0, D0 + DAY, &P, &day);
  assert_true(day.online);
  assert_true(fabs(day.availability - 22.0 / 24.0) < 1e-12);
}

static void test_gateway_down_part_of_window(void **state) {
  (void)state;
  /* Gateway up 00:00-06:00 and 12:00-24:00; the meter reads every hour while
   * up and is online each run from its first reading. */
  rate_span up[] = {{D0 - HOUR, D0 + 6 * HOUR}, {D0 + 12 * HOUR, D0 + DAY}};
  rate_reading rs[24];
  size_t n = 0;
  rate_change ch[2] = {{D0 - HOUR, true, ""}, {D0 + 12 * HOUR, true, ""}};
  for (int h = 0; h < 24; h++)
    if (h < 6 || h >= 12) rs[n++] = R(D0 + h * HOUR, h, 1);
  rate_meter_input in = {.interval_ms = HOUR, .readings = rs, .nreadings = n,
                         .changes = ch, .nchanges = 2};
  rate_meter_result r;
  rate_meter(&in, up, 2, D0, D0 + DAY, &P, &r);
  /* Downtime counts as expected slots without readings. */
  assert_int_equal(r.expected, 24);
  assert_int_equal(r.valid, 18);
  assert_true(fabs(r.completeness - 0.75) < 1e-12);
  assert_true(fabs(r.availability - 0.75) < 1e-12);
  assert_true(r.online);
  /* The gateway's downtime is the meter's outage. */
  assert_int_equal(r.noutages, 1);
  assert_int_equal(r.outages[0].start_ms, D0 + 6 * HOUR);
  assert_int_equal(r.outages[0].end_ms, D0 + 12 * HOUR);
  assert_string_equal(r.outages[0].error, "gateway_down");
  /* With a 90 % completeness threshold the window does not count. */
  rate_params strict = {.min_readings = 1, .min_completeness = 0.9};
  rate_meter(&in, up, 2, D0, D0 + DAY, &strict, &r);
  assert_false(r.online);
  /* min_readings too. */
  rate_params many = {.min_readings = 19, .min_completeness = 0};
  rate_meter(&in, up, 2, D0, D0 + DAY, &many, &r);
  assert_false(r.online);
}

static void test_rollover(void **state) {
  (void)state;
  rate_reading rs[] = {R(D0, 99999990, 36), R(D0 + 10 * MIN, 99999996, 36),
                       R(D0 + 20 * MIN, 2, 36), R(D0 + HOUR, 26, 36)};
  rate_meter_input in = {.interval_ms = 10 * MIN, .rollover_m3 = 100000000,
                         .readings = rs, .nreadings = 4};
  rate_meter_result r;
  rate_meter(&in, ALWAYS, 1, D0, D0 + HOUR, &P, &r);
  assert_true(fabs(r.volume_m3 - 36.0) < 1e-6);
  assert_true(r.volume_flags & RATE_VOL_ROLLOVER);
  assert_false(r.volume_flags & RATE_VOL_RESET);
}

static void test_reset(void **state) {
  (void)state;
  /* Replaced meter: 5000 -> 3 (it counted 3 m3 since it was put in). */
  rate_reading rs[] = {R(D0, 4990, 60), R(D0 + 10 * MIN, 5000, 60),
                       R(D0 + 20 * MIN, 3, 60), R(D0 + 30 * MIN, 13, 60)};
  rate_meter_input in = {.interval_ms = 10 * MIN, .readings = rs, .nreadings = 4};
  rate_meter_result r;
  rate_meter(&in, ALWAYS, 1, D0, D0 + HOUR, &P, &r);
  assert_true(fabs(r.volume_m3 - 23.0) < 1e-9); /* 10 + 3 + 10 */
  assert_true(r.volume_flags & RATE_VOL_RESET);
}

static void test_suspect_jump(void **state) {
  (void)state;
  /* 60 m3/h allows about 2 x 10 m3 + 1 m3 in 10 minutes; 5000 m3 is a glitch. */
  rate_reading rs[] = {R(D0, 100, 60), R(D0 + 10 * MIN, 110, 60),
                       R(D0 + 20 * MIN, 5110, 60), R(D0 + 30 * MIN, 5120, 60)};
  rate_meter_input in = {.interval_ms = 10 * MIN, .readings = rs, .nreadings = 4};
  rate_meter_result r;
  rate_meter(&in, ALWAYS, 1, D0, D0 + HOUR, &P, &r);
  assert_true(fabs(r.volume_m3 - 20.0) < 1e-9);
  assert_true(fabs(r.excluded_m3 - 5000.0) < 1e-9);
  assert_true(r.volume_flags & RATE_VOL_SUSPECT);
}

static void test_no_reading_at_one_edge(void **state) {
  (void)state;
  /* Nothing at or before the start: measured from the first reading in the
   * window, flagged incomplete. */
  rate_reading rs[] = {R(D0 + 10 * MIN, 500, 6), R(D0 + 50 * MIN, 504, 6)};
  rate_meter_input in = {.interval_ms = 10 * MIN, .readings = rs, .nreadings = 2};
  rate_meter_result r;
  rate_meter(&in, ALWAYS, 1, D0, D0 + HOUR, &P, &r);
  assert_true(fabs(r.volume_m3 - 4.0) < 1e-9);
  assert_true(r.volume_flags & RATE_VOL_INCOMPLETE);
  /* Nothing in the window at all since a reading before it: the end edge. */
  rate_reading old[] = {R(D0 - 10 * MIN, 500, 6)};
  rate_meter_input in2 = {.interval_ms = 10 * MIN, .readings = old, .nreadings = 1};
  rate_meter(&in2, ALWAYS, 1, D0, D0 + HOUR, &P, &r);
  assert_true(r.volume_flags & RATE_VOL_INCOMPLETE);
  assert_true(fabs(r.volume_m3) < 1e-12);
  assert_false(r.online);
  assert_string_equal(r.last_error, "no_valid_reading");
  assert_int_equal(r.outage_since_ms, D0 - 10 * MIN);
}

static void test_configured_mid_window(void **state) {
  (void)state;
  rate_meter_input in = {.interval_ms = HOUR, .configured_since_ms = D0 + 12 * HOUR};
  rate_meter_result r;
  rate_meter(&in, ALWAYS, 1, D0, D0 + DAY, &P, &r);
  assert_int_equal(r.expected, 12);
  rate_meter(&in, ALWAYS, 1, D0 - DAY, D0, &P, &r);
  assert_false(r.configured);
}

/* Against the baseline: the difference in points to 0.01, and "meets" for
 * a rate equal to it but for the floating-point error of a division. */
static void test_against_baseline(void **state) {
  (void)state;
  assert_true(rate_delta_pp(0.95, 0.9468) > 0.319 && rate_delta_pp(0.95, 0.9468) < 0.321);
  assert_true(rate_delta_pp(0.9, 0.9468) < -4.679 && rate_delta_pp(0.9, 0.9468) > -4.681);
  assert_true(rate_delta_pp(0.9468, 0.9468) == 0);
  assert_true(rate_meets(0.9468, 0.9468));
  assert_true(rate_meets(2367.0 / 2500.0, 0.9468)); /* 0.9468 but for rounding */
  assert_true(rate_meets(0.99, 0.9468));
  assert_false(rate_meets(0.94679, 0.9468));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_against_baseline),
      cmocka_unit_test(test_windows_in_utc_plus_8),
      cmocka_unit_test(test_slots),
      cmocka_unit_test(test_never_seen),
      cmocka_unit_test(test_full_day_online_with_volume),
      cmocka_unit_test(test_offline_across_midnight),
      cmocka_unit_test(test_gateway_down_part_of_window),
      cmocka_unit_test(test_rollover),
      cmocka_unit_test(test_reset),
      cmocka_unit_test(test_suspect_jump),
      cmocka_unit_test(test_no_reading_at_one_edge),
      cmocka_unit_test(test_configured_mid_window),
  };
  return cmocka_run_group_tests(tests, set_tz, NULL);
}
