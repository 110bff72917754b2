/* intake-sim's meter model: physics, pinned values and fault decisions. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mb_decode.h"
#include "mb_proto.h"
#include "profile.h"
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

static void pin(cfg_meter *m, const char *field, double v) {
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
  };
  return cmocka_run_group_tests(tests, load_profiles, free_profiles);
}
