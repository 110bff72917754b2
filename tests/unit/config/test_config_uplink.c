/* cfg: the uplink section (the bureau's monitoring centre). Every error case
 * checks the exact FILE:LINE:COL prefix and what the message says was
 * expected. Configs are written to a temporary folder. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "site_fixture.h"

/* Lines 1-19: a site with three meters. */
#define SITE SITE_HEAD "  host: 127.0.0.1\n" /* 11 */ "  port: 6000\n" /* 12 */
#define SITE_HEAD                                                              \
  "site: {id: kekeya}\n"                                   /* 1 */             \
  "mqtt: {url: mqtt://127.0.0.1:1883}\n"                   /* 2 */             \
  "storage: {path: ./r.db}\n"                              /* 3 */             \
  "buses:\n"                                               /* 4 */             \
  "  - {id: plc, transport: tcp, host: 127.0.0.1, port: 1502}\n" /* 5 */       \
  "meters:\n"                                              /* 6 */             \
  "  - {id: KKY-01, bus: plc, unit: 1, profile: tuf2000m}\n" /* 7 */           \
  "  - {id: KKY-02, bus: plc, unit: 2, profile: tuf2000m}\n" /* 8 */           \
  "  - {id: KKY-03, bus: plc, unit: 3, profile: tuf2000m}\n" /* 9 */           \
  "uplink:\n"                                              /* 10 */
#define STATIONS                                                               \
  "  stations:\n"                                          /* 13 */            \
  "    - admin: \"530381\"\n"                              /* 14 */            \
  "      station: 13\n"                                    /* 15 */            \
  "      meters: [KKY-03, KKY-01]\n"                       /* 16 */

static int setup(void **state) {
  (void)state;
  return site_dir_make("/tmp/ic-cfg-uplink-XXXXXX");
}

static int teardown(void **state) {
  (void)state;
  unlink(site_path);
  rmdir(tmpdir);
  return 0;
}


static void test_absent(void **state) {
  (void)state;
  const char *no_uplink = "site: {id: kekeya}\nmqtt: {url: mqtt://127.0.0.1:1883}\n"
                          "storage: {path: ./r.db}\nbuses:\n"
                          "  - {id: plc, transport: tcp, host: 127.0.0.1, port: 1502}\n"
                          "meters:\n  - {id: KKY-01, bus: plc, unit: 1, profile: tuf2000m}\n";
  cfg *c = load_ok(no_uplink);
  assert_false(c->uplink.enabled);
  assert_int_equal(c->uplink.nstations, 0);
  cfg_free(c);
}

static void test_defaults(void **state) {
  (void)state;
  cfg *c = load_ok(SITE STATIONS);
  const cfg_uplink *u = &c->uplink;
  assert_true(u->enabled);
  assert_int_equal(u->protocol, CFG_UPLINK_SZY206);
  assert_int_equal(cfg_uplink_tp_len(u->protocol), 5);
  assert_string_equal(u->host, "127.0.0.1");
  assert_int_equal(u->port, 6000);
  assert_int_equal(u->report_interval_ms, 300000);
  assert_int_equal(u->heartbeat_ms, 60000);
  assert_int_equal(u->confirm_timeout_ms, 10000);
  assert_int_equal(u->delay_minutes, 10);
  assert_int_equal(u->nstations, 1);
  const cfg_uplink_station *s = &u->stations[0];
  const uint8_t want[] = {0x53, 0x03, 0x81, 0x0D, 0x00};
  assert_memory_equal(s->address, want, 5);
  assert_string_equal(s->admin, "530381");
  assert_int_equal(s->station, 13);
  assert_int_equal(s->line, 14);
  /* The report's order is the station's, not the file's. */
  assert_int_equal(s->nmeters, 2);
  assert_string_equal(c->meters[s->meters[0]].id, "KKY-03");
  assert_string_equal(c->meters[s->meters[1]].id, "KKY-01");
  cfg_free(c);
}

static void test_every_key(void **state) {
  (void)state;
  /* An IPv6 address may be written in brackets, as in a URL. */
  cfg *c6 = load_ok(SITE_HEAD "  host: \"[::1]\"\n  port: 6000\n" STATIONS);
  assert_string_equal(c6->uplink.host, "::1");
  cfg_free(c6);
  cfg *c = load_ok(SITE "  protocol: sl427\n"
                        "  report_interval: 1m30s\n"
                        "  heartbeat: 20s\n"
                        "  confirm_timeout: 2s\n"
                        "  delay_minutes: 0\n"
                        "  stations:\n"
                        "    - {admin: \"053001\", station: 60000, meters: [KKY-01]}\n"
                        "    - {raw_address: \"5303810d00\", meters: [KKY-02, KKY-03]}\n");
  const cfg_uplink *u = &c->uplink;
  assert_int_equal(u->protocol, CFG_UPLINK_SL427);
  assert_int_equal(cfg_uplink_tp_len(u->protocol), 7);
  assert_int_equal(u->report_interval_ms, 90000);
  assert_int_equal(u->heartbeat_ms, 20000);
  assert_int_equal(u->confirm_timeout_ms, 2000);
  assert_int_equal(u->delay_minutes, 0);
  assert_int_equal(u->nstations, 2);
  const uint8_t a0[] = {0x05, 0x30, 0x01, 0x60, 0xEA}, a1[] = {0x53, 0x03, 0x81, 0x0D, 0x00};
  assert_memory_equal(u->stations[0].address, a0, 5);
  assert_memory_equal(u->stations[1].address, a1, 5);
  assert_string_equal(u->stations[1].admin, "");
  assert_int_equal(u->stations[1].station, 0);
  assert_int_equal(u->stations[1].nmeters, 2);
  cfg_free(c);
}

static void test_errors(void **state) {
  (void)state;
  expect_error_at(SITE "  colour: blue\n" STATIONS, 13, 3, "unknown key \"colour\" in uplink");
  expect_error_at(SITE "  protocol: szy651\n" STATIONS, 13, 13, "expected szy206 or sl427");
  expect_error_at(SITE "  report_interval: 9s\n" STATIONS, 13, 20, "expected a duration between 10s and 1d");
  expect_error_at(SITE "  delay_minutes: 256\n" STATIONS, 13, 18, "between 0 and 255");
  expect_error_at(SITE "  heartbeat: soon\n" STATIONS, 13, 14, "duration");
  /* Host and port are required. */
  expect_error_at("site: {id: kekeya}\nmqtt: {url: mqtt://127.0.0.1:1883}\n"
                  "storage: {path: ./r.db}\nbuses:\n"
                  "  - {id: plc, transport: tcp, host: 127.0.0.1, port: 1502}\n"
                  "meters:\n  - {id: KKY-01, bus: plc, unit: 1, profile: tuf2000m}\n"
                  "uplink:\n  port: 6000\n  stations: []\n",
                  9, 3, "missing required key \"host\" in uplink");
  expect_error_at(SITE "  host2: x\n", 13, 3, "unknown key \"host2\"");
  expect_error_at(SITE "\n", 11, 3, "missing required key \"stations\" in uplink");
  expect_error_at(SITE "  stations: []\n", 13, 13, "at least one station");
  /* The station's address. */
  expect_error_at(SITE "  stations:\n    - {admin: \"53038\", station: 13, meters: [KKY-01]}\n",
                  14, 15, "six-digit administrative division code");
  expect_error_at(SITE "  stations:\n    - {admin: \"53O381\", station: 13, meters: [KKY-01]}\n",
                  14, 15, "six-digit");
  expect_error_at(SITE "  stations:\n    - {admin: \"530381\", station: 0, meters: [KKY-01]}\n",
                  14, 34, "between 1 and 60000");
  expect_error_at(SITE "  stations:\n    - {admin: \"530381\", station: 60001, meters: [KKY-01]}\n",
                  14, 34, "between 1 and 60000");
  expect_error_at(SITE "  stations:\n    - {admin: \"530381\", meters: [KKY-01]}\n", 14, 7,
                  "missing required key \"station\"");
  expect_error_at(SITE "  stations:\n    - {raw_address: \"5303810D0\", meters: [KKY-01]}\n",
                  14, 21, "ten hexadecimal digits");
  expect_error_at(SITE "  stations:\n    - {raw_address: \"5303810D0G\", meters: [KKY-01]}\n",
                  14, 21, "ten hexadecimal digits");
  expect_error_at(SITE "  stations:\n    - {raw_address: \"5303810D00\", admin: \"530381\", "
                       "meters: [KKY-01]}\n",
                  14, 21, "either raw_address or admin and station");
  expect_error_at(SITE "  stations:\n    - {admin: \"530381\", station: 13, meters: [KKY-01]}\n"
                       "    - {raw_address: \"5303810D00\", meters: [KKY-02]}\n",
                  15, 7, "the same address as the station at line 14");
  /* The station's meters. */
  expect_error_at(SITE "  stations:\n    - {admin: \"530381\", station: 13, meters: [KKY-09]}\n",
                  14, 47, "no meter \"KKY-09\" in meters");
  expect_error_at(SITE "  stations:\n    - {admin: \"530381\", station: 13, meters: [KKY-01]}\n"
                       "    - {admin: \"530381\", station: 14, meters: [KKY-02, KKY-01]}\n",
                  15, 55, "meter \"KKY-01\" is already reported by the station at line 14");
  expect_error_at(SITE "  stations:\n    - {admin: \"530381\", station: 13, meters: [KKY-01, "
                       "KKY-01]}\n",
                  14, 55, "meter \"KKY-01\" is listed twice in this station");
  expect_error_at(SITE "  stations:\n    - {admin: \"530381\", station: 13, meters: []}\n", 14,
                  46, "at least one meter");
  expect_error_at(SITE "  stations:\n    - {admin: \"530381\", station: 13}\n", 14, 7,
                  "missing required key \"meters\" in station");
}

/* Twenty-four meters do not fit one frame. */
static void test_too_many_meters(void **state) {
  (void)state;
  static char text[8192];
  size_t n = (size_t)snprintf(text, sizeof text,
                              "site: {id: kekeya}\nmqtt: {url: mqtt://127.0.0.1:1883}\n"
                              "storage: {path: ./r.db}\nbuses:\n"
                              "  - {id: plc, transport: tcp, host: 127.0.0.1, port: 1502}\n"
                              "meters:\n");
  for (int i = 1; i <= 24; i++)
    n += (size_t)snprintf(text + n, sizeof text - n,
                          "  - {id: M%d, bus: plc, unit: %d, profile: tuf2000m}\n", i, i);
  n += (size_t)snprintf(text + n, sizeof text - n,
                        "uplink:\n  host: 127.0.0.1\n  port: 6000\n  stations:\n"
                        "    - admin: \"530381\"\n      station: 13\n      meters: [");
  for (int i = 1; i <= 24; i++)
    n += (size_t)snprintf(text + n, sizeof text - n, "%sM%d", i > 1 ? ", " : "", i);
  snprintf(text + n, sizeof text - n, "]\n");
  expect_error_at(text, 37, 15, "at most 23 meters (one frame), got 24");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_absent),          cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_every_key),       cmocka_unit_test(test_errors),
      cmocka_unit_test(test_too_many_meters),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
