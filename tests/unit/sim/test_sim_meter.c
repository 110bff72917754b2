/* intake-sim's meter model: physics, pinned values and fault decisions. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proto/mb_decode.h"
#include "proto/mb_proto.h"
#include "profile/profile.h"
#include "profile_load.h"
#include "sim_meter.h"

static mb_profile *tuf;
static mb_profile *oc;

static int load_profiles(void **state) {
  (void)state;
  char err[512];
  tuf = profile_load("tuf2000m", NULL, NULL, err, sizeof err);
  oc = profile_load("open-channel", NULL, NULL, err, sizeof err);
  return tuf && oc ? 0 : -1;
}

static int free_profiles(void **state) {
  (void)state;
  profile_free(tuf);
  profile_free(oc);
  return 0;
}

static void base_meter(cfg_meter *m, const mb_profile *p) {
  memset(m, 0, sizeof *m);
  strcpy(m->id, "M1");
  m->unit = 1;
  m->profile = p;
  m->interval_ms = 1000;
  m->sim.mean_flow_m3h = 100;
  m->sim.pipe_diameter_m = 0.5;
  m->sim.noise = 0.02;
  m->sim.seed = 7;
  m->sim.flaky_ratio = 0.5;
  m->sim.crc_ratio = 1.0;
  m->sim.slow_delay_ms = 1500;
  m->sim.exception_code = 4;
}

static cfg_fixed pinned[CFG_FIXED_MAX];

static void pin(cfg_meter *m, const char *field, double v) {
  if (!m->sim.fixed) m->sim.fixed = pinned;
  strcpy(m->sim.fixed[m->sim.nfixed].field, field);
  m->sim.fixed[m->sim.nfixed].value = v;
  m->sim.nfixed++;
}

/* Read registers through the request path, as a client would. */
static void read_regs(sim_meter *sm, uint8_t fc, uint16_t addr, uint16_t count,
                      double now, sim_action *act, uint16_t *regs) {
  uint8_t req[8];
  assert_int_equal(mb_pdu_read_req(req, sizeof req, fc, addr, count), 5);
  sim_meter_handle(sm, req, 5, now, act);
  if (regs) {
    uint8_t exc = 0;
    assert_int_equal(mb_pdu_parse_read_resp(act->pdu, act->pdulen, fc, count,
                                            regs, &exc), MB_OK);
  }
}

static double tuf_total(sim_meter *sm, double now) {
  sim_action act;
  uint16_t r[4];
  read_regs(sm, MB_FC_READ_HOLDING, 8, 4, now, &act, r);
  int32_t integer = (int32_t)mb_get32(r, MB_ORDER_CDAB);
  double frac = mb_decode(r + 2, MB_T_F32, MB_ORDER_CDAB);
  return integer + frac;
}

static void test_pinned_values_in_registers(void **state) {
  (void)state;
  cfg_meter m;
  base_meter(&m, tuf);
  pin(&m, "flow_m3h", 36.62540817); /* the float 0x4212806B */
  sim_meter sm;
  assert_int_equal(sim_meter_init(&sm, &m, 1000.0), 0);
  sim_action act;
  uint16_t r[2];
  read_regs(&sm, MB_FC_READ_HOLDING, 0, 2, 1000.0, &act, r);
  /* The TUF-2000M manual's example: 0x806B, 0x4212. */
  assert_int_equal(r[0], 0x806B);
  assert_int_equal(r[1], 0x4212);
  sim_meter_free(&sm);
}

static void test_totalizer_integrates_flow(void **state) {
  (void)state;
  cfg_meter m;
  base_meter(&m, tuf);
  pin(&m, "flow_m3h", 3600.0); /* one cubic metre a second */
  m.sim.initial_total_m3 = 500.25;
  sim_meter sm;
  assert_int_equal(sim_meter_init(&sm, &m, 1000.0), 0);
  assert_true(fabs(tuf_total(&sm, 1000.0) - 500.25) < 1e-3);
  assert_true(fabs(tuf_total(&sm, 1010.0) - 510.25) < 1e-3);
  /* Time going backwards advances nothing. */
  assert_true(fabs(tuf_total(&sm, 1005.0) - 510.25) < 1e-3);
  sim_meter_free(&sm);
}

static void test_reset_fault_zeroes_once(void **state) {
  (void)state;
  cfg_meter m;
  base_meter(&m, tuf);
  pin(&m, "flow_m3h", 3600.0);
  m.sim.initial_total_m3 = 1000;
  sim_meter sm;
  assert_int_equal(sim_meter_init(&sm, &m, 0.0), 0);
  assert_true(tuf_total(&sm, 10.0) > 1009.0);
  sim_meter_set_fault(&sm, SIM_FAULT_RESET);
  assert_true(tuf_total(&sm, 10.0) < 1e-6);
  /* Once: afterwards it counts up again from zero. */
  assert_true(fabs(tuf_total(&sm, 15.0) - 5.0) < 1e-3);
  sim_meter_free(&sm);
}

static void test_flow_follows_mean_with_noise(void **state) {
  (void)state;
  cfg_meter m;
  base_meter(&m, tuf);
  sim_meter sm;
  assert_int_equal(sim_meter_init(&sm, &m, 0.0), 0);
  double lo = 1e9, hi = -1e9;
  for (int i = 0; i < 24 * 60; i++) {
    sim_action act;
    uint16_t r[2];
    read_regs(&sm, MB_FC_READ_HOLDING, 0, 2, i * 60.0, &act, r);
    double f = mb_decode(r, MB_T_F32, MB_ORDER_CDAB);
    if (f < lo) lo = f;
    if (f > hi) hi = f;
  }
  /* A daily pattern of about +-25 % plus a little noise around 100 m3/h. */
  assert_true(lo > 60 && lo < 85);
  assert_true(hi > 115 && hi < 140);
  sim_meter_free(&sm);
}

static void test_same_seed_same_values(void **state) {
  (void)state;
  cfg_meter m;
  base_meter(&m, tuf);
  sim_meter a, b;
  assert_int_equal(sim_meter_init(&a, &m, 0.0), 0);
  assert_int_equal(sim_meter_init(&b, &m, 0.0), 0);
  for (int i = 1; i < 50; i++) {
    sim_action x, y;
    uint16_t rx[2], ry[2];
    read_regs(&a, MB_FC_READ_HOLDING, 0, 2, i, &x, rx);
    read_regs(&b, MB_FC_READ_HOLDING, 0, 2, i, &y, ry);
    assert_memory_equal(rx, ry, sizeof rx);
  }
  sim_meter_free(&a);
  sim_meter_free(&b);
}

static void test_open_channel_units(void **state) {
  (void)state;
  cfg_meter m;
  base_meter(&m, oc);
  pin(&m, "flow_m3h", 720.0);
  pin(&m, "total_m3", 123456789.0);
  sim_meter sm;
  assert_int_equal(sim_meter_init(&sm, &m, 0.0), 0);
  sim_action act;
  uint16_t r[12];
  read_regs(&sm, MB_FC_READ_HOLDING, 0, 12, 0.0, &act, r);
  assert_true(fabs(mb_decode(r + 4, MB_T_F32, MB_ORDER_ABCD) - 0.2) < 1e-7);
  assert_int_equal(mb_get32(r + 8, MB_ORDER_ABCD), 1);
  assert_int_equal(mb_get32(r + 10, MB_ORDER_ABCD), 23456789);
  sim_meter_free(&sm);
}

static void test_requests_beyond_map_and_unknown_function(void **state) {
  (void)state;
  cfg_meter m;
  base_meter(&m, tuf);
  sim_meter sm;
  assert_int_equal(sim_meter_init(&sm, &m, 0.0), 0);
  sim_action act;
  read_regs(&sm, MB_FC_READ_HOLDING, (uint16_t)sm.nregs, 1, 0.0, &act, NULL);
  assert_int_equal(act.kind, SIM_ACT_ANSWER);
  assert_int_equal(act.pdulen, 2);
  assert_int_equal(act.pdu[0], 0x83);
  assert_int_equal(act.pdu[1], MB_EX_ILLEGAL_ADDRESS);

  uint8_t req[5] = {0x2B, 0x0E, 0x01, 0x00, 0x00}; /* device identification */
  sim_meter_handle(&sm, req, sizeof req, 0.0, &act);
  assert_int_equal(act.pdu[0], 0xAB);
  assert_int_equal(act.pdu[1], MB_EX_ILLEGAL_FUNCTION);

  uint8_t shorty[2] = {0x03, 0x00};
  sim_meter_handle(&sm, shorty, sizeof shorty, 0.0, &act);
  assert_int_equal(act.kind, SIM_ACT_DROP);
  sim_meter_free(&sm);
}

static void test_fault_actions(void **state) {
  (void)state;
  cfg_meter m;
  base_meter(&m, tuf);
  sim_meter sm;
  assert_int_equal(sim_meter_init(&sm, &m, 0.0), 0);
  sim_action act;

  sim_meter_set_fault(&sm, SIM_FAULT_OFFLINE);
  read_regs(&sm, MB_FC_READ_HOLDING, 0, 2, 0.0, &act, NULL);
  assert_int_equal(act.kind, SIM_ACT_DROP);

  sim_meter_set_fault(&sm, SIM_FAULT_EXCEPTION);
  read_regs(&sm, MB_FC_READ_HOLDING, 0, 2, 0.0, &act, NULL);
  assert_int_equal(act.kind, SIM_ACT_ANSWER);
  assert_int_equal(act.pdu[0], 0x83);
  assert_int_equal(act.pdu[1], 4);

  sim_meter_set_fault(&sm, SIM_FAULT_CRC);
  read_regs(&sm, MB_FC_READ_HOLDING, 0, 2, 0.0, &act, NULL);
  assert_int_equal(act.kind, SIM_ACT_BAD_CRC);

  sim_meter_set_fault(&sm, SIM_FAULT_SLOW);
  read_regs(&sm, MB_FC_READ_HOLDING, 0, 2, 0.0, &act, NULL);
  assert_int_equal(act.kind, SIM_ACT_DELAY);
  assert_int_equal(act.delay_ms, 1500);

  sim_meter_set_fault(&sm, SIM_FAULT_GARBAGE);
  read_regs(&sm, MB_FC_READ_HOLDING, 0, 2, 0.0, &act, NULL);
  assert_int_equal(act.kind, SIM_ACT_GARBAGE);
  assert_true(act.garbage_len >= 5 && act.garbage_len <= sizeof act.garbage);

  sim_meter_set_fault(&sm, SIM_FAULT_FLAKY);
  int dropped = 0;
  for (int i = 0; i < 1000; i++) {
    read_regs(&sm, MB_FC_READ_HOLDING, 0, 2, 0.0, &act, NULL);
    if (act.kind == SIM_ACT_DROP) dropped++;
  }
  assert_true(dropped > 400 && dropped < 600); /* flaky_ratio 0.5 */

  sim_meter_set_fault(&sm, SIM_FAULT_NONE);
  read_regs(&sm, MB_FC_READ_HOLDING, 0, 2, 0.0, &act, NULL);
  assert_int_equal(act.kind, SIM_ACT_ANSWER);
  assert_int_equal(act.pdu[0], 0x03);
  sim_meter_free(&sm);
}

static void test_pin_unknown_field(void **state) {
  (void)state;
  cfg_meter m;
  base_meter(&m, tuf);
  sim_meter sm;
  assert_int_equal(sim_meter_init(&sm, &m, 0.0), 0);
  assert_int_equal(sim_meter_pin(&sm, "no_such_field", 1.0, true), -1);
  assert_int_equal(sim_meter_pin(&sm, "flow_m3h", 12.5, true), 0);
  sim_action act;
  uint16_t r[2];
  read_regs(&sm, MB_FC_READ_HOLDING, 0, 2, 1.0, &act, r);
  assert_true(fabs(mb_decode(r, MB_T_F32, MB_ORDER_CDAB) - 12.5) < 1e-6);
  sim_meter_free(&sm);
}

/* A meter that reports its flow in FLOW_UNIT and its totalizer in litres,
 * both as big-endian f64 (exact enough to compare closely). */
static mb_profile *unit_profile(const char *flow_unit) {
  char text[512];
  snprintf(text, sizeof text,
           "name: units\n"
           "table: holding\n"
           "word_order: abcd\n"
           "fields:\n"
           "  - {name: flow, role: flow, unit: \"%s\", address: 0, type: f64}\n"
           "  - {name: total_l, role: total, unit: L, address: 4, type: f64}\n",
           flow_unit);
  char err[512];
  mb_profile *p = profile_load_string("units", text, strlen(text), err, sizeof err);
  if (!p) fail_msg("%s", err);
  return p;
}

static void read_f64_pair(sim_meter *sm, double now, double *flow, double *total) {
  sim_action act;
  uint16_t r[8];
  read_regs(sm, MB_FC_READ_HOLDING, 0, 8, now, &act, r);
  *flow = mb_decode(r, MB_T_F64, MB_ORDER_ABCD);
  *total = mb_decode(r + 4, MB_T_F64, MB_ORDER_ABCD);
}

/* A pinned flow drives the totalizer whatever unit the field is in: 1 m3/s
 * in each unit fills 10 m3 (10000 L) in 10 s. */
static void test_pinned_flow_converts_from_every_unit(void **state) {
  (void)state;
  static const struct {
    const char *unit;
    double one_m3_per_s;
  } cases[] = {{"m3/h", 3600}, {"m3/s", 1},    {"m3/min", 60},
               {"L/s", 1000},  {"l/s", 1000}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    mb_profile *p = unit_profile(cases[i].unit);
    cfg_meter m;
    base_meter(&m, p);
    pin(&m, "flow", cases[i].one_m3_per_s);
    m.sim.initial_total_m3 = 2.0;
    sim_meter sm;
    assert_int_equal(sim_meter_init(&sm, &m, 100.0), 0);
    double flow, total;
    read_f64_pair(&sm, 100.0, &flow, &total);
    assert_true(fabs(flow - cases[i].one_m3_per_s) < 1e-9);
    assert_true(fabs(total - 2000.0) < 1e-6);
    read_f64_pair(&sm, 110.0, &flow, &total);
    if (fabs(total - 12000.0) > 1e-6)
      fail_msg("unit %s: total %.6f L after 10 s, expected 12000", cases[i].unit,
               total);
    sim_meter_free(&sm);
    profile_free(p);
  }
}

/* Unpinned, the flow is written in each field's unit: the same canonical
 * flow reads back consistently in every unit. */
static void test_unpinned_flow_in_every_unit(void **state) {
  (void)state;
  static const struct {
    const char *unit;
    double per_m3h;
  } cases[] = {{"m3/h", 1}, {"m3/s", 1 / 3600.0}, {"m3/min", 1 / 60.0},
               {"L/s", 1 / 3.6}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    mb_profile *p = unit_profile(cases[i].unit);
    cfg_meter m;
    base_meter(&m, p);
    sim_meter sm;
    assert_int_equal(sim_meter_init(&sm, &m, 100.0), 0);
    double flow, total;
    read_f64_pair(&sm, 100.0, &flow, &total);
    assert_true(fabs(flow - sm.flow_m3h * cases[i].per_m3h) <
                1e-9 * sm.flow_m3h);
    sim_meter_free(&sm);
    profile_free(p);
  }
}

/* While the totalizer is pinned it holds still; unpinned, it counts on from
 * the pinned value instead of jumping to what the flow would have added. */
static void test_pinned_total_holds_then_continues(void **state) {
  (void)state;
  cfg_meter m;
  base_meter(&m, tuf);
  pin(&m, "flow_m3h", 3600.0);
  pin(&m, "total_m3", 500.0);
  sim_meter sm;
  assert_int_equal(sim_meter_init(&sm, &m, 1000.0), 0);
  assert_true(fabs(tuf_total(&sm, 1000.0) - 500.0) < 1e-3);
  assert_true(fabs(tuf_total(&sm, 1010.0) - 500.0) < 1e-3);
  assert_int_equal(sim_meter_pin(&sm, "total_m3", 0, false), 0);
  assert_true(fabs(tuf_total(&sm, 1010.0) - 500.0) < 1e-3);
  assert_true(fabs(tuf_total(&sm, 1015.0) - 505.0) < 1e-3);
  /* Pinned again at run time: the new value holds, then counts on. */
  assert_int_equal(sim_meter_pin(&sm, "total_m3", 42.0, true), 0);
  assert_true(fabs(tuf_total(&sm, 1020.0) - 42.0) < 1e-3);
  assert_int_equal(sim_meter_pin(&sm, "total_m3", 0, false), 0);
  assert_true(fabs(tuf_total(&sm, 1022.0) - 44.0) < 1e-3);
  sim_meter_free(&sm);
}

/* A totalizer pinned in litres moves the integrator in cubic metres. */
static void test_pinned_total_in_litres(void **state) {
  (void)state;
  mb_profile *p = unit_profile("m3/h");
  cfg_meter m;
  base_meter(&m, p);
  pin(&m, "flow", 3600.0);
  pin(&m, "total_l", 5000.0);
  sim_meter sm;
  assert_int_equal(sim_meter_init(&sm, &m, 0.0), 0);
  double flow, total;
  read_f64_pair(&sm, 3.0, &flow, &total);
  assert_true(fabs(total - 5000.0) < 1e-6);
  assert_int_equal(sim_meter_pin(&sm, "total_l", 0, false), 0);
  read_f64_pair(&sm, 4.0, &flow, &total);
  assert_true(fabs(total - 6000.0) < 1e-6);
  sim_meter_free(&sm);
  profile_free(p);
}

/* A reset does not move a pinned totalizer. */
static void test_reset_leaves_pinned_total(void **state) {
  (void)state;
  cfg_meter m;
  base_meter(&m, tuf);
  pin(&m, "flow_m3h", 3600.0);
  pin(&m, "total_m3", 700.0);
  sim_meter sm;
  assert_int_equal(sim_meter_init(&sm, &m, 0.0), 0);
  sim_meter_set_fault(&sm, SIM_FAULT_RESET);
  assert_true(fabs(tuf_total(&sm, 1.0) - 700.0) < 1e-3);
  assert_int_equal(sim_meter_pin(&sm, "total_m3", 0, false), 0);
  assert_true(fabs(tuf_total(&sm, 2.0) - 701.0) < 1e-3);
  sim_meter_free(&sm);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pinned_values_in_registers),
      cmocka_unit_test(test_totalizer_integrates_flow),
      cmocka_unit_test(test_reset_fault_zeroes_once),
      cmocka_unit_test(test_flow_follows_mean_with_noise),
      cmocka_unit_test(test_same_seed_same_values),
      cmocka_unit_test(test_open_channel_units),
      cmocka_unit_test(test_requests_beyond_map_and_unknown_function),
      cmocka_unit_test(test_fault_actions),
      cmocka_unit_test(test_pin_unknown_field),
      cmocka_unit_test(test_pinned_flow_converts_from_every_unit),
      cmocka_unit_test(test_unpinned_flow_in_every_unit),
      cmocka_unit_test(test_pinned_total_holds_then_continues),
      cmocka_unit_test(test_pinned_total_in_litres),
      cmocka_unit_test(test_reset_leaves_pinned_total),
  };
  return cmocka_run_group_tests(tests, load_profiles, free_profiles);
}
