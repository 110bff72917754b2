/* cfg: DTU servers (dtu_servers) and rtu-dtu buses: defaults, address
 * ranges, packets as text and hex, and every error naming its place. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "site_fixture.h"

/* Line numbers in the comments: every test builds on these. */
#define HEAD                                                                   \
  "site: {id: canal}\n"                           /* 1 */                      \
  "mqtt: {url: mqtt://127.0.0.1:1883}\n"          /* 2 */                      \
  "storage: {path: ./r.db}\n"                     /* 3 */
#define SERVER                                                                 \
  "dtu_servers:\n"                                /* 4 */                      \
  "  - id: dtu-in\n"                              /* 5 */                      \
  "    listen: 0.0.0.0:9000\n"                    /* 6 */
#define BUSES "buses:\n"                          /* after the server */
#define DTU_BUS                                                                \
  "  - id: canal-3\n"                                                          \
  "    transport: rtu-dtu\n"                                                   \
  "    server: dtu-in\n"                                                       \
  "    registration: KKY-DTU-03\n"
#define METERS                                                                 \
  "meters:\n"                                                                  \
  "  - {id: KKY-01, bus: canal-3, unit: 1, profile: tuf2000m}\n"

static int setup(void **state) {
  (void)state;
  return site_dir_make("/tmp/ic-cfgdtu-test-XXXXXX");
}

static int teardown(void **state) {
  (void)state;
  unlink(site_path);
  rmdir(tmpdir);
  return 0;
}


static void test_defaults(void **state) {
  (void)state;
  cfg *c = load_ok(HEAD SERVER BUSES DTU_BUS METERS);
  assert_int_equal(c->ndtu_servers, 1);
  const cfg_dtu_server *s = &c->dtu_servers[0];
  assert_string_equal(s->id, "dtu-in");
  assert_string_equal(s->host, "0.0.0.0");
  assert_int_equal(s->port, 9000);
  assert_int_equal(s->idle_timeout_ms, 5 * 60 * 1000);
  assert_int_equal(s->register_timeout_ms, 5000);
  assert_int_equal(s->max_pending, 256);
  assert_int_equal(s->takeover_hold_ms, 30000);
  assert_int_equal(s->nallow, 0);
  const cfg_bus *b = &c->buses[0];
  assert_int_equal(b->transport, CFG_TRANSPORT_RTU_DTU);
  assert_string_equal(cfg_transport_name(b->transport), "rtu-dtu");
  assert_int_equal(b->server, 0);
  assert_int_equal(b->reglen, 10);
  assert_memory_equal(b->registration, "KKY-DTU-03", 10);
  assert_int_equal(b->hblen, 0);
  assert_false(b->registration_every_packet);
  assert_int_equal(b->baud, 9600);
  assert_int_equal(b->timeout_ms, 1000);
  char t[CFG_REG_TEXT_MAX];
  assert_string_equal(cfg_bus_registration_text(b, t, sizeof t), "KKY-DTU-03");
  transport_options o;
  cfg_bus_transport_options(b, &o);
  assert_int_equal(o.kind, TR_KIND_RTU_DTU);
  assert_int_equal(o.reglen, 10);
  cfg_free(c);
}

static void test_everything(void **state) {
  (void)state;
  cfg *c = load_ok(HEAD
                   "dtu_servers:\n"
                   "  - id: dtu-in\n"
                   "    listen: \"[::]:9000\"\n"
                   "    idle_timeout: 90s\n"
                   "    register_timeout: 2s\n"
                   "    max_pending: 50\n"
                   "    takeover_hold: 1m\n"
                   "    allow: [10.64.0.0/16, 127.0.0.1, \"2001:db8::/32\"]\n"
                   BUSES DTU_BUS
                   "    registration_every_packet: true\n"
                   "    heartbeat: \"hex:FE 01\"\n"
                   "    baud: 19200\n"
                   "    timeout: 3s\n"
                   "    sim_heartbeat_interval: 200ms\n"
                   "  - id: canal-4\n"
                   "    transport: rtu-dtu\n"
                   "    server: dtu-in\n"
                   "    registration: \"hex:AA0131\"\n"
                   METERS);
  const cfg_dtu_server *s = &c->dtu_servers[0];
  assert_string_equal(s->host, "::");
  assert_int_equal(s->idle_timeout_ms, 90000);
  assert_int_equal(s->register_timeout_ms, 2000);
  assert_int_equal(s->max_pending, 50);
  assert_int_equal(s->takeover_hold_ms, 60000);
  assert_int_equal(s->nallow, 3);
  uint8_t a4[4], a6[16];
  inet_pton(AF_INET, "10.64.200.1", a4);
  assert_true(cfg_cidr_contains(&s->allow[0], AF_INET, a4));
  inet_pton(AF_INET, "10.65.0.1", a4);
  assert_false(cfg_cidr_contains(&s->allow[0], AF_INET, a4));
  inet_pton(AF_INET6, "::ffff:10.64.1.2", a6);
  assert_true(cfg_cidr_contains(&s->allow[0], AF_INET6, a6));
  inet_pton(AF_INET, "127.0.0.1", a4);
  assert_true(cfg_cidr_contains(&s->allow[1], AF_INET, a4));
  inet_pton(AF_INET, "127.0.0.2", a4);
  assert_false(cfg_cidr_contains(&s->allow[1], AF_INET, a4));
  inet_pton(AF_INET6, "2001:db8:1::5", a6);
  assert_true(cfg_cidr_contains(&s->allow[2], AF_INET6, a6));
  assert_false(cfg_cidr_contains(&s->allow[2], AF_INET, a4));
  /* An IPv4 range written mapped into IPv6 is the IPv4 range, for peers
   * seen either way. */
  cfg_cidr m;
  assert_int_equal(cfg_cidr_parse("::ffff:127.0.0.1/128", &m), 0);
  assert_int_equal(m.family, AF_INET);
  assert_int_equal(m.prefix, 32);
  inet_pton(AF_INET, "127.0.0.1", a4);
  assert_true(cfg_cidr_contains(&m, AF_INET, a4));
  inet_pton(AF_INET6, "::ffff:127.0.0.1", a6);
  assert_true(cfg_cidr_contains(&m, AF_INET6, a6));
  inet_pton(AF_INET, "127.0.0.2", a4);
  assert_false(cfg_cidr_contains(&m, AF_INET, a4));
  assert_int_equal(cfg_cidr_parse("::ffff:10.0.0.0/104", &m), 0);
  assert_int_equal(m.prefix, 8);
  const cfg_bus *b = &c->buses[0];
  assert_true(b->registration_every_packet);
  assert_int_equal(b->hblen, 2);
  assert_int_equal(b->heartbeat[0], 0xFE);
  assert_int_equal(b->heartbeat[1], 0x01);
  assert_int_equal(b->baud, 19200);
  assert_int_equal(b->timeout_ms, 3000);
  assert_int_equal(b->sim_heartbeat_ms, 200);
  char t[CFG_REG_TEXT_MAX];
  assert_string_equal(cfg_bus_registration_text(&c->buses[1], t, sizeof t), "hex:AA0131");
  cfg_free(c);
}

static void test_cidr_parse(void **state) {
  (void)state;
  cfg_cidr r;
  assert_int_equal(cfg_cidr_parse("192.168.1.0/24", &r), 0);
  assert_int_equal(r.prefix, 24);
  assert_int_equal(cfg_cidr_parse("0.0.0.0/0", &r), 0);
  uint8_t a4[4] = {8, 8, 8, 8};
  assert_true(cfg_cidr_contains(&r, AF_INET, a4));
  assert_int_equal(cfg_cidr_parse("10.0.0.0/33", &r), -1);
  assert_int_equal(cfg_cidr_parse("10.0.0/8", &r), -1);
  assert_int_equal(cfg_cidr_parse("10.0.0.0/", &r), -1);
  assert_int_equal(cfg_cidr_parse("host.example/8", &r), -1);
  assert_int_equal(cfg_cidr_parse("fe80::/129", &r), -1);
  assert_int_equal(cfg_cidr_parse("fe80::/10", &r), 0);
  assert_int_equal(r.family, AF_INET6);
}

static void test_errors(void **state) {
  (void)state;
  expect_error_at(HEAD SERVER BUSES
                  "  - id: canal-3\n"
                  "    transport: rtu-dtu\n"
                  "    registration: KKY\n" METERS,
                  8, 5, "missing required key \"server\"");
  expect_error_at(HEAD SERVER BUSES
                  "  - id: canal-3\n"
                  "    transport: rtu-dtu\n"
                  "    server: nowhere\n"
                  "    registration: KKY\n" METERS,
                  10, 13, "unknown DTU server \"nowhere\"");
  expect_error_at(HEAD SERVER BUSES
                  "  - id: canal-3\n"
                  "    transport: rtu-dtu\n"
                  "    server: dtu-in\n" METERS,
                  8, 5, "missing required key \"registration\"");
  expect_error_at(HEAD SERVER BUSES DTU_BUS "    heartbeat: \"hex:F\"\n" METERS,
                  12, 16, "expected 1..40 bytes");
  expect_error_at(HEAD SERVER BUSES DTU_BUS
                  "    registration_every_packet: maybe\n" METERS,
                  12, 32, "");
  expect_error_at(HEAD SERVER BUSES DTU_BUS
                  "    host: 127.0.0.1\n" METERS,
                  12, 5, "key \"host\" does not apply to an rtu-dtu bus");
  expect_error_at(HEAD SERVER BUSES DTU_BUS
                  "  - id: canal-4\n"
                  "    transport: rtu-dtu\n"
                  "    server: dtu-in\n"
                  "    registration: KKY-DTU-03\n" METERS,
                  15, 19, "bus \"canal-3\" has the same registration");
  expect_error_at(HEAD SERVER BUSES
                  "  - {id: tcp-1, transport: tcp, host: 127.0.0.1, port: 502, "
                  "registration: x}\n" METERS,
                  8, 61, "key \"registration\" does not apply to a tcp bus");
  expect_error_at(HEAD "dtu_servers:\n  - id: dtu-in\n    listen: localhost:9000\n"
                  BUSES DTU_BUS METERS,
                  6, 13, "expected ADDRESS:PORT");
  expect_error_at(HEAD "dtu_servers:\n  - id: dtu-in\n    listen: 0.0.0.0:9000\n"
                  "    allow: [10.0.0.0/40]\n" BUSES DTU_BUS METERS,
                  7, 13, "expected an address range");
  expect_error_at(HEAD "dtu_servers:\n  - id: dtu-in\n    listen: 0.0.0.0:9000\n"
                  "    allow: []\n" BUSES DTU_BUS METERS,
                  7, 12, "allow lists no address range");
  expect_error_at(HEAD SERVER "  - id: dtu-in\n    listen: 0.0.0.0:9001\n"
                  BUSES DTU_BUS METERS,
                  7, 9, "duplicate DTU server id");
  expect_error_at(HEAD SERVER "  - id: dtu-2\n    listen: 0.0.0.0:9000\n"
                  BUSES DTU_BUS METERS,
                  8, 13, "DTU server \"dtu-in\" listens on the same address");
  /* A wildcard takes every address of its port. */
  expect_error_at(HEAD SERVER "  - id: dtu-2\n    listen: 127.0.0.1:9000\n"
                  BUSES DTU_BUS METERS,
                  8, 13, "same address (one of the two takes every address of the port)");
  expect_error_at(HEAD SERVER "  - id: dtu-2\n    listen: \"[::]:9000\"\n"
                  BUSES DTU_BUS METERS,
                  8, 13, "same address (one of the two takes every address of the port)");
  cfg *c = load_ok(HEAD SERVER "  - id: dtu-2\n    listen: \"[::1]:9000\"\n"
                   "  - id: dtu-3\n    listen: 127.0.0.1:9001\n"
                   "  - id: dtu-4\n    listen: 127.0.0.2:9001\n" BUSES DTU_BUS METERS);
  assert_int_equal(c->ndtu_servers, 4);
  cfg_free(c);
  expect_error_at(HEAD SERVER "    bogus: 1\n" BUSES DTU_BUS METERS,
                  7, 5, "bogus");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_everything),
      cmocka_unit_test(test_cidr_parse),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
