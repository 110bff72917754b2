/* The uplink's pure parts (collector/uplink/uplink.c): a meter's values as
 * the centre gets them, a report built from them (both time-label lengths,
 * rounding and truncation, AA and alarm D5 for a meter without a fresh
 * reading), and the report slots aligned to local midnight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "proto/szy206.h"
#include "uplink/uplink.h"

static mb_profile *profile(size_t nfields) {
  mb_profile *p = calloc(1, sizeof *p);
  assert_non_null(p);
  p->fields = calloc(nfields, sizeof *p->fields);
  assert_non_null(p->fields);
  p->nfields = nfields;
  return p;
}

/* A configuration of two meters on one station, written by hand: the
 * report needs only the uplink section. */
static cfg *site(cfg_uplink_protocol proto) {
  cfg *c = calloc(1, sizeof *c);
  assert_non_null(c);
  c->nmeters = 2;
  c->uplink.enabled = true;
  c->uplink.protocol = proto;
  c->uplink.delay_minutes = 10;
  c->uplink.report_interval_ms = 300000;
  c->uplink.nstations = 1;
  c->uplink.stations = calloc(1, sizeof *c->uplink.stations);
  cfg_uplink_station *st = &c->uplink.stations[0];
  assert_int_equal(szy_addr_make(st->address, "530381", 13), SZY_OK);
  st->nmeters = 2;
  st->meters[0] = 1; /* the station's order, not the file's */
  st->meters[1] = 0;
  return c;
}

static void free_site(cfg *c) {
  free(c->uplink.stations);
  free(c);
}

/* 2026-12-09 08:45:00 in Asia/Shanghai. */
#define SLOT_MS 1796777100000LL

static void test_vector_one(void **state) {
  (void)state;
  setenv("TZ", "Asia/Shanghai", 1);
  tzset();
  cfg *c = site(CFG_UPLINK_SZY206);
  c->uplink.stations[0].nmeters = 1;
  c->uplink.stations[0].meters[0] = 0;
  uplink_values v[2] = {{SLOT_MS, true, true, 5.9, 106182.99, false}, {0, false, false, 0, 0, false}};
  uint8_t out[STORE_UPLINK_FRAME_MAX];
  int n = uplink_build_report(c, &c->uplink.stations[0], v, SLOT_MS - 300000, SLOT_MS,
                              SZY_C_REPORT, SZY_AFN_REPORT, out);
  /* The first checked vector but for its alarm and status words (0 here) and
   * so its CS. */
  const uint8_t want_head[] = {0x68, 0x1A, 0x68, 0xB3, 0x53, 0x03, 0x81, 0x0D, 0x00, 0xC0,
                               0x00, 0x59, 0x00, 0x00, 0x00, 0x82, 0x61, 0x10, 0x00, 0x00,
                               0x00, 0x00, 0x00, 0x00, 0x00, 0x45, 0x08, 0x09, 0x0A};
  assert_int_equal(n, 31);
  assert_memory_equal(out, want_head, sizeof want_head);
  assert_int_equal(szy_parse(out, (size_t)n, NULL), SZY_OK);
  free_site(c);
}

static void test_rounding_order_and_aa(void **state) {
  (void)state;
  setenv("TZ", "Asia/Shanghai", 1);
  tzset();
  cfg *c = site(CFG_UPLINK_SL427);
  /* Meter 1 first: 0.5005 m3/s rounds up, 8.999 m3 truncates down. Meter 0
   * has no reading since before the window: AA and D5. */
  uplink_values v[2] = {{SLOT_MS - 300001, true, true, 1.0, 1.0, false},
                        {SLOT_MS - 1000, true, true, 0.50051, 8.999, false}};
  uint8_t out[STORE_UPLINK_FRAME_MAX];
  int n = uplink_build_report(c, &c->uplink.stations[0], v, SLOT_MS - 300000, SLOT_MS,
                              SZY_C_REPORT, SZY_AFN_REPORT, out);
  assert_true(n > 0);
  szy_frame f;
  assert_int_equal(szy_parse(out, (size_t)n, &f), SZY_OK);
  szy_report r;
  assert_int_equal(szy_report_decode(f.data, f.data_len, -1, &r), SZY_OK);
  assert_int_equal(r.n, 2);
  assert_int_equal(r.tp_len, 7);
  int64_t flow;
  uint64_t vol;
  assert_int_equal(szy_flow_decode(r.flow[0], &flow), SZY_OK);
  assert_int_equal(flow, 501);
  assert_int_equal(szy_volume_decode(r.volume[0], &vol), SZY_OK);
  assert_int_equal(vol, 8);
  assert_int_equal(szy_flow_decode(r.flow[1], &flow), SZY_ENONE);
  assert_int_equal(szy_volume_decode(r.volume[1], &vol), SZY_ENONE);
  assert_int_equal(r.alarm, SZY_ALARM_METER_FAULT);
  assert_int_equal(r.status, 0);
  szy_tp want = {0, 45, 8, 9, 12, 26, 10};
  assert_memory_equal(&r.tp, &want, sizeof want);

  /* A negative flow keeps its sign; a negative volume, or one past the
   * field, is AA alone (no alarm: the meter answers). */
  v[0] = (uplink_values){SLOT_MS, true, true, -0.25, -3, false};
  v[1] = (uplink_values){SLOT_MS, true, true, 0, 800000000.0, false};
  n = uplink_build_report(c, &c->uplink.stations[0], v, SLOT_MS - 300000, SLOT_MS,
                          SZY_C_REPORT, SZY_AFN_QUERY, out);
  assert_int_equal(szy_parse(out, (size_t)n, &f), SZY_OK);
  assert_int_equal(f.afn, SZY_AFN_QUERY);
  assert_int_equal(szy_report_decode(f.data, f.data_len, 7, &r), SZY_OK);
  assert_int_equal(szy_flow_decode(r.flow[1], &flow), SZY_OK);
  assert_int_equal(flow, -250);
  assert_int_equal(szy_volume_decode(r.volume[1], &vol), SZY_ENONE);
  assert_int_equal(szy_volume_decode(r.volume[0], &vol), SZY_ENONE);
  assert_int_equal(r.alarm, 0);

  /* A meter reporting a fault of its own: its values, and alarm D5. */
  v[0] = (uplink_values){SLOT_MS, true, true, 1.5, 42, true};
  v[1] = (uplink_values){SLOT_MS, true, true, 0, 0, false};
  n = uplink_build_report(c, &c->uplink.stations[0], v, SLOT_MS - 300000, SLOT_MS,
                          SZY_C_REPORT, SZY_AFN_REPORT, out);
  assert_int_equal(szy_parse(out, (size_t)n, &f), SZY_OK);
  assert_int_equal(szy_report_decode(f.data, f.data_len, 7, &r), SZY_OK);
  assert_int_equal(szy_flow_decode(r.flow[1], &flow), SZY_OK);
  assert_int_equal(flow, 1500);
  assert_int_equal(szy_volume_decode(r.volume[1], &vol), SZY_OK);
  assert_int_equal(vol, 42);
  assert_int_equal(r.alarm, SZY_ALARM_METER_FAULT);
  free_site(c);
}

/* A meter polled every minute, reports every 5 minutes... and every 10 s:
 * the window is the longer of the two intervals. */
static void test_window_follows_slow_meters(void **state) {
  (void)state;
  setenv("TZ", "Asia/Shanghai", 1);
  tzset();
  cfg *c = site(CFG_UPLINK_SZY206);
  cfg_meter meters[2];
  memset(meters, 0, sizeof meters);
  meters[0].interval_ms = 60000;
  meters[1].interval_ms = 1000;
  c->meters = meters;
  c->uplink.report_interval_ms = 10000;
  /* Both read 30 s before the slot: meter 0 (every minute) is fresh, meter 1
   * (every second) has missed its polls. */
  uplink_values v[2] = {{SLOT_MS - 30000, true, true, 1.0, 1.0, false},
                        {SLOT_MS - 30000, true, true, 2.0, 2.0, false}};
  uint8_t out[STORE_UPLINK_FRAME_MAX];
  int n = uplink_build_report(c, &c->uplink.stations[0], v, SLOT_MS - 10000, SLOT_MS,
                              SZY_C_REPORT, SZY_AFN_REPORT, out);
  szy_frame f;
  szy_report r;
  assert_int_equal(szy_parse(out, (size_t)n, &f), SZY_OK);
  assert_int_equal(szy_report_decode(f.data, f.data_len, 5, &r), SZY_OK);
  int64_t flow;
  assert_int_equal(szy_flow_decode(r.flow[0], &flow), SZY_ENONE); /* meter 1 */
  assert_int_equal(szy_flow_decode(r.flow[1], &flow), SZY_OK);    /* meter 0 */
  assert_int_equal(flow, 1000);
  assert_int_equal(r.alarm, SZY_ALARM_METER_FAULT);
  /* 61 s old: the minute meter has missed its poll too. */
  v[0].ts_ms = SLOT_MS - 61000;
  n = uplink_build_report(c, &c->uplink.stations[0], v, SLOT_MS - 10000, SLOT_MS,
                          SZY_C_REPORT, SZY_AFN_REPORT, out);
  assert_int_equal(szy_parse(out, (size_t)n, &f), SZY_OK);
  assert_int_equal(szy_report_decode(f.data, f.data_len, 5, &r), SZY_OK);
  assert_int_equal(szy_flow_decode(r.flow[1], &flow), SZY_ENONE);
  c->meters = NULL;
  free_site(c);
}

static void test_values_from_profile(void **state) {
  (void)state;
  mb_profile *p = profile(3);
  snprintf(p->fields[0].unit, sizeof p->fields[0].unit, "m3/h");
  p->fields[0].role = PROF_ROLE_FLOW;
  snprintf(p->fields[1].unit, sizeof p->fields[1].unit, "m/s");
  p->fields[1].role = PROF_ROLE_VELOCITY;
  snprintf(p->fields[2].unit, sizeof p->fields[2].unit, "m3");
  p->fields[2].role = PROF_ROLE_TOTAL;
  const double vals[] = {21240, 1.5, 8.25};
  uplink_values v;
  uplink_values_from(p, vals, 42, &v);
  assert_int_equal(v.ts_ms, 42);
  assert_true(v.has_flow && v.has_total);
  assert_false(v.fault);
  /* A status field (the meter's alarm bits) not 0 is a fault. */
  p->fields[1].role = PROF_ROLE_STATUS;
  uplink_values_from(p, vals, 42, &v);
  assert_true(v.fault);
  const double healthy[] = {21240, 0, 8.25};
  uplink_values_from(p, healthy, 42, &v);
  assert_false(v.fault);
  p->fields[1].role = PROF_ROLE_VELOCITY;
  assert_true(v.flow_m3s > 5.8999 && v.flow_m3s < 5.9001);
  assert_true(v.total_m3 == 8.25);
  snprintf(p->fields[0].unit, sizeof p->fields[0].unit, "l/s");
  uplink_values_from(p, vals, 42, &v);
  assert_true(v.flow_m3s > 21.2399 && v.flow_m3s < 21.2401);
  /* Every flow and volume unit a profile may declare: m3/min, litres. */
  snprintf(p->fields[0].unit, sizeof p->fields[0].unit, "m3/min");
  snprintf(p->fields[2].unit, sizeof p->fields[2].unit, "L");
  uplink_values_from(p, vals, 42, &v);
  assert_true(v.has_flow && v.has_total);
  assert_true(v.flow_m3s > 353.9999 && v.flow_m3s < 354.0001);
  assert_true(v.total_m3 > 0.008249 && v.total_m3 < 0.008251);
  /* A unit it cannot convert is no value, not a wrong one. */
  snprintf(p->fields[0].unit, sizeof p->fields[0].unit, "gpm");
  snprintf(p->fields[2].unit, sizeof p->fields[2].unit, "gal");
  uplink_values_from(p, vals, 42, &v);
  assert_false(v.has_flow);
  assert_false(v.has_total);
  free(p->fields);
  free(p);
}

static void test_slots_local_midnight(void **state) {
  (void)state;
  setenv("TZ", "Asia/Shanghai", 1);
  tzset();
  /* 7 minutes fit a day 205 times and a bit: slots count from local
   * midnight, not from the epoch. Local midnight of 2026-12-09 is
   * 2026-12-08T16:00:00Z, 5 minutes past a 7-minute step of the epoch. */
  int64_t seven = 7 * 60000;
  int64_t midnight = 1796745600000LL;
  assert_int_equal(midnight % seven, 300000);
  assert_int_equal(uplink_next_slot(midnight - 1, seven), midnight);
  assert_int_equal(uplink_next_slot(midnight, seven), midnight + seven);
  assert_int_equal(uplink_next_slot(midnight + 3 * seven + 5, seven), midnight + 4 * seven);
  assert_int_equal(uplink_next_slot(SLOT_MS - 1, 300000), SLOT_MS);
  /* The day's last 7-minute slot is 23:55; the next is midnight. */
  int64_t day = 86400000;
  assert_int_equal(uplink_next_slot(midnight + day - 300001, seven), midnight + day - 300000);
  assert_int_equal(uplink_next_slot(midnight + day - 300000, seven), midnight + day);
  assert_int_equal(uplink_next_slot(midnight - 1, day), midnight);
  setenv("TZ", "UTC", 1);
  tzset();
  /* 15:59:59.999 UTC: the next 7-minute step of the UTC day is 16:06. */
  int64_t utc_day = midnight + 8 * 3600000 - day;
  assert_int_equal(uplink_next_slot(midnight - 1, seven), utc_day + 966 * 60000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_vector_one),
      cmocka_unit_test(test_rounding_order_and_aa),
      cmocka_unit_test(test_window_follows_slow_meters),
      cmocka_unit_test(test_values_from_profile),
      cmocka_unit_test(test_slots_local_midnight),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
