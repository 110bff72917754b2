/* cfg: loading and validating a site configuration. Every error case checks
 * the exact FILE:LINE:COL prefix and the part of the message that says what
 * was expected. Configs are written to a temporary folder. */
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

static char realdir[PATH_MAX]; /* resolved, as cfg->dir holds it */

/* Line numbers in the comments: every test builds on these. */
#define HEAD                                                                   \
  "site:\n"                       /* 1 */                                      \
  "  id: kekeya\n"                /* 2 */                                      \
  "mqtt:\n"                       /* 3 */                                      \
  "  url: mqtt://127.0.0.1:1883\n" /* 4 */                                     \
  "storage:\n"                    /* 5 */                                      \
  "  path: ./r.db\n"              /* 6 */
#define BUS                                                                    \
  "buses:\n"                      /* 7 */                                      \
  "  - id: rs485-1\n"             /* 8 */                                      \
  "    transport: rtu\n"          /* 9 */                                      \
  "    device: /dev/ttyUSB0\n"    /* 10 */
#define METER                                                                  \
  "meters:\n"                     /* 11 */                                     \
  "  - id: KKY-01\n"              /* 12 */                                     \
  "    bus: rs485-1\n"            /* 13 */                                     \
  "    unit: 1\n"                 /* 14 */                                     \
  "    profile: tuf2000m\n"       /* 15 */
#define METER2                                                                 \
  "  - id: KKY-02\n"              /* 16 */                                     \
  "    bus: rs485-1\n"            /* 17 */                                     \
  "    unit: 2\n"                 /* 18 */                                     \
  "    profile: tuf2000m\n"       /* 19 */

static int setup(void **state) {
  (void)state;
  if (site_dir_make("/tmp/ic-cfg-test-XXXXXX") != 0) return -1;
  if (!realpath(tmpdir, realdir)) return -1;
  return 0;
}

static int teardown(void **state) {
  (void)state;
  static const char *const files[] = {"site.yaml", "my.yaml", "alias", NULL};
  char p[PATH_MAX + 32];
  for (size_t i = 0; files[i]; i++) {
    snprintf(p, sizeof p, "%s/%s", tmpdir, files[i]);
    unlink(p);
  }
  rmdir(tmpdir);
  return 0;
}

static void test_reports(void **state) {
  (void)state;
  cfg *c = load_ok(HEAD BUS METER);
  assert_int_equal(c->reports.nperiods, 2);
  assert_string_equal(c->reports.periods[0], "hourly");
  assert_string_equal(c->reports.periods[1], "daily");
  cfg_free(c);
  c = load_ok(HEAD BUS METER "reports:\n  periods: [daily, 1m, monthly]\n");
  assert_int_equal(c->reports.nperiods, 3);
  assert_string_equal(c->reports.periods[1], "1m");
  cfg_free(c);
  /* line 17: "  periods: [daily, weekly]" */
  expect_error_at(HEAD BUS METER "reports:\n  periods: [daily, weekly]\n", 17, 20,
                  "expected a report period");
  expect_error_at(HEAD BUS METER "reports:\n  periods: [500ms]\n", 17, 13,
                  "at least 1s");
  expect_error_at(HEAD BUS METER "reports:\n  periods: [1m, 1m]\n", 17, 17,
                  "listed twice");
  expect_error_at(HEAD BUS METER "reports:\n  periods: []\n", 17, 12,
                  "at least one period");
  expect_error_at(HEAD BUS METER "reports:\n  push: yes\n", 17, 3,
                  "unknown key \"push\"");
  expect_error_at(HEAD BUS METER "reports:\n  push_url: ftp://bureau/\n", 17, 13,
                  "http:// or https://");
  c = load_ok(HEAD BUS METER "reports:\n  push_url: https://bureau.example/api\n"
              "  token_file: ./token\n  push_timeout: 10s\n");
  assert_string_equal(c->reports.push_url, "https://bureau.example/api");
  assert_true(strstr(c->reports.token_file, "/token") != NULL);
  assert_true(c->reports.token_file[0] == '/');
  assert_int_equal(c->reports.push_timeout_ms, 10000);
  cfg_free(c);
}

static void test_storage_bounds(void **state) {
  (void)state;
  cfg *c = load_ok(HEAD BUS METER);
  assert_int_equal(c->storage.max_size, 512LL * 1024 * 1024);
  assert_int_equal(c->storage.retention_ms, 400LL * 86400000);
  assert_int_equal(c->storage.maintenance_ms, 60000);
  assert_int_equal(c->storage.commit_ms, 50);
  assert_int_equal(c->storage.hold_max, 20000);
  cfg_free(c);
  c = load_ok("site:\n  id: kekeya\nmqtt:\n  url: mqtt://127.0.0.1:1883\n"
              "storage: {path: ./r.db, max_size: 64MB, retention: 30d, "
              "maintenance_interval: 5s, commit_interval: 200ms, hold_max: 500}\n" BUS METER);
  assert_int_equal(c->storage.max_size, 64000000);
  assert_int_equal(c->storage.retention_ms, 30LL * 86400000);
  assert_int_equal(c->storage.maintenance_ms, 5000);
  assert_int_equal(c->storage.commit_ms, 200);
  assert_int_equal(c->storage.hold_max, 500);
  cfg_free(c);
  /* The group commit window is bounded: a power cut loses at most it. */
  expect_error_at("site:\n  id: kekeya\nmqtt:\n  url: mqtt://127.0.0.1:1883\n"
                  "storage: {path: ./r.db, commit_interval: 1m}\n" BUS METER, 5, 42,
                  "expected a duration between 0s and 10s");
  /* line 5: "storage: {path: ./r.db, max_size: lots}" */
  expect_error_at("site:\n  id: kekeya\nmqtt:\n  url: mqtt://127.0.0.1:1883\n"
                  "storage: {path: ./r.db, max_size: lots}\n" BUS METER, 5, 35,
                  "expected a size");
  expect_error_at("site:\n  id: kekeya\nmqtt:\n  url: mqtt://127.0.0.1:1883\n"
                  "storage: {path: ./r.db, max_size: 1kB}\n" BUS METER, 5, 35,
                  "from 64KiB to 16TiB");
  /* Too large for 64 bits: refused, not taken as the largest number. */
  expect_error_at("site:\n  id: kekeya\nmqtt:\n  url: mqtt://127.0.0.1:1883\n"
                  "storage: {path: ./r.db, max_size: 99999999999999999999}\n" BUS METER, 5,
                  35, "expected a size from 64KiB to 16TiB");
  expect_error_at("site:\n  id: kekeya\nmqtt:\n  url: mqtt://127.0.0.1:1883\n"
                  "storage: {path: ./r.db, max_size: 9000000TiB}\n" BUS METER, 5, 35,
                  "expected a size");
  expect_error_at("site:\n  id: kekeya\nmqtt:\n  url: mqtt://127.0.0.1:1883\n"
                  "storage: {path: ./r.db, max_size: -5MiB}\n" BUS METER, 5, 35,
                  "expected a size");
}

static void test_meter_phase(void **state) {
  (void)state;
  cfg *c = load_ok(HEAD BUS METER METER2);
  /* Two meters on one line, polled every minute: 100 ms apart. */
  assert_int_equal(cfg_meter_phase_ms(c, 0), 0);
  assert_int_equal(cfg_meter_phase_ms(c, 1), 100);
  cfg_free(c);
  /* Four meters every 200 ms: the spread shrinks to 200 / 4 = 50 ms. */
  c = load_ok(HEAD BUS
              "meters:\n"
              "  - {id: A, bus: rs485-1, unit: 1, profile: tuf2000m, interval: 200ms}\n"
              "  - {id: B, bus: rs485-1, unit: 2, profile: tuf2000m, interval: 200ms}\n"
              "  - {id: C, bus: rs485-1, unit: 3, profile: tuf2000m, interval: 200ms}\n"
              "  - {id: D, bus: rs485-1, unit: 4, profile: tuf2000m, interval: 200ms}\n");
  assert_int_equal(cfg_meter_phase_ms(c, 0), 0);
  assert_int_equal(cfg_meter_phase_ms(c, 3), 150);
  cfg_free(c);
  /* A few network buses are not offset (a thousand are: below). */
  c = load_ok("site: {id: s}\n"
              "mqtt: {url: \"mqtt://127.0.0.1:1883\"}\n"
              "storage: {path: ./r.db}\n"
              "buses:\n"
              "  - {id: t1, transport: tcp, host: 127.0.0.1, port: 502}\n"
              "  - {id: s1, transport: rtu, device: /dev/ttyS0}\n"
              "  - {id: t2, transport: tcp, host: 127.0.0.1, port: 503}\n"
              "  - {id: t3, transport: rtu-over-tcp, host: 127.0.0.1, port: 504}\n"
              "meters:\n"
              "  - {id: A, bus: t1, unit: 1, profile: tuf2000m, interval: 100ms}\n"
              "  - {id: B, bus: t1, unit: 2, profile: tuf2000m, interval: 100ms}\n"
              "  - {id: C, bus: s1, unit: 1, profile: tuf2000m, interval: 100ms}\n"
              "  - {id: D, bus: t2, unit: 1, profile: tuf2000m, interval: 100ms}\n"
              "  - {id: E, bus: t3, unit: 1, profile: tuf2000m, interval: 100ms}\n");
  assert_int_equal(cfg_meter_phase_ms(c, 0), 0);
  assert_int_equal(cfg_meter_phase_ms(c, 1), 50); /* B: second of two on t1 */
  assert_int_equal(cfg_meter_phase_ms(c, 2), 0);  /* C: the serial line */
  assert_int_equal(cfg_meter_phase_ms(c, 3), 0); /* D: t2 */
  assert_int_equal(cfg_meter_phase_ms(c, 4), 0); /* E: t3 */
  cfg_free(c);
  /* A thousand single-meter endpoints every 100 ms: ten groups 10 ms apart,
   * by rank; the serial line among them is not counted. */
  char *big = malloc(200000);
  assert_non_null(big);
  size_t n = (size_t)sprintf(big, "site: {id: s}\nmqtt: {url: \"mqtt://127.0.0.1:1883\"}\n"
                                   "storage: {path: ./r.db}\nbuses:\n"
                                   "  - {id: s1, transport: rtu, device: /dev/ttyS0}\n");
  for (int i = 0; i < 1000; i++)
    n += (size_t)sprintf(big + n, "  - {id: t%d, transport: tcp, host: 127.0.0.1, port: %d}\n", i,
                         1000 + i);
  n += (size_t)sprintf(big + n, "meters:\n"
                                "  - {id: S, bus: s1, unit: 1, profile: tuf2000m, interval: 100ms}\n");
  for (int i = 0; i < 1000; i++)
    n += (size_t)sprintf(big + n, "  - {id: m%d, bus: t%d, unit: 1, profile: tuf2000m, interval: 100ms}\n",
                         i, i);
  c = load_ok(big);
  free(big);
  assert_int_equal(cfg_meter_phase_ms(c, 0), 0);    /* the serial line */
  assert_int_equal(cfg_meter_phase_ms(c, 1), 0);    /* t0 */
  assert_int_equal(cfg_meter_phase_ms(c, 2), 10);   /* t1 */
  assert_int_equal(cfg_meter_phase_ms(c, 10), 90);  /* t9 */
  assert_int_equal(cfg_meter_phase_ms(c, 11), 0);   /* t10 */
  assert_int_equal(cfg_meter_phase_ms(c, 1000), 90); /* t999 */
  cfg_free(c);
}

static void test_minimal_defaults(void **state) {
  (void)state;
  cfg *c = load_ok(HEAD BUS METER);
  assert_string_equal(c->path, site_path);
  assert_string_equal(c->dir, realdir);
  assert_string_equal(c->site.id, "kekeya");
  assert_string_equal(c->site.name, "kekeya");
  assert_string_equal(c->site.timezone, "Asia/Shanghai");
  assert_string_equal(c->mqtt.url, "mqtt://127.0.0.1:1883");
  assert_string_equal(c->mqtt.client_id, "kekeya-gw");
  assert_string_equal(c->mqtt.topic_prefix, "water");
  assert_int_equal(c->mqtt.version, 0); /* auto: 5, else 3.1.1 */
  assert_int_equal(c->mqtt.keepalive_ms, 30000);
  assert_string_equal(c->mqtt.username, "");
  assert_string_equal(c->mqtt.password_file, "");
  assert_string_equal(c->mqtt.ca_file, "");
  assert_int_equal(c->nbuses, 1);
  const cfg_bus *b = &c->buses[0];
  assert_string_equal(b->id, "rs485-1");
  assert_int_equal(b->line, 8);
  assert_int_equal(b->col, 5);
  assert_int_equal(b->transport, CFG_TRANSPORT_RTU);
  assert_string_equal(b->device, "/dev/ttyUSB0");
  assert_int_equal(b->baud, 9600);
  assert_int_equal(b->parity, 'N');
  assert_int_equal(b->data_bits, 8);
  assert_int_equal(b->stop_bits, 1);
  assert_int_equal(b->timeout_ms, 1000);
  assert_int_equal(b->turnaround_ms, 0);
  assert_int_equal(b->max_gap, -1);
  assert_int_equal(b->max_registers, 0);
  assert_false(b->sim_wire_time);
  assert_int_equal(c->nmeters, 1);
  const cfg_meter *m = &c->meters[0];
  assert_string_equal(m->id, "KKY-01");
  assert_string_equal(m->name, "KKY-01");
  assert_int_equal(m->line, 12);
  assert_int_equal(m->col, 5);
  assert_int_equal(m->bus, 0);
  assert_ptr_equal(cfg_meter_bus(c, m), b);
  assert_int_equal(m->unit, 1);
  assert_string_equal(m->profile_ref, "tuf2000m");
  assert_non_null(m->profile);
  assert_string_equal(m->profile->name, "tuf2000m");
  assert_int_equal(c->nprofiles, 1);
  assert_int_equal(m->interval_ms, 60000);
  assert_true(m->sim.mean_flow_m3h == 100);
  assert_true(m->sim.pipe_diameter_m == 0.5);
  assert_true(m->sim.noise == 0.02);
  assert_true(m->sim.flaky_ratio == 0.5);
  assert_true(m->sim.crc_ratio == 1.0);
  assert_int_equal(m->sim.slow_delay_ms, 2000);
  assert_int_equal(m->sim.exception_code, 4);
  assert_int_equal(m->sim.fault, SIM_FAULT_NONE);
  assert_int_equal(m->sim.nfixed, 0);
  assert_true(m->sim.seed != 0);
  assert_true(c->online.baseline == 0.9468);
  assert_int_equal(c->online.offline_after, 3);
  assert_int_equal(c->online.min_readings, 1);
  assert_true(c->online.min_completeness == 0);
  assert_int_equal(c->online.backoff_max_ms, 300000);
  assert_string_equal(c->sim.control, "");
  assert_int_equal(cfg_meter_index(c, "KKY-01"), 0);
  assert_int_equal(cfg_meter_index(c, "KKY-99"), -1);
  cfg_free(c);
  cfg_free(NULL);
}

static void test_full_site(void **state) {
  (void)state;
  cfg *c = load_ok("site:\n"
                   "  id: kekeya\n"
                   "  name: \"柯柯亚灌区渠首\"\n"
                   "  timezone: Asia/Urumqi\n"
                   "mqtt:\n"
                   "  url: mqtts://broker.example.cn\n"
                   "  client_id: gw-1\n"
                   "  topic_prefix: xj/water\n"
                   "  version: 3.1.1\n"
                   "  username: gw\n"
                   "  password_file: secrets/mqtt.pw\n"
                   "  keepalive: 1m\n"
                   "  ca_file: ca.pem\n"
                   "  cert_file: /etc/ic/cert.pem\n"
                   "  key_file: ./tls/key.pem\n"
                   "storage:\n"
                   "  path: /var/lib/intake-collector/readings.db\n"
                   "buses:\n"
                   "  - id: rs485-1\n"
                   "    transport: rtu\n"
                   "    device: ./ttyS1\n"
                   "    baud: 19200\n"
                   "    parity: even\n"
                   "    data_bits: 7\n"
                   "    stop_bits: 2\n"
                   "    timeout: 10ms\n"
                   "    turnaround: 5ms\n"
                   "    max_gap: 0\n"
                   "    max_registers: 64\n"
                   "    sim_wire_time: true\n"
                   "  - id: plc\n"
                   "    transport: tcp\n"
                   "    host: 192.168.1.10\n"
                   "    port: 502\n"
                   "    timeout: 3s\n"
                   "  - id: dtu\n"
                   "    transport: rtu-over-tcp\n"
                   "    host: dtu.example.cn\n"
                   "    port: 20001\n"
                   "    baud: 4800\n"
                   "meters:\n"
                   "  - id: KKY-01\n"
                   "    name: \"1# 干渠\"\n"
                   "    bus: rs485-1\n"
                   "    unit: 1\n"
                   "    profile: tuf2000m\n"
                   "    interval: 1h30m\n"
                   "    sim:\n"
                   "      mean_flow_m3h: 120\n"
                   "      pipe_diameter_m: 0.8\n"
                   "      initial_total_m3: 1000\n"
                   "      noise: 0\n"
                   "      seed: 42\n"
                   "      fault: flaky\n"
                   "      flaky_ratio: 0.25\n"
                   "      crc_ratio: 0.5\n"
                   "      slow_delay: 3s\n"
                   "      exception_code: 2\n"
                   "      fixed: {flow_m3h: 36.6254, total_m3: 1234.5}\n"
                   "  - id: KKY-02\n"
                   "    bus: plc\n"
                   "    unit: 1\n"
                   "    profile: mag-00h\n"
                   "    interval: 100ms\n"
                   "    sim: {fault: exception}\n"
                   "  - id: KKY-03\n"
                   "    bus: dtu\n"
                   "    unit: 1\n"
                   "    profile: tuf2000m\n"
                   "    interval: 1d\n"
                   "online:\n"
                   "  baseline: 0.95\n"
                   "  offline_after: 5\n"
                   "  min_readings: 10\n"
                   "  min_completeness: 0.5\n"
                   "  backoff_max: 10m\n"
                   "sim:\n"
                   "  control: run/sim.sock\n");
  char want[PATH_MAX + 64];
  assert_string_equal(c->site.name, "柯柯亚灌区渠首");
  assert_string_equal(c->site.timezone, "Asia/Urumqi");
  assert_string_equal(c->mqtt.url, "mqtts://broker.example.cn:8883");
  assert_string_equal(c->mqtt.client_id, "gw-1");
  assert_string_equal(c->mqtt.topic_prefix, "xj/water");
  assert_int_equal(c->mqtt.version, 4);
  assert_string_equal(c->mqtt.username, "gw");
  snprintf(want, sizeof want, "%s/secrets/mqtt.pw", realdir);
  assert_string_equal(c->mqtt.password_file, want);
  assert_int_equal(c->mqtt.keepalive_ms, 60000);
  snprintf(want, sizeof want, "%s/ca.pem", realdir);
  assert_string_equal(c->mqtt.ca_file, want);
  assert_string_equal(c->mqtt.cert_file, "/etc/ic/cert.pem");
  snprintf(want, sizeof want, "%s/tls/key.pem", realdir);
  assert_string_equal(c->mqtt.key_file, want);
  assert_string_equal(c->storage.path, "/var/lib/intake-collector/readings.db");
  assert_int_equal(c->nbuses, 3);
  const cfg_bus *b = &c->buses[0];
  snprintf(want, sizeof want, "%s/ttyS1", realdir);
  assert_string_equal(b->device, want);
  assert_int_equal(b->baud, 19200);
  assert_int_equal(b->parity, 'E');
  assert_int_equal(b->data_bits, 7);
  assert_int_equal(b->stop_bits, 2);
  assert_int_equal(b->timeout_ms, 10);
  assert_int_equal(b->turnaround_ms, 5);
  assert_int_equal(b->max_gap, 0);
  assert_int_equal(b->max_registers, 64);
  assert_true(b->sim_wire_time);
  b = &c->buses[1];
  assert_int_equal(b->transport, CFG_TRANSPORT_TCP);
  assert_string_equal(b->host, "192.168.1.10");
  assert_int_equal(b->port, 502);
  assert_int_equal(b->timeout_ms, 3000);
  b = &c->buses[2];
  assert_int_equal(b->transport, CFG_TRANSPORT_RTU_OVER_TCP);
  assert_string_equal(b->host, "dtu.example.cn");
  assert_int_equal(b->port, 20001);
  assert_int_equal(b->baud, 4800);
  assert_int_equal(c->nmeters, 3);
  const cfg_meter *m = &c->meters[0];
  assert_string_equal(m->name, "1# 干渠");
  assert_int_equal(m->interval_ms, 5400000);
  assert_true(m->sim.mean_flow_m3h == 120);
  assert_true(m->sim.pipe_diameter_m == 0.8);
  assert_true(m->sim.initial_total_m3 == 1000);
  assert_true(m->sim.noise == 0);
  assert_int_equal(m->sim.seed, 42);
  assert_int_equal(m->sim.fault, SIM_FAULT_FLAKY);
  assert_true(m->sim.flaky_ratio == 0.25);
  assert_true(m->sim.crc_ratio == 0.5);
  assert_int_equal(m->sim.slow_delay_ms, 3000);
  assert_int_equal(m->sim.exception_code, 2);
  assert_int_equal(m->sim.nfixed, 2);
  assert_string_equal(m->sim.fixed[0].field, "flow_m3h");
  assert_true(m->sim.fixed[0].value == 36.6254);
  assert_string_equal(m->sim.fixed[1].field, "total_m3");
  assert_true(m->sim.fixed[1].value == 1234.5);
  assert_int_equal(c->meters[1].bus, 1);
  assert_int_equal(c->meters[1].interval_ms, 100);
  assert_int_equal(c->meters[1].sim.fault, SIM_FAULT_EXCEPTION);
  assert_string_equal(c->meters[1].profile->name, "mag-00h");
  assert_int_equal(c->meters[2].interval_ms, 86400000);
  /* one profile object per distinct reference, shared */
  assert_int_equal(c->nprofiles, 2);
  assert_ptr_equal(c->meters[0].profile, c->meters[2].profile);
  assert_true(c->online.baseline == 0.95);
  assert_int_equal(c->online.offline_after, 5);
  assert_int_equal(c->online.min_readings, 10);
  assert_true(c->online.min_completeness == 0.5);
  assert_int_equal(c->online.backoff_max_ms, 600000);
  snprintf(want, sizeof want, "%s/run/sim.sock", realdir);
  assert_string_equal(c->sim.control, want);
  cfg_free(c);
}

static void test_unknown_key(void **state) {
  (void)state;
  expect_error_at(HEAD BUS "    bauds: 9600\n" METER, 11, 5,
                  "unknown key \"bauds\" in bus (expected one of: id, "
                  "transport, device, baud,");
  expect_error_at(HEAD "colour: blue\n" BUS METER, 7, 1,
                  "unknown key \"colour\" in the top level");
  expect_error_at(HEAD BUS METER "    sim:\n      faults: offline\n", 17, 7,
                  "unknown key \"faults\" in sim");
}

static void test_wrong_type(void **state) {
  (void)state;
  expect_error_at("site: kekeya\n" BUS METER, 1, 7,
                  "expected a map for site, got \"kekeya\"");
  expect_error_at(HEAD "buses:\n  id: x\n" METER, 8, 3,
                  "expected a sequence for buses, got a map");
  expect_error_at(HEAD BUS "meters:\n  - id: KKY-01\n    bus: rs485-1\n"
                           "    unit: [1]\n    profile: tuf2000m\n",
                  14, 11, "expected an integer between 1 and 247, got a "
                          "sequence");
  expect_error_at(HEAD BUS "    sim_wire_time: maybe\n" METER, 11, 20,
                  "expected true or false, got \"maybe\"");
  expect_error_at(HEAD BUS METER "    sim: {mean_flow_m3h: lots}\n", 16, 26,
                  "expected a number between -1e+06 and 1e+06, got \"lots\"");
}

static void test_out_of_range(void **state) {
  (void)state;
  expect_error_at(HEAD BUS "meters:\n  - id: KKY-01\n    bus: rs485-1\n"
                           "    unit: 300\n    profile: tuf2000m\n",
                  14, 11, "expected an integer between 1 and 247, got \"300\"");
  expect_error_at(HEAD BUS "    baud: 100\n" METER, 11, 11,
                  "expected an integer between 1200 and 921600, got \"100\"");
  expect_error_at(HEAD BUS "    baud: 14400\n" METER, 11, 11,
                  "expected a standard baud rate");
  expect_error_at(HEAD BUS "    parity: evn\n" METER, 11, 13,
                  "expected none, even or odd, got \"evn\"");
  expect_error_at(HEAD BUS "    data_bits: 9\n" METER, 11, 16,
                  "expected 7 or 8, got \"9\"");
  expect_error_at(HEAD BUS "    max_registers: 126\n" METER, 11, 20,
                  "expected an integer between 1 and 125");
  expect_error_at(HEAD BUS METER "online:\n  baseline: 1.5\n", 17, 13,
                  "expected a number between 0 and 1, got \"1.5\"");
  expect_error_at(HEAD BUS METER "online:\n  offline_after: 0\n", 17, 18,
                  "expected an integer between 1 and 100, got \"0\"");
  expect_error_at(HEAD BUS METER "    sim: {exception_code: 0}\n", 16, 27,
                  "expected an integer between 1 and 255");
}

static void test_bad_duration(void **state) {
  (void)state;
  expect_error_at(HEAD BUS METER "    interval: 5 minutes\n", 16, 15,
                  "expected a duration such as 500ms, 2s, 5m or 1h, got "
                  "\"5 minutes\"");
  expect_error_at(HEAD BUS "    timeout: 2m\n" METER, 11, 14,
                  "expected a duration between 10ms and 1m, got \"2m\"");
  expect_error_at(HEAD BUS METER "    interval: 50ms\n", 16, 15,
                  "expected a duration between 100ms and 1d, got \"50ms\"");
  expect_error_at(HEAD BUS METER "online:\n  backoff_max: 99999999999999999d\n",
                  17, 16, "expected a duration such as");
  expect_error_at("site: {id: k}\nmqtt:\n  url: mqtt://h\n  keepalive: 1500ms\n"
                  "storage: {path: x}\n" BUS METER,
                  4, 14, "whole number of seconds");
}

static void test_duplicate_meter_id(void **state) {
  (void)state;
  expect_error_at(HEAD BUS METER
                  "  - id: KKY-01\n    bus: rs485-1\n    unit: 2\n"
                  "    profile: tuf2000m\n",
                  16, 9, "duplicate meter id \"KKY-01\" (first defined at "
                         "line 12)");
}

static void test_reserved_meter_id(void **state) {
  (void)state;
  expect_error_at(HEAD BUS "meters:\n  - id: gateway\n    bus: rs485-1\n"
                           "    unit: 1\n    profile: tuf2000m\n",
                  12, 9, "meter id \"gateway\" is reserved");
  /* a meter "report" would publish on {prefix}/{site}/report/state, which
   * the fleet view takes for a report */
  expect_error_at(HEAD BUS "meters:\n  - id: report\n    bus: rs485-1\n"
                           "    unit: 1\n    profile: tuf2000m\n",
                  12, 9, "meter id \"report\" is reserved");
  expect_error_at(HEAD BUS "meters:\n  - id: online-rate\n    bus: rs485-1\n"
                           "    unit: 1\n    profile: tuf2000m\n",
                  12, 9, "meter id \"online-rate\" is reserved");
  expect_error_at("site: {id: fleet}\nmqtt: {url: mqtt://h}\nstorage: {path: x}\n" BUS METER,
                  1, 12, "site id \"fleet\" is reserved");
}

static void test_empty_optional_sections(void **state) {
  (void)state;
  cfg *c = load_ok(HEAD BUS METER "    sim:\n    interval: 2s\n"
                   "online:\n  # baseline: 0.9\nsim: ~\n");
  assert_true(c->online.baseline == 0.9468);
  assert_int_equal(c->meters[0].interval_ms, 2000);
  assert_int_equal(c->meters[0].sim.fault, SIM_FAULT_NONE);
  assert_true(c->meters[0].sim.mean_flow_m3h == 100);
  cfg_free(c);
  expect_error_at(HEAD BUS METER "online: 5\n", 16, 9,
                  "expected a map for online, got \"5\"");
}

static void test_duplicate_bus(void **state) {
  (void)state;
  expect_error_at(HEAD BUS "  - id: rs485-1\n    transport: tcp\n"
                           "    host: h\n    port: 502\n" METER,
                  11, 9, "duplicate bus id \"rs485-1\" (first defined at line "
                         "8)");
  expect_error_at(HEAD BUS "  - id: rs485-2\n    transport: rtu\n"
                           "    device: /dev/ttyUSB0\n" METER,
                  13, 13, "device /dev/ttyUSB0 is already used by bus "
                          "\"rs485-1\"");
}

/* One serial port through two paths (a by-id link to the device) is one
 * line: refused like the same path twice. */
static void test_same_port_two_paths(void **state) {
  (void)state;
  char alias[PATH_MAX + 32];
  snprintf(alias, sizeof alias, "%s/alias", tmpdir);
  assert_int_equal(symlink("/dev/null", alias), 0);
  expect_error_at(HEAD "buses:\n"
                       "  - id: a\n    transport: rtu\n    device: /dev/null\n"
                       "  - id: b\n    transport: rtu\n    device: ./alias\n"
                       "meters:\n  - id: KKY-01\n    bus: a\n    unit: 1\n"
                       "    profile: tuf2000m\n",
                  13, 13, "the serial port of bus \"a\" (/dev/null)");
}

static void test_unknown_bus(void **state) {
  (void)state;
  expect_error_at(HEAD BUS "meters:\n  - id: KKY-01\n    bus: rs485-9\n"
                           "    unit: 1\n    profile: tuf2000m\n",
                  13, 10, "unknown bus \"rs485-9\" (buses: rs485-1)");
}

static void test_duplicate_unit(void **state) {
  (void)state;
  expect_error_at(HEAD BUS METER
                  "  - id: KKY-02\n    bus: rs485-1\n    unit: 1\n"
                  "    profile: mag-00h\n",
                  18, 11, "unit 1 on bus \"rs485-1\" is already used by meter "
                          "\"KKY-01\" (line 12)");
  /* the same unit on another bus is fine */
  cfg *c = load_ok(HEAD BUS "  - id: plc\n    transport: tcp\n    host: h\n"
                            "    port: 502\n" METER
                   "  - id: KKY-02\n    bus: plc\n    unit: 1\n"
                   "    profile: mag-00h\n");
  assert_int_equal(c->nmeters, 2);
  assert_int_equal(c->meters[1].bus, 1);
  cfg_free(c);
}

static void test_profile_errors(void **state) {
  (void)state;
  expect_error_at(HEAD BUS "meters:\n  - id: KKY-01\n    bus: rs485-1\n"
                           "    unit: 1\n    profile: nope\n",
                  15, 14, "profile 'nope': ");
  expect_error_at(HEAD BUS "meters:\n  - id: KKY-01\n    bus: rs485-1\n"
                           "    unit: 1\n    profile: ./missing.yaml\n",
                  15, 14, "profile './missing.yaml': ");
  /* a profile's own error comes with its own position */
  write_file("my.yaml", "name: mine\nfields:\n  - name: flow_m3h\n"
                        "    bogus: 1\n");
  expect_error_at(HEAD BUS "meters:\n  - id: KKY-01\n    bus: rs485-1\n"
                           "    unit: 1\n    profile: my.yaml\n",
                  15, 14, "my.yaml:4:5: ");
  expect_error_at(HEAD BUS "meters:\n  - id: KKY-01\n    bus: rs485-1\n"
                           "    unit: 1\n    profile: \"\"\n",
                  15, 14, "expected a profile name");
}

static void test_profile_path(void **state) {
  (void)state;
  write_file("my.yaml", "name: mine\n"
                        "fields:\n"
                        "  - name: flow_m3h\n"
                        "    role: flow\n"
                        "    unit: m3/h\n"
                        "    address: 0\n"
                        "    type: f32\n");
  cfg *c = load_ok(HEAD BUS "meters:\n  - id: KKY-01\n    bus: rs485-1\n"
                            "    unit: 1\n    profile: ./my.yaml\n"
                            "    sim: {fixed: {flow_m3h: 2.5}}\n");
  assert_string_equal(c->meters[0].profile->name, "mine");
  assert_string_equal(c->meters[0].profile_ref, "./my.yaml");
  assert_int_equal(c->meters[0].sim.nfixed, 1);
  cfg_free(c);
}

static void test_sim_fixed(void **state) {
  (void)state;
  expect_error_at(HEAD BUS METER "    sim:\n      fixed: {flwo: 1}\n", 17, 15,
                  "unknown field \"flwo\" in sim.fixed (profile tuf2000m has: "
                  "flow_m3h");
  expect_error_at(HEAD BUS METER "    sim:\n      fixed: [1, 2]\n", 17, 14,
                  "expected a map for sim.fixed, got a sequence");
  expect_error_at(HEAD BUS METER "    sim:\n      fixed: {flow_m3h: fast}\n",
                  17, 25, "expected a number");
  expect_error_at(HEAD BUS METER "    sim:\n      fault: broken\n", 17, 14,
                  "expected none, offline, flaky, slow, crc, exception, "
                  "garbage or reset, got \"broken\"");
}

static void test_missing_required(void **state) {
  (void)state;
  expect_error_at("site:\n  name: x\n"
                  "mqtt:\n  url: mqtt://127.0.0.1:1883\n"
                  "storage:\n  path: ./r.db\n" BUS METER,
                  2, 3, "missing required key \"id\" in site");
  expect_error_at("site:\n  id: kekeya\nmqtt:\n  url: mqtt://127.0.0.1:1883\n"
                  BUS METER,
                  1, 1, "missing required key \"storage\" at the top level");
  expect_error_at("site:\n  id: kekeya\nmqtt:\n  client_id: x\n"
                  "storage:\n  path: ./r.db\n" BUS METER,
                  4, 3, "missing required key \"url\" in mqtt");
  expect_error_at(HEAD "buses:\n  - id: rs485-1\n    transport: rtu\n" METER,
                  8, 5, "missing required key \"device\" in bus");
  expect_error_at(HEAD "buses:\n  - id: plc\n    transport: tcp\n"
                  "    host: 10.0.0.1\n" METER,
                  8, 5, "missing required key \"port\" in bus");
  expect_error_at(HEAD "buses:\n  - id: plc\n    transport: rtu-over-tcp\n"
                  "    port: 1503\n" METER,
                  8, 5, "missing required key \"host\" in bus");
  expect_error_at(HEAD "buses:\n  - id: plc\n    device: /dev/ttyS0\n" METER,
                  8, 5, "missing required key \"transport\" in bus");
  expect_error_at(HEAD BUS "meters:\n  - id: KKY-01\n    bus: rs485-1\n"
                           "    profile: tuf2000m\n",
                  12, 5, "missing required key \"unit\" in meter");
  expect_error_at(HEAD BUS "meters:\n  - id: KKY-01\n    unit: 1\n"
                           "    profile: tuf2000m\n",
                  12, 5, "missing required key \"bus\" in meter");
  expect_error_at(HEAD BUS "meters:\n  - bus: rs485-1\n    unit: 1\n"
                           "    profile: tuf2000m\n",
                  12, 5, "missing required key \"id\" in meter");
  expect_error_at(HEAD BUS "meters:\n  - id: KKY-01\n    bus: rs485-1\n"
                           "    unit: 1\n",
                  12, 5, "missing required key \"profile\" in meter");
}

static void test_no_meters(void **state) {
  (void)state;
  expect_error_at(HEAD BUS "meters: []\n", 11, 9, "no meters configured");
  expect_error_at(HEAD BUS, 1, 1, "no meters configured");
  expect_error_at(HEAD "buses: []\n" METER, 7, 8, "no buses configured");
  expect_error_at("", 1, 1, "the file is empty");
  expect_error_at("# nothing yet\n", 1, 1, "the file is empty");
  expect_error_at("- a\n- b\n", 1, 1, "expected a map for the top level");
}

static void test_yaml_syntax(void **state) {
  (void)state;
  expect_error_at(HEAD BUS "meters:\n  - id: KKY-01\n   bus: rs485-1\n", 13,
                  4, "YAML syntax error");
  expect_error_at(HEAD "buses: [\n" METER, 9, 3, "YAML syntax error");
  expect_error_at(HEAD BUS METER "    unit: 2\n", 16, 5,
                  "duplicate key \"unit\" (first defined at line 14)");
}

static void test_bad_ids(void **state) {
  (void)state;
  expect_error_at("site:\n  id: ke keya\n" BUS METER, 2, 7, "expected an id");
  expect_error_at(HEAD BUS "meters:\n  - id: KKY/01\n    bus: rs485-1\n"
                           "    unit: 1\n    profile: tuf2000m\n",
                  12, 9, "expected an id (letters, digits, '_' and '-'), got "
                         "\"KKY/01\"");
  expect_error_at(HEAD "buses:\n  - id: \"\"\n    transport: rtu\n"
                  "    device: /dev/ttyS0\n" METER,
                  8, 9, "expected an id");
  expect_error_at(
      HEAD BUS "meters:\n  - id: "
               "M0123456789012345678901234567890123456789012345678901234567890"
               "123\n    bus: rs485-1\n    unit: 1\n    profile: tuf2000m\n",
      12, 9, "too long (at most 63 characters)");
}

static void test_too_long_string(void **state) {
  (void)state;
  char text[4096];
  char name[300];
  memset(name, 'x', 299);
  name[299] = '\0';
  snprintf(text, sizeof text, "site:\n  id: k\n  name: %s\n" BUS METER, name);
  expect_error_at(text, 3, 9, "name is too long (299 bytes, at most 255)");
  /* a multi-byte name that fits is kept whole */
  cfg *c = load_ok("site:\n  id: k\n  name: 柯柯亚灌区渠首柯柯亚灌区渠首\n"
                   "mqtt: {url: 'mqtt://h'}\nstorage: {path: x}\n" BUS METER);
  assert_string_equal(c->site.name, "柯柯亚灌区渠首柯柯亚灌区渠首");
  cfg_free(c);
}

static void test_transport_keys(void **state) {
  (void)state;
  expect_error_at(HEAD BUS "    host: 127.0.0.1\n" METER, 11, 5,
                  "key \"host\" does not apply to an rtu bus");
  expect_error_at(HEAD "buses:\n  - id: plc\n    transport: tcp\n"
                  "    host: 127.0.0.1\n    port: 502\n    baud: 9600\n" METER,
                  12, 5, "key \"baud\" does not apply to a tcp bus");
  expect_error_at(HEAD "buses:\n  - id: dtu\n    transport: rtu-over-tcp\n"
                  "    host: 127.0.0.1\n    port: 502\n    device: /dev/x\n"
                  METER,
                  12, 5, "key \"device\" does not apply to an rtu-over-tcp bus");
  expect_error_at(HEAD "buses:\n  - id: plc\n    transport: modbus\n" METER, 9,
                  16, "expected rtu, tcp, rtu-over-tcp or rtu-dtu, got \"modbus\"");
  expect_error_at(HEAD "buses:\n  - id: plc\n    transport: tcp\n"
                  "    host: 'a b'\n    port: 502\n" METER,
                  10, 11, "expected a host name or IP address");
  expect_error_at(HEAD "buses:\n  - id: plc\n    transport: tcp\n"
                  "    host: h\n    port: 70000\n" METER,
                  11, 11, "expected an integer between 1 and 65535");
}

static void test_mqtt(void **state) {
  (void)state;
#define MQ(url) "site: {id: k}\nmqtt:\n  url: '" url "'\nstorage: {path: x}\n"
/* url mqtt://h and more keys in mqtt, from line 4 */
#define MQE(more) "site: {id: k}\nmqtt:\n  url: mqtt://h\n" more "\nstorage: {path: x}\n"
  static const struct {
    const char *url, *want;
  } good[] = {
      {"mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883"},
      {"mqtt://localhost", "mqtt://localhost:1883"},
      {"mqtts://broker.example.cn/", "mqtts://broker.example.cn:8883"},
      {"mqtt://[::1]:1884", "mqtt://[::1]:1884"},
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    char text[1024];
    snprintf(text, sizeof text,
             "site: {id: k}\nmqtt:\n  url: '%s'\nstorage: {path: x}\n" BUS
                 METER,
             good[i].url);
    cfg *c = load_ok(text);
    assert_string_equal(c->mqtt.url, good[i].want);
    cfg_free(c);
  }
  expect_error_at(MQ("tcp://127.0.0.1:1883") BUS METER, 3, 8,
                  "expected an mqtt:// or mqtts:// url");
  expect_error_at(MQ("mqtt://127.0.0.1:0") BUS METER, 3, 8,
                  "expected a port between 1 and 65535");
  expect_error_at(MQ("mqtt://127.0.0.1:65536") BUS METER, 3, 8,
                  "expected a port between 1 and 65535");
  expect_error_at(MQ("mqtt://127.0.0.1:") BUS METER, 3, 8,
                  "expected a port between 1 and 65535");
  expect_error_at(MQ("mqtt://:1883") BUS METER, 3, 8, "expected a host");
  expect_error_at(MQ("mqtt://user:pw@h:1883") BUS METER, 3, 8,
                  "must not hold credentials");
  expect_error_at(MQ("mqtt://h:1883/topic") BUS METER, 3, 8,
                  "unexpected \"/topic\" in url");
  expect_error_at(MQ("mqtt://h_%:1883") BUS METER, 3, 8,
                  "expected a host name or IP address in url");
  expect_error_at(MQE("  version: 4.0") BUS METER, 4, 12,
                  "expected 5, 3.1.1, 4 or auto, got \"4.0\"");
  expect_error_at(MQE("  ca_file: ca.pem") BUS METER, 4, 12,
                  "ca_file needs an mqtts:// url");
  expect_error_at(MQE("  topic_prefix: water/#") BUS METER, 4, 17,
                  "expected a topic prefix");
  expect_error_at(MQE("  topic_prefix: /water") BUS METER, 4, 17,
                  "expected a topic prefix");
  expect_error_at(MQE("  client_id: gw 1") BUS METER, 4, 14,
                  "expected an id");
  expect_error_at(MQE("  password_file: pw\n  password_env: PW") BUS
                      METER,
                  5, 17, "give password_file or password_env, not both");
  expect_error_at(MQE("  password_env: 1PW") BUS METER, 4, 17,
                  "expected an environment variable name");
  /* an empty optional value means "none" */
  cfg *c = load_ok(MQE("  username: ${IC_T_UNSET_USER:-}\n"
                       "  password_env: MQTT_PW") BUS METER);
  assert_string_equal(c->mqtt.username, "");
  assert_string_equal(c->mqtt.password_env, "MQTT_PW");
  cfg_free(c);
  /* version: auto (0, the default), 5, 3.1.1 (4) */
  static const struct { const char *text; int version; } versions[] = {
      {"  version: auto", 0}, {"  version: 5", 5}, {"  version: 3.1.1", 4}, {"  version: 4", 4}};
  for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
    char doc[512];
    snprintf(doc, sizeof doc, MQE("%s") BUS METER, versions[i].text);
    c = load_ok(doc);
    assert_int_equal(c->mqtt.version, versions[i].version);
    cfg_free(c);
  }
#undef MQ
#undef MQE
}

static void test_env_substitution(void **state) {
  (void)state;
  setenv("IC_T_PORT", "15020", 1);
  setenv("IC_T_DB", "data/site.db", 1);
  unsetenv("IC_T_UNSET");
  cfg *c = load_ok("site: {id: k}\n"
                   "mqtt: {url: \"mqtt://127.0.0.1:${IC_T_UNSET:-18830}\"}\n"
                   "storage: {path: \"${IC_T_DB}\"}\n"
                   "buses:\n"
                   "  - id: plc\n"
                   "    transport: tcp\n"
                   "    host: ${IC_T_UNSET:-127.0.0.1}\n"
                   "    port: ${IC_T_PORT:-1502}\n"
                   "meters:\n"
                   "  - id: KKY-01\n"
                   "    bus: plc\n"
                   "    unit: 1\n"
                   "    profile: ${IC_T_UNSET:-tuf2000m}\n"
                   "    interval: ${IC_T_UNSET:-2s}\n");
  assert_string_equal(c->mqtt.url, "mqtt://127.0.0.1:18830");
  char want[PATH_MAX + 64];
  snprintf(want, sizeof want, "%s/data/site.db", realdir);
  assert_string_equal(c->storage.path, want);
  assert_string_equal(c->buses[0].host, "127.0.0.1");
  assert_int_equal(c->buses[0].port, 15020);
  assert_int_equal(c->meters[0].interval_ms, 2000);
  cfg_free(c);
  expect_error_at(HEAD "buses:\n  - id: plc\n    transport: tcp\n"
                  "    host: 127.0.0.1\n    port: ${IC_T_UNSET}\n" METER,
                  11, 11, "environment variable IC_T_UNSET is not set");
}

static void test_relative_paths(void **state) {
  (void)state;
  cfg *c = load_ok("site: {id: k}\nmqtt: {url: 'mqtt://h'}\n"
                   "storage: {path: ./r.db}\n"
                   "buses:\n  - id: rs485-1\n    transport: rtu\n"
                   "    device: ../dev/ttyX\n" METER
                   "sim: {control: sim.sock}\n");
  char want[PATH_MAX + 64];
  snprintf(want, sizeof want, "%s/r.db", realdir);
  assert_string_equal(c->storage.path, want);
  snprintf(want, sizeof want, "%s/../dev/ttyX", realdir);
  assert_string_equal(c->buses[0].device, want);
  snprintf(want, sizeof want, "%s/sim.sock", realdir);
  assert_string_equal(c->sim.control, want);
  cfg_free(c);

  /* a config named relative to the working directory */
  char cwd[PATH_MAX];
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir(tmpdir), 0);
  cfg *c2 = NULL;
  int rc = cfg_load("site.yaml", NULL, &c2, err, sizeof err);
  assert_int_equal(chdir(cwd), 0);
  if (rc != 0) fail_msg("%s", err);
  assert_string_equal(c2->path, "site.yaml");
  assert_string_equal(c2->dir, realdir);
  snprintf(want, sizeof want, "%s/r.db", realdir);
  assert_string_equal(c2->storage.path, want);
  cfg_free(c2);

  /* too long once resolved */
  char text[8192];
  char longp[4090];
  memset(longp, 'p', sizeof longp - 1);
  longp[sizeof longp - 1] = '\0';
  snprintf(text, sizeof text, "site: {id: k}\nmqtt: {url: 'mqtt://h'}\n"
                              "storage:\n  path: %s\n" BUS METER, longp);
  expect_error_at(text, 4, 9, "path is too long");
}

static void test_missing_file(void **state) {
  (void)state;
  cfg *c = NULL;
  assert_int_equal(cfg_load("/nonexistent/site.yaml", NULL, &c, err,
                            sizeof err),
                   -1);
  assert_null(c);
  assert_non_null(strstr(err, "/nonexistent/site.yaml:1:1: cannot open"));
  assert_int_equal(cfg_load(NULL, NULL, &c, err, sizeof err), -1);
}

static void test_names(void **state) {
  (void)state;
  assert_string_equal(cfg_transport_name(CFG_TRANSPORT_RTU), "rtu");
  assert_string_equal(cfg_transport_name(CFG_TRANSPORT_TCP), "tcp");
  assert_string_equal(cfg_transport_name(CFG_TRANSPORT_RTU_OVER_TCP),
                      "rtu-over-tcp");
  for (int f = 0; f < SIM_FAULT_COUNT_; f++) {
    sim_fault out = SIM_FAULT_COUNT_;
    assert_int_equal(sim_fault_parse(sim_fault_name((sim_fault)f), &out), 0);
    assert_int_equal(out, f);
  }
  sim_fault out;
  assert_int_equal(sim_fault_parse("crc", &out), 0);
  assert_int_equal(out, SIM_FAULT_CRC);
  assert_int_equal(sim_fault_parse("broken", &out), -1);
  assert_int_equal(sim_fault_parse(NULL, &out), -1);
}

/* 10,000 meters load (41 buses of up to 247 units); 10,001 are refused. */
static char *many_meters(size_t n) {
  size_t cap = 256 + 64 * 41 + n * 80;
  char *t = malloc(cap);
  assert_non_null(t);
  size_t o = (size_t)snprintf(t, cap, "site: {id: k}\nmqtt: {url: 'mqtt://h'}\n"
                                      "storage: {path: x}\nbuses:\n");
  for (int b = 0; b < 41; b++)
    o += (size_t)snprintf(t + o, cap - o,
                          "  - {id: b%d, transport: tcp, host: h, port: %d}\n",
                          b, 1000 + b);
  o += (size_t)snprintf(t + o, cap - o, "meters:\n");
  for (size_t i = 0; i < n; i++)
    o += (size_t)snprintf(t + o, cap - o,
                          "  - {id: m%zu, bus: b%zu, unit: %zu, profile: "
                          "tuf2000m}\n",
                          i, i / 247, i % 247 + 1);
  return t;
}

static void test_meter_limit(void **state) {
  (void)state;
  char *t = many_meters(10000);
  cfg *c = load_ok(t);
  free(t);
  assert_int_equal(c->nmeters, 10000);
  assert_int_equal(c->nprofiles, 1);
  assert_int_equal(cfg_meter_index(c, "m9999"), 9999);
  assert_int_equal(c->meters[9999].unit, 9999 % 247 + 1);
  cfg_free(c);
  t = many_meters(10001);
  expect_error_at(t, 47, 3, "too many meters: 10001 (at most 10000)");
  free(t);
}

static void test_demo_config(void **state) {
  (void)state;
  static const char *const vars[] = {"IC_RTU_DEVICE", "IC_TCP_PORT",
                                     "IC_ROT_PORT",   "IC_MQTT_PORT",
                                     "IC_DB",         "IC_SIM_CONTROL"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
  const char *path = IC_SOURCE_DIR "/config/examples/demo.yaml";
  cfg *c = NULL;
  if (cfg_load(path, NULL, &c, err, sizeof err) != 0) fail_msg("%s", err);
  assert_string_equal(c->site.id, "kekeya");
  assert_string_equal(c->mqtt.url, "mqtt://127.0.0.1:1883");
  assert_int_equal(c->nbuses, 3);
  assert_int_equal(c->nmeters, 7);
  assert_int_equal(c->nprofiles, 3);
  char want[CFG_PATH_MAX + 32];
  snprintf(want, sizeof want, "%s/demo.db", c->dir);
  assert_string_equal(c->storage.path, want);
  snprintf(want, sizeof want, "%s/sim.sock", c->dir);
  assert_string_equal(c->sim.control, want);
  snprintf(want, sizeof want, "%s/ttyDEMO0", c->dir);
  const cfg_bus *rtu = &c->buses[0];
  assert_int_equal(rtu->transport, CFG_TRANSPORT_RTU);
  assert_string_equal(rtu->device, want);
  assert_int_equal(rtu->baud, 9600);
  assert_true(rtu->sim_wire_time);
  assert_int_equal(c->buses[1].transport, CFG_TRANSPORT_TCP);
  assert_int_equal(c->buses[1].port, 1502);
  assert_int_equal(c->buses[2].transport, CFG_TRANSPORT_RTU_OVER_TCP);
  assert_int_equal(c->buses[2].port, 1503);
  int per_bus[3] = {0, 0, 0}, faulty = 0;
  for (size_t i = 0; i < c->nmeters; i++) {
    const cfg_meter *m = &c->meters[i];
    per_bus[m->bus]++;
    assert_true(m->interval_ms >= 2000 && m->interval_ms <= 5000);
    assert_true(m->sim.nfixed >= 2);
    assert_true(m->sim.seed >= 100);
    if (m->sim.fault != SIM_FAULT_NONE) {
      faulty++;
      assert_int_equal(cfg_meter_bus(c, m)->transport, CFG_TRANSPORT_RTU);
    }
  }
  assert_int_equal(per_bus[0], 3);
  assert_int_equal(per_bus[1], 2);
  assert_int_equal(per_bus[2], 2);
  assert_int_equal(faulty, 1);
  cfg_free(c);

  /* every port and path moves with its variable */
  setenv("IC_RTU_DEVICE", "/dev/pts/42", 1);
  setenv("IC_TCP_PORT", "25020", 1);
  setenv("IC_ROT_PORT", "25030", 1);
  setenv("IC_MQTT_PORT", "21883", 1);
  setenv("IC_DB", "/tmp/x/demo.db", 1);
  setenv("IC_SIM_CONTROL", "/tmp/x/sim.sock", 1);
  c = NULL;
  int rc = cfg_load(path, NULL, &c, err, sizeof err);
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
  if (rc != 0) fail_msg("%s", err);
  assert_string_equal(c->buses[0].device, "/dev/pts/42");
  assert_int_equal(c->buses[1].port, 25020);
  assert_int_equal(c->buses[2].port, 25030);
  assert_string_equal(c->mqtt.url, "mqtt://127.0.0.1:21883");
  assert_string_equal(c->storage.path, "/tmp/x/demo.db");
  assert_string_equal(c->sim.control, "/tmp/x/sim.sock");
  cfg_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_minimal_defaults),
      cmocka_unit_test(test_reports),
      cmocka_unit_test(test_meter_phase),
      cmocka_unit_test(test_storage_bounds),
      cmocka_unit_test(test_full_site),
      cmocka_unit_test(test_unknown_key),
      cmocka_unit_test(test_wrong_type),
      cmocka_unit_test(test_out_of_range),
      cmocka_unit_test(test_bad_duration),
      cmocka_unit_test(test_duplicate_meter_id),
      cmocka_unit_test(test_reserved_meter_id),
      cmocka_unit_test(test_empty_optional_sections),
      cmocka_unit_test(test_duplicate_bus),
      cmocka_unit_test(test_same_port_two_paths),
      cmocka_unit_test(test_unknown_bus),
      cmocka_unit_test(test_duplicate_unit),
      cmocka_unit_test(test_profile_errors),
      cmocka_unit_test(test_profile_path),
      cmocka_unit_test(test_sim_fixed),
      cmocka_unit_test(test_missing_required),
      cmocka_unit_test(test_no_meters),
      cmocka_unit_test(test_yaml_syntax),
      cmocka_unit_test(test_bad_ids),
      cmocka_unit_test(test_too_long_string),
      cmocka_unit_test(test_transport_keys),
      cmocka_unit_test(test_mqtt),
      cmocka_unit_test(test_env_substitution),
      cmocka_unit_test(test_relative_paths),
      cmocka_unit_test(test_missing_file),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_meter_limit),
      cmocka_unit_test(test_demo_config),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
