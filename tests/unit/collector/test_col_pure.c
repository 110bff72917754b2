/* The daemon's pure parts: slot arithmetic, the online rule, quality checks
 * and the text forms of a reading; and reading a secret file. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/backoff.h"
#include "base/clock.h"
#include "meter/mstate.h"
#include "profile/profile.h"
#include "profile_load.h"
#include "meter/quality.h"
#include "meter/reading.h"
#include "base/secret.h"
#include "transport/transport.h"

static void test_slots(void **state) {
  (void)state;
  /* A 1-minute meter is read at :00 of every minute. */
  int64_t t = 1795885152002; /* 2026-11-28T16:59:12.002Z */
  assert_int_equal(clock_slot_at(t, 60000, 0), 1795885140000);
  assert_int_equal(clock_next_slot(t, 60000, 0), 1795885200000);
  /* Exactly on a slot: the next one is a whole interval later. */
  assert_int_equal(clock_next_slot(1795885200000, 60000, 0), 1795885260000);
  assert_int_equal(clock_slot_at(1795885200000, 60000, 0), 1795885200000);
  /* With a phase. */
  assert_int_equal(clock_next_slot(1795885200050, 1000, 100), 1795885200100);
  assert_int_equal(clock_next_slot(1795885200100, 1000, 100), 1795885201100);
  assert_int_equal(clock_slot_at(1795885200050, 1000, 100), 1795885199100);
  /* Before the epoch (a gateway with a reset clock) still floors. */
  assert_int_equal(clock_slot_at(-1, 1000, 0), -1000);
  assert_int_equal(clock_next_slot(-1000, 1000, 0), 0);
}

static void test_rfc3339(void **state) {
  (void)state;
  char buf[CLOCK_RFC3339_LEN + 8];
  assert_string_equal(clock_format_rfc3339(1795885152002, buf, sizeof buf),
                      "2026-11-28T16:59:12.002Z");
  assert_string_equal(clock_format_rfc3339(0, buf, sizeof buf),
                      "1970-01-01T00:00:00.000Z");
  assert_string_equal(clock_format_rfc3339(-1, buf, sizeof buf),
                      "1969-12-31T23:59:59.999Z");
  /* Past January 2038 (a 64-bit time_t, on 32-bit targets too). */
  assert_string_equal(clock_format_rfc3339(2147483648000, buf, sizeof buf),
                      "2038-01-19T03:14:08.000Z");
  assert_string_equal(clock_format_rfc3339(2214129600500, buf, sizeof buf),
                      "2040-02-29T12:00:00.500Z");
}

static void test_clock_offset(void **state) {
  (void)state;
  int64_t a = clock_wall_ms();
  clock_set_offset_ms(3600000);
  int64_t b = clock_wall_ms();
  clock_set_offset_ms(0);
  assert_true(b - a >= 3600000 && b - a < 3600000 + 1000);
}

static void test_offline_at_third_failure(void **state) {
  (void)state;
  mstate s;
  mstate_init(&s, 0);
  assert_int_equal(s.state, MSTATE_UNKNOWN);
  assert_int_equal(mstate_success(&s, 1000), MSTATE_WENT_ONLINE);
  assert_int_equal(mstate_success(&s, 2000), MSTATE_NO_CHANGE);
  assert_int_equal(mstate_failure(&s, 3000, TR_ETIMEOUT, "t", 3), MSTATE_NO_CHANGE);
  assert_int_equal(mstate_failure(&s, 4000, TR_ECRC, "c", 3), MSTATE_NO_CHANGE);
  assert_int_equal(mstate_failure(&s, 5000, TR_ETIMEOUT, "no answer", 3),
                   MSTATE_WENT_OFFLINE);
  assert_int_equal(s.state, MSTATE_OFFLINE);
  assert_int_equal(s.since_ms, 5000);
  assert_int_equal(s.last_error, TR_ETIMEOUT);
  assert_string_equal(s.last_error_detail, "no answer");
  assert_int_equal(s.last_valid_ms, 2000);
  /* Further failures change nothing but the back-off. */
  assert_int_equal(mstate_failure(&s, 6000, TR_ETIMEOUT, "x", 3), MSTATE_NO_CHANGE);
  /* Online again at the next valid reading. */
  assert_int_equal(mstate_success(&s, 9000), MSTATE_WENT_ONLINE);
  assert_int_equal(s.since_ms, 9000);
  assert_int_equal(s.consecutive_failures, 0);
}

static void test_success_resets_the_count(void **state) {
  (void)state;
  mstate s;
  mstate_init(&s, 0);
  mstate_success(&s, 1);
  mstate_failure(&s, 2, TR_ETIMEOUT, "", 3);
  mstate_failure(&s, 3, TR_ETIMEOUT, "", 3);
  mstate_success(&s, 4);
  mstate_failure(&s, 5, TR_ETIMEOUT, "", 3);
  assert_int_equal(mstate_failure(&s, 6, TR_ETIMEOUT, "", 3), MSTATE_NO_CHANGE);
  assert_int_equal(s.state, MSTATE_ONLINE);
  /* offline_after 1: the first failure does it. */
  mstate t;
  mstate_init(&t, 0);
  assert_int_equal(mstate_failure(&t, 1, TR_ECRC, "", 1), MSTATE_WENT_OFFLINE);
}

static void test_stuck_bus_goes_offline(void **state) {
  (void)state;
  mstate s;
  mstate_init(&s, 0);
  mstate_success(&s, 1000);
  /* No poll could run (slots skipped): offline once 3 intervals passed
   * without a valid reading, plus the grace of one bus timeout in which the
   * poll of the third slot may still answer; not before. */
  assert_int_equal(mstate_tick(&s, 4000, 1000, 3, 300), MSTATE_NO_CHANGE);
  assert_int_equal(mstate_tick(&s, 4300, 1000, 3, 300), MSTATE_NO_CHANGE);
  assert_int_equal(mstate_tick(&s, 4301, 1000, 3, 300), MSTATE_WENT_OFFLINE);
  assert_int_equal(mstate_tick(&s, 5000, 1000, 3, 300), MSTATE_NO_CHANGE);
}

static void test_backoff(void **state) {
  (void)state;
  mstate s;
  mstate_init(&s, 0);
  assert_int_equal(mstate_retry_ms(&s, 1000, 60000), 1000);
  for (int i = 0; i < 3; i++) mstate_failure(&s, i, TR_ETIMEOUT, "", 3);
  assert_int_equal(s.state, MSTATE_OFFLINE);
  assert_int_equal(mstate_retry_ms(&s, 1000, 60000), 1000);
  mstate_failure(&s, 10, TR_ETIMEOUT, "", 3);
  assert_int_equal(mstate_retry_ms(&s, 1000, 60000), 2000);
  mstate_failure(&s, 11, TR_ETIMEOUT, "", 3);
  assert_int_equal(mstate_retry_ms(&s, 1000, 60000), 4000);
  for (int i = 0; i < 40; i++) mstate_failure(&s, 12 + i, TR_ETIMEOUT, "", 3);
  assert_int_equal(mstate_retry_ms(&s, 1000, 60000), 60000);
  /* A cap below the interval never polls faster than the interval. */
  assert_int_equal(mstate_retry_ms(&s, 1000, 500), 1000);
  mstate_success(&s, 100);
  assert_int_equal(mstate_retry_ms(&s, 1000, 60000), 1000);
}

static mb_profile *tuf;

static int setup(void **state) {
  (void)state;
  char err[256];
  tuf = profile_load("tuf2000m", NULL, NULL, err, sizeof err);
  return tuf ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  profile_free(tuf);
  return 0;
}

static void set(double *v, const char *name, double x) {
  int i = profile_field_index(tuf, name);
  assert_true(i >= 0);
  v[i] = x;
}

static void test_quality(void **state) {
  (void)state;
  double v[32] = {0};
  quality_prev prev = {0};
  char why[200];
  set(v, "flow_m3h", 3600);
  set(v, "total_m3", 1000);
  assert_int_equal(quality_assess(tuf, v, 0, &prev, why, sizeof why), QUALITY_GOOD);
  /* 10 s at 3600 m3/h: 10 m3 is normal. */
  set(v, "total_m3", 1010);
  assert_int_equal(quality_assess(tuf, v, 10000, &prev, why, sizeof why), QUALITY_GOOD);
  /* Backwards. */
  set(v, "total_m3", 1005);
  assert_int_equal(quality_assess(tuf, v, 20000, &prev, why, sizeof why), QUALITY_SUSPECT);
  assert_non_null(strstr(why, "backwards"));
  /* A jump far beyond what the flow allows in 10 s. */
  set(v, "total_m3", 5000);
  assert_int_equal(quality_assess(tuf, v, 30000, &prev, why, sizeof why), QUALITY_SUSPECT);
  assert_non_null(strstr(why, "jumped"));
  /* And from the new value on, normal again. */
  set(v, "total_m3", 5010);
  assert_int_equal(quality_assess(tuf, v, 40000, &prev, why, sizeof why), QUALITY_GOOD);
}

static void test_quality_range_and_rollover(void **state) {
  (void)state;
  mb_profile *p = NULL;
  char err[256];
  const char *y =
      "name: t\n"
      "fields:\n"
      "  - {name: flow_m3h, role: flow, unit: m3/h, address: 0, type: f32, min: 0, max: 500}\n"
      "  - {name: total_m3, role: total, unit: m3, address: 2, type: u32, rollover: 100000}\n";
  p = profile_load_string("t.yaml", y, strlen(y), err, sizeof err);
  assert_non_null(p);
  double v[2] = {100, 99990};
  quality_prev prev = {0};
  char why[200];
  assert_int_equal(quality_assess(p, v, 0, &prev, why, sizeof why), QUALITY_GOOD);
  /* Wrapping at the rollover is counting, not a fault. */
  v[1] = 5;
  assert_int_equal(quality_assess(p, v, 600000, &prev, why, sizeof why), QUALITY_GOOD);
  v[0] = 900;
  v[1] = 6;
  assert_int_equal(quality_assess(p, v, 601000, &prev, why, sizeof why), QUALITY_SUSPECT);
  assert_non_null(strstr(why, "outside"));
  profile_free(p);
}

/* Secrets are read whole up to SECRET_MAX bytes (longer is an error, never
 * a cut), from regular files only: a directory, a FIFO with no writer and a
 * device are refused at once. */
static void test_secret_file(void **state) {
  (void)state;
  char dir[] = "/tmp/ic-secret-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[64], buf[SECRET_MAX + 1], err[160];
  bool exposed;
  snprintf(path, sizeof path, "%s/pw", dir);
  FILE *f = fopen(path, "w");
  for (int i = 0; i < 3000; i++) fputc('a' + i % 26, f);
  fputs("\nsecond line\n", f);
  fclose(f);
  assert_int_equal(secret_read_file(path, buf, sizeof buf, &exposed, err, sizeof err), 0);
  assert_int_equal(strlen(buf), 3000);
  assert_int_equal(buf[2999], 'a' + 2999 % 26);
  f = fopen(path, "w");
  for (int i = 0; i < SECRET_MAX + 1; i++) fputc('x', f);
  fclose(f);
  assert_int_equal(secret_read_file(path, buf, sizeof buf, &exposed, err, sizeof err), -1);
  assert_non_null(strstr(err, "longer than 4095 bytes"));
  assert_int_equal(buf[0], '\0');
  assert_int_equal(secret_read_file(dir, buf, sizeof buf, &exposed, err, sizeof err), -1);
  assert_non_null(strstr(err, "a directory, not a regular file"));
  snprintf(path, sizeof path, "%s/fifo", dir);
  assert_int_equal(mkfifo(path, 0600), 0);
  assert_int_equal(secret_read_file(path, buf, sizeof buf, &exposed, err, sizeof err), -1);
  assert_non_null(strstr(err, "a FIFO"));
  assert_int_equal(secret_read_file("/dev/zero", buf, sizeof buf, &exposed, err, sizeof err), -1);
  assert_non_null(strstr(err, "a character device"));
  unlink(path);
  snprintf(path, sizeof path, "%s/pw", dir);
  unlink(path);
  rmdir(dir);
}

static void test_reading_text(void **state) {
  (void)state;
  double v[32] = {0};
  set(v, "flow_m3h", 36.62540817260742); /* the float 0x4212806B */
  set(v, "velocity_ms", 1.5);
  set(v, "total_m3", 1234.5);
  set(v, "net_total_m3", -0.0);
  set(v, "signal_quality", 85);
  char f[512];
  int n = reading_fields_json(tuf, v, f, sizeof f);
  assert_true(n > 0);
  assert_string_equal(f, "{\"flow_m3h\":36.62541,\"velocity_ms\":1.5,\"total_m3\":1234.5,"
                         "\"net_total_m3\":0,\"error_bits\":0,\"signal_quality\":85}");
  char p[1024];
  n = reading_payload(p, sizeof p, 1795885152002, 42, f, false, false, 0);
  assert_true(n > 0);
  assert_string_equal(p, "{\"ts\":\"2026-11-28T16:59:12.002Z\",\"seq\":42,\"flow_m3h\":36.62541,"
                         "\"velocity_ms\":1.5,\"total_m3\":1234.5,\"net_total_m3\":0,"
                         "\"error_bits\":0,\"signal_quality\":85,\"quality\":\"good\"}");
  n = reading_payload(p, sizeof p, 0, 1, "{}", true, true, 0);
  assert_string_equal(p, "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"seq\":1,"
                         "\"quality\":\"suspect\",\"historical\":true}");
  /* A reading the database could not take: no sequence number yet. */
  n = reading_payload(p, sizeof p, 0, 0, "{\"flow_m3h\":1}", false, false, 0);
  assert_string_equal(p, "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"flow_m3h\":1,"
                         "\"quality\":\"good\",\"stored\":false}");
  /* A reading taken before the wall clock stepped says by how much. */
  n = reading_payload(p, sizeof p, 0, 3, "{}", false, true, 3600000);
  assert_string_equal(p, "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"seq\":3,"
                         "\"quality\":\"good\",\"clock_step_ms\":3600000,\"historical\":true}");
  /* Too small a buffer and non-finite values are refused. */
  assert_int_equal(reading_payload(p, 10, 0, 1, f, false, false, 0), -1);
  set(v, "flow_m3h", NAN);
  assert_int_equal(reading_fields_json(tuf, v, f, sizeof f), -1);
}

/* The back-off: first delay, doubling, capped, and over again after a
 * success. */
static void test_backoff_next(void **state) {
  (void)state;
  int64_t cur = 0;
  assert_int_equal(backoff_next(&cur, 1000, 30000), 1000);
  assert_int_equal(backoff_next(&cur, 1000, 30000), 2000);
  assert_int_equal(backoff_next(&cur, 1000, 30000), 4000);
  for (int i = 0; i < 10; i++) backoff_next(&cur, 1000, 30000);
  assert_int_equal(cur, 30000);
  /* A lower cap (after a refusal the daemon's is higher, not lower) holds. */
  assert_int_equal(backoff_next(&cur, 1000, 8000), 8000);
  backoff_reset(&cur);
  assert_int_equal(backoff_next(&cur, 1000, 30000), 1000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_backoff_next),
      cmocka_unit_test(test_slots),
      cmocka_unit_test(test_rfc3339),
      cmocka_unit_test(test_clock_offset),
      cmocka_unit_test(test_offline_at_third_failure),
      cmocka_unit_test(test_success_resets_the_count),
      cmocka_unit_test(test_stuck_bus_goes_offline),
      cmocka_unit_test(test_backoff),
      cmocka_unit_test(test_quality),
      cmocka_unit_test(test_quality_range_and_rollover),
      cmocka_unit_test(test_reading_text),
      cmocka_unit_test(test_secret_file),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
