/* Meter profiles: the built-in register maps, field decoding and encoding
 * (round trips for every built-in field), and positioned validation errors. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "profile/profile.h"
#include "profile_load.h"

#define H MB_TABLE_HOLDING
#define I MB_TABLE_INPUT
#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------ helpers */

/* A register map the size of the address space, per table, with a record
 * of which registers were written. */
typedef struct {
  uint16_t regs[2][65536];
  uint8_t read_ok[2][65536];
} regmap;

static regmap *map_new(void) {
  regmap *m = calloc(1, sizeof *m);
  assert_non_null(m);
  memset(m->read_ok, 1, sizeof m->read_ok);
  return m;
}

static void map_put(void *ctx, mb_table table, uint16_t address,
                    const uint16_t *words, uint16_t nwords) {
  regmap *m = ctx;
  for (uint16_t i = 0; i < nwords; i++)
    m->regs[table][(uint16_t)(address + i)] = words[i];
}

static const uint16_t *map_words(void *ctx, mb_table table, uint16_t address,
                                 uint16_t nwords) {
  regmap *m = ctx;
  for (uint32_t i = 0; i < nwords; i++)
    if (address + i > 65535u || !m->read_ok[table][address + i])
      return NULL;
  return &m->regs[table][address];
}

static mb_profile *load(const char *name) {
  char err[512] = "";
  mb_profile *p = profile_load(name, NULL, NULL, err, sizeof err);
  if (p == NULL)
    fail_msg("%s", err);
  return p;
}

static mb_profile *parse(const char *text, char *err, size_t errlen) {
  return profile_load_string("t.yaml", text, strlen(text), err, errlen);
}

static const prof_field *field(const mb_profile *p, const char *name) {
  int i = profile_field_index(p, name);
  if (i < 0)
    fail_msg("no field %s in %s", name, p->name);
  return &p->fields[i];
}

static void expect_part(const prof_part *pt, mb_table t, uint16_t addr,
                        mb_type type, mb_word_order o, double scale) {
  assert_int_equal(pt->table, t);
  assert_int_equal(pt->address, addr);
  assert_int_equal(pt->type, type);
  assert_int_equal(pt->order, o);
  assert_true(pt->scale == scale);
}

static double decode(const prof_field *f, regmap *m, int *rc, char *err,
                     size_t errlen) {
  double v = NAN;
  *rc = profile_decode_field(f, map_words, m, &v, err, errlen);
  return v;
}

static double decode_ok(const prof_field *f, regmap *m) {
  char err[256] = "";
  int rc;
  double v = decode(f, m, &rc, err, sizeof err);
  if (rc != 0)
    fail_msg("%s: %s", f->name, err);
  return v;
}

/* ------------------------------------------------------ built-in maps */

static void test_builtin_tuf2000m(void **state) {
  (void)state;
  mb_profile *p = load("tuf2000m");
  assert_string_equal(p->name, "tuf2000m");
  assert_int_equal(p->max_gap, 8);
  assert_int_equal(p->max_registers, 125);
  assert_non_null(strstr(p->path, "drivers/profiles/tuf2000m.yaml"));
  assert_int_equal(p->nfields, 6);

  const prof_field *f = field(p, "flow_m3h");
  assert_int_equal(f->role, PROF_ROLE_FLOW);
  assert_string_equal(f->unit, "m3/h");
  assert_int_equal(f->nparts, 1);
  expect_part(&f->parts[0], H, 0, MB_T_F32, MB_ORDER_CDAB, 1);

  f = field(p, "velocity_ms");
  assert_int_equal(f->role, PROF_ROLE_VELOCITY);
  assert_string_equal(f->unit, "m/s");
  expect_part(&f->parts[0], H, 4, MB_T_F32, MB_ORDER_CDAB, 1);

  f = field(p, "total_m3");
  assert_int_equal(f->role, PROF_ROLE_TOTAL);
  assert_string_equal(f->unit, "m3");
  assert_int_equal(f->nparts, 2);
  expect_part(&f->parts[0], H, 8, MB_T_I32, MB_ORDER_CDAB, 1);
  expect_part(&f->parts[1], H, 10, MB_T_F32, MB_ORDER_CDAB, 1);
  assert_true(f->rollover == 0);

  f = field(p, "net_total_m3");
  assert_int_equal(f->role, PROF_ROLE_NET_TOTAL);
  expect_part(&f->parts[0], H, 24, MB_T_I32, MB_ORDER_CDAB, 1);
  expect_part(&f->parts[1], H, 26, MB_T_F32, MB_ORDER_CDAB, 1);

  f = field(p, "error_bits");
  assert_int_equal(f->role, PROF_ROLE_STATUS);
  expect_part(&f->parts[0], H, 71, MB_T_U16, MB_ORDER_CDAB, 1);
  assert_int_equal(f->mask, 0xFFFF);

  f = field(p, "signal_quality");
  assert_int_equal(f->role, PROF_ROLE_SIGNAL);
  expect_part(&f->parts[0], H, 91, MB_T_U16, MB_ORDER_CDAB, 1);
  assert_int_equal(f->mask, 0x00FF);
  assert_int_equal(f->shift, 0);
  assert_true(f->has_range);
  assert_true(f->min == 0 && f->max == 99);

  for (size_t i = 0; i < p->nfields; i++) {
    assert_false(p->fields[i].has_unit_reg);
    assert_true(p->fields[i].scale == 1 && p->fields[i].offset == 0);
  }
  profile_free(p);
}

static void test_builtin_mag00h(void **state) {
  (void)state;
  mb_profile *p = load("mag-00h");
  assert_int_equal(p->nfields, 6);
  const prof_field *f = field(p, "flow_m3h");
  assert_int_equal(f->role, PROF_ROLE_FLOW);
  expect_part(&f->parts[0], H, 0, MB_T_F32, MB_ORDER_ABCD, 1);
  assert_true(f->has_unit_reg);
  assert_int_equal(f->unit_reg.table, H);
  assert_int_equal(f->unit_reg.address, 2);
  assert_int_equal(f->ncodes, 6);
  const double flow_mult[] = {3.6, 0.06, 0.001, 3600, 60, 1};
  for (uint16_t c = 0; c < 6; c++)
    assert_true(profile_unit_multiplier(f, c) == flow_mult[c]);
  assert_true(isnan(profile_unit_multiplier(f, 6)));

  f = field(p, "total_m3");
  assert_int_equal(f->role, PROF_ROLE_TOTAL);
  expect_part(&f->parts[0], H, 3, MB_T_I32, MB_ORDER_ABCD, 1);
  expect_part(&f->parts[1], H, 5, MB_T_F32, MB_ORDER_ABCD, 1);
  assert_int_equal(f->unit_reg.address, 7);
  const double tot_mult[] = {0.001, 1, 10, 100};
  assert_int_equal(f->ncodes, 4);
  for (uint16_t c = 0; c < 4; c++)
    assert_true(profile_unit_multiplier(f, c) == tot_mult[c]);

  const char *alarms[] = {"alarm_excitation", "alarm_electrode",
                          "alarm_empty_pipe"};
  for (size_t i = 0; i < 3; i++) {
    f = field(p, alarms[i]);
    assert_int_equal(f->role, PROF_ROLE_STATUS);
    expect_part(&f->parts[0], H, (uint16_t)(0x0D + i), MB_T_U16,
                MB_ORDER_ABCD, 1);
  }
  f = field(p, "velocity_ms");
  expect_part(&f->parts[0], H, 0x12, MB_T_F32, MB_ORDER_ABCD, 1);
  assert_int_equal(profile_role_index(p, PROF_ROLE_STATUS),
                   profile_field_index(p, "alarm_excitation"));
  profile_free(p);
}

static void test_builtin_open_channel(void **state) {
  (void)state;
  mb_profile *p = load("open-channel");
  assert_int_equal(p->nfields, 6);
  const prof_field *f = field(p, "velocity_ms");
  assert_int_equal(f->role, PROF_ROLE_VELOCITY);
  expect_part(&f->parts[0], H, 0, MB_T_F32, MB_ORDER_ABCD, 1);
  f = field(p, "level_m");
  assert_int_equal(f->role, PROF_ROLE_LEVEL);
  assert_string_equal(f->unit, "m");
  expect_part(&f->parts[0], H, 2, MB_T_F32, MB_ORDER_ABCD, 1);
  f = field(p, "flow_m3s");
  assert_int_equal(f->role, PROF_ROLE_NONE);
  expect_part(&f->parts[0], H, 4, MB_T_F32, MB_ORDER_ABCD, 1);
  f = field(p, "flow_m3h");
  assert_int_equal(f->role, PROF_ROLE_FLOW);
  expect_part(&f->parts[0], H, 4, MB_T_F32, MB_ORDER_ABCD, 1);
  assert_true(f->scale == 3600);
  f = field(p, "hourly_flow_m3h");
  expect_part(&f->parts[0], H, 6, MB_T_F32, MB_ORDER_ABCD, 1);
  f = field(p, "total_m3");
  assert_int_equal(f->role, PROF_ROLE_TOTAL);
  assert_int_equal(f->nparts, 2);
  expect_part(&f->parts[0], H, 8, MB_T_U32, MB_ORDER_ABCD, 1e8);
  expect_part(&f->parts[1], H, 10, MB_T_U32, MB_ORDER_ABCD, 1);
  assert_int_equal(profile_role_index(p, PROF_ROLE_FLOW),
                   profile_field_index(p, "flow_m3h"));
  profile_free(p);
}

static void test_lookups(void **state) {
  (void)state;
  mb_profile *p = load("tuf2000m");
  assert_int_equal(profile_field_index(p, "flow_m3h"), 0);
  assert_int_equal(profile_field_index(p, "nope"), -1);
  assert_int_equal(profile_role_index(p, PROF_ROLE_TOTAL), 2);
  assert_int_equal(profile_role_index(p, PROF_ROLE_LEVEL), -1);
  assert_string_equal(profile_role_name(PROF_ROLE_NONE), "none");
  assert_string_equal(profile_role_name(PROF_ROLE_FLOW), "flow");
  assert_string_equal(profile_role_name(PROF_ROLE_NET_TOTAL), "net_total");
  assert_string_equal(profile_role_name(PROF_ROLE_SIGNAL), "signal");
  assert_non_null(profile_builtin_dir());
  profile_free(p);
  profile_free(NULL);
}

/* ------------------------------------------------------- decoding */

static void test_tuf_manual_example(void **state) {
  (void)state;
  mb_profile *p = load("tuf2000m");
  regmap *m = map_new();
  m->regs[H][0] = 0x806B;
  m->regs[H][1] = 0x4212;
  assert_float_equal(decode_ok(field(p, "flow_m3h"), m), 36.6254, 1e-4);
  /* Totalizer, low word first: 123456 and 0.25. */
  m->regs[H][8] = 0xE240;
  m->regs[H][9] = 0x0001;
  m->regs[H][10] = 0x0000;
  m->regs[H][11] = 0x3E80;
  assert_true(decode_ok(field(p, "total_m3"), m) == 123456.25);
  /* Net totalizer below zero: -12 and -0.25. */
  m->regs[H][24] = 0xFFF4;
  m->regs[H][25] = 0xFFFF;
  m->regs[H][26] = 0x0000;
  m->regs[H][27] = 0xBE80;
  assert_true(decode_ok(field(p, "net_total_m3"), m) == -12.25);
  /* Working step 3 in the high byte, quality 85 in the low one. */
  m->regs[H][91] = 0x0355;
  assert_true(decode_ok(field(p, "signal_quality"), m) == 85);
  m->regs[H][71] = 0x0009;
  assert_true(decode_ok(field(p, "error_bits"), m) == 9);
  free(m);
  profile_free(p);
}

static void test_decode_errors(void **state) {
  (void)state;
  mb_profile *p = load("tuf2000m");
  regmap *m = map_new();
  char err[256];
  int rc;
  const prof_field *flow = field(p, "flow_m3h");
  const prof_field *total = field(p, "total_m3");

  /* NaN and infinities are failed polls, not values. */
  m->regs[H][0] = 0x0000;
  m->regs[H][1] = 0x7FC0;
  decode(flow, m, &rc, err, sizeof err);
  assert_int_equal(rc, -1);
  assert_non_null(strstr(err, "NaN"));
  m->regs[H][1] = 0x7F80;
  decode(flow, m, &rc, err, sizeof err);
  assert_int_equal(rc, -1);
  assert_non_null(strstr(err, "infinite"));
  m->regs[H][1] = 0xFF80;
  decode(flow, m, &rc, err, sizeof err);
  assert_int_equal(rc, -1);

  /* Totalizer fraction of 1.5, 1.0, NaN: refused. */
  m->regs[H][8] = 12;
  m->regs[H][9] = 0;
  m->regs[H][10] = 0x0000;
  m->regs[H][11] = 0x3FC0; /* 1.5f */
  decode(total, m, &rc, err, sizeof err);
  assert_int_equal(rc, -1);
  assert_non_null(strstr(err, "fraction"));
  m->regs[H][11] = 0x3F80; /* 1.0f */
  decode(total, m, &rc, err, sizeof err);
  assert_int_equal(rc, -1);
  m->regs[H][11] = 0xBF80; /* -1.0f */
  decode(total, m, &rc, err, sizeof err);
  assert_int_equal(rc, -1);
  m->regs[H][11] = 0x7FC0; /* NaN */
  decode(total, m, &rc, err, sizeof err);
  assert_int_equal(rc, -1);
  m->regs[H][10] = 0xFFFF; /* 0x3F7FFFFF: the largest float below 1 */
  m->regs[H][11] = 0x3F7F;
  assert_float_equal(decode(total, m, &rc, err, sizeof err), 13.0, 1e-6);
  assert_int_equal(rc, 0);

  /* A register the poll did not read. */
  m->read_ok[H][11] = 0;
  decode(total, m, &rc, err, sizeof err);
  assert_int_equal(rc, -1);
  assert_non_null(strstr(err, "not read"));
  free(m);
  profile_free(p);
}

static void test_unit_codes(void **state) {
  (void)state;
  mb_profile *p = load("mag-00h");
  regmap *m = map_new();
  const prof_field *flow = field(p, "flow_m3h");
  const prof_field *total = field(p, "total_m3");
  char err[256];
  int rc;

  /* 10.0f with each flow unit code. */
  m->regs[H][0] = 0x4120;
  m->regs[H][1] = 0x0000;
  const double flow_m3h[] = {36, 0.6, 0.01, 36000, 600, 10};
  for (uint16_t c = 0; c < 6; c++) {
    m->regs[H][2] = c;
    assert_float_equal(decode_ok(flow, m), flow_m3h[c], 1e-9);
  }
  m->regs[H][2] = 6;
  decode(flow, m, &rc, err, sizeof err);
  assert_int_equal(rc, -1);
  assert_non_null(strstr(err, "unknown unit code 6"));
  m->regs[H][2] = 0xFFFF;
  decode(flow, m, &rc, err, sizeof err);
  assert_int_equal(rc, -1);
  m->regs[H][2] = 5;
  m->read_ok[H][2] = 0;
  decode(flow, m, &rc, err, sizeof err);
  assert_int_equal(rc, -1);
  assert_non_null(strstr(err, "unit register"));
  m->read_ok[H][2] = 1;

  /* Totalizer 1234 + 0.5 in L, m3, x10 m3, x100 m3. */
  m->regs[H][3] = 0x0000;
  m->regs[H][4] = 0x04D2;
  m->regs[H][5] = 0x3F00;
  m->regs[H][6] = 0x0000;
  const double tot_m3[] = {1.2345, 1234.5, 12345, 123450};
  for (uint16_t c = 0; c < 4; c++) {
    m->regs[H][7] = c;
    assert_float_equal(decode_ok(total, m), tot_m3[c], 1e-9);
  }
  m->regs[H][7] = 4;
  decode(total, m, &rc, err, sizeof err);
  assert_int_equal(rc, -1);
  free(m);
  profile_free(p);
}

static void test_mask_shift_scale_offset(void **state) {
  (void)state;
  static const char text[] =
      "name: bits\n"
      "table: input\n"
      "fields:\n"
      "  - {name: hi, address: 0, type: u16, mask: 0xFF00, shift: 8}\n"
      "  - {name: mid, address: 0, type: u16, mask: 0x0F0, shift: 4}\n"
      "  - {name: lo, address: 0, type: u16, mask: 0x000F}\n"
      "  - {name: temp_c, address: 1, type: u16, scale: 0.1, offset: -40}\n"
      "  - {name: neg, address: 2, type: i16, scale: 0.5}\n"
      "  - {name: dir, address: 3, type: i32, scale: -1, table: holding}\n";
  char err[512] = "";
  mb_profile *p = parse(text, err, sizeof err);
  if (p == NULL)
    fail_msg("%s", err);
  regmap *m = map_new();
  m->regs[I][0] = 0x12A5;
  assert_true(decode_ok(field(p, "hi"), m) == 0x12);
  assert_true(decode_ok(field(p, "mid"), m) == 0xA);
  assert_true(decode_ok(field(p, "lo"), m) == 0x5);
  m->regs[I][1] = 650;
  assert_float_equal(decode_ok(field(p, "temp_c"), m), 25.0, 1e-9);
  m->regs[I][2] = 0xFFF6; /* -10 */
  assert_true(decode_ok(field(p, "neg"), m) == -5.0);
  m->regs[H][3] = 0x0000;
  m->regs[H][4] = 0x0007;
  assert_true(decode_ok(field(p, "dir"), m) == -7.0);

  /* Encoding writes the bits in place and nothing else. */
  regmap *e = map_new();
  assert_int_equal(profile_encode_field(field(p, "hi"), 0x34, -1, map_put, e),
                   0);
  assert_int_equal(e->regs[I][0], 0x3400);
  assert_int_equal(profile_encode_field(field(p, "mid"), 0xB, -1, map_put, e),
                   0);
  assert_int_equal(e->regs[I][0], 0x00B0);
  /* Above what the bits hold: saturated at the mask, not spilled over. */
  assert_int_equal(profile_encode_field(field(p, "lo"), 300, -1, map_put, e),
                   0);
  assert_int_equal(e->regs[I][0], 0x000F);
  assert_int_equal(
      profile_encode_field(field(p, "temp_c"), 25.0, -1, map_put, e), 0);
  assert_int_equal(e->regs[I][1], 650);
  assert_int_equal(profile_encode_field(field(p, "neg"), -5.0, -1, map_put, e),
                   0);
  assert_int_equal(e->regs[I][2], 0xFFF6);
  assert_int_equal(profile_encode_field(field(p, "dir"), -7, -1, map_put, e),
                   0);
  assert_int_equal(e->regs[H][4], 7);
  assert_int_equal(profile_encode_field(field(p, "dir"), NAN, -1, map_put, e),
                   -1);
  free(e);
  free(m);
  profile_free(p);
}

/* ------------------------------------------------------- round trips */

/* The values a field is tried with, by role. */
static size_t values_for(const prof_field *f, double *v) {
  size_t n = 0;
  switch (f->role) {
  case PROF_ROLE_TOTAL:
    v[n++] = 0;
    v[n++] = 0.25;
    v[n++] = 1;
    v[n++] = 0.999;
    v[n++] = 12.75;
    v[n++] = 123456.789;
    v[n++] = 99999999.0;
    v[n++] = 100000000.0;
    v[n++] = 100000001.5;
    v[n++] = 2000000000.125;
    break;
  case PROF_ROLE_NET_TOTAL:
    v[n++] = 0;
    v[n++] = -0.75;
    v[n++] = -12.25;
    v[n++] = -123456.5;
    v[n++] = 4321.0625;
    v[n++] = -2000000000.5;
    break;
  case PROF_ROLE_STATUS:
    v[n++] = 0;
    v[n++] = 1;
    v[n++] = 0x8001;
    v[n++] = 65535;
    break;
  case PROF_ROLE_SIGNAL:
    for (int q = 0; q <= 99; q += 11)
      v[n++] = q;
    v[n++] = 99;
    break;
  default:
    v[n++] = 0;
    v[n++] = 0.001;
    v[n++] = 1.5;
    v[n++] = 36.6254;
    v[n++] = 1234.567;
    v[n++] = 86400.25;
    v[n++] = -2.5; /* reverse flow */
    break;
  }
  return n;
}

/* How close a decoded value must come: a float part carries 24 bits, an
 * integer last part is rounded to its unit. */
static double tolerance(const prof_field *f, double v, double mult) {
  const prof_part *last = &f->parts[f->nparts - 1];
  double tol = fabs(v) * 2e-7 + 1e-12;
  if (f->nparts == 1)
    return last->type == MB_T_F32 ? tol : 1e-12; /* 16-bit: exact */
  if (last->type == MB_T_F32) /* a fraction below one unit of the part before */
    tol += 6e-8 * f->parts[f->nparts - 2].scale * fabs(f->scale) * mult;
  else
    tol += 0.5 * last->scale * fabs(f->scale) * mult;
  return tol;
}

static void roundtrip_profile(const char *name) {
  mb_profile *p = load(name);
  regmap *m = map_new();
  for (size_t i = 0; i < p->nfields; i++) {
    const prof_field *f = &p->fields[i];
    /* Unit codes: the default (-1), then each code in turn. */
    int ncodes = f->has_unit_reg ? (int)f->ncodes : 0;
    for (int ci = -1; ci < ncodes; ci++) {
      int code = ci < 0 ? -1 : f->codes[ci].code;
      double mult = ci < 0 ? 1.0 : f->codes[ci].multiplier;
      double vals[16];
      size_t nv = values_for(f, vals);
      for (size_t k = 0; k < nv; k++) {
        double v = vals[k];
        /* The LONG integer part holds at most 2^31 - 1 meter units. */
        if (f->nparts > 1 && f->parts[0].type == MB_T_I32 &&
            fabs(v / mult) >= 2147483647.0)
          continue;
        if (f->role == PROF_ROLE_TOTAL && f->parts[0].type == MB_T_U32 &&
            v < 0)
          continue;
        assert_int_equal(profile_encode_field(f, v, code, map_put, m), 0);
        if (f->has_unit_reg) {
          uint16_t want = (uint16_t)code;
          if (code < 0) /* the code worth 1 */
            for (size_t c = 0; c < f->ncodes; c++)
              if (f->codes[c].multiplier == 1.0)
                want = f->codes[c].code;
          assert_int_equal(m->regs[f->unit_reg.table][f->unit_reg.address],
                           want);
        }
        double got = decode_ok(f, m);
        double tol = tolerance(f, v, mult);
        if (fabs(got - v) > tol)
          fail_msg("%s.%s: %.9g -> %.9g (code %d, tolerance %g)", name,
                   f->name, v, got, code, tol);
      }
    }
  }
  free(m);
  profile_free(p);
}

static void test_roundtrip_tuf2000m(void **state) {
  (void)state;
  roundtrip_profile("tuf2000m");
}

static void test_roundtrip_mag00h(void **state) {
  (void)state;
  roundtrip_profile("mag-00h");
}

static void test_roundtrip_open_channel(void **state) {
  (void)state;
  roundtrip_profile("open-channel");
}

static void test_encode_splits(void **state) {
  (void)state;
  regmap *m = map_new();

  /* TUF totalizer: integer and fraction, low word first. */
  mb_profile *p = load("tuf2000m");
  assert_int_equal(
      profile_encode_field(field(p, "total_m3"), 123456.25, -1, map_put, m), 0);
  assert_int_equal(m->regs[H][8], 0xE240);
  assert_int_equal(m->regs[H][9], 0x0001);
  assert_int_equal(m->regs[H][10], 0x0000);
  assert_int_equal(m->regs[H][11], 0x3E80);
  /* Net total below zero: both parts negative. */
  assert_int_equal(
      profile_encode_field(field(p, "net_total_m3"), -12.25, -1, map_put, m),
      0);
  assert_int_equal(m->regs[H][24], 0xFFF4);
  assert_int_equal(m->regs[H][25], 0xFFFF);
  assert_int_equal(m->regs[H][26], 0x0000);
  assert_int_equal(m->regs[H][27], 0xBE80);
  /* A fraction that rounds to 1.0f carries into the integer. */
  assert_int_equal(profile_encode_field(field(p, "total_m3"),
                                        41.99999999, -1, map_put, m),
                   0);
  assert_int_equal(m->regs[H][8], 42);
  assert_int_equal(m->regs[H][10], 0);
  assert_int_equal(m->regs[H][11], 0);
  assert_float_equal(decode_ok(field(p, "total_m3"), m), 42.0, 1e-6);
  /* Beyond what the LONG holds: refused, not wrapped. */
  assert_int_equal(
      profile_encode_field(field(p, "total_m3"), 3e9, -1, map_put, m), -1);
  assert_int_equal(
      profile_encode_field(field(p, "total_m3"), INFINITY, -1, map_put, m),
      -1);
  /* The manual's flow example, written back (36.6254 is the float
   * 0x4212806B as the manual prints it, rounded). */
  float manual;
  uint32_t bits = 0x4212806Bu;
  memcpy(&manual, &bits, sizeof manual);
  assert_int_equal(profile_encode_field(field(p, "flow_m3h"), (double)manual,
                                        -1, map_put, m),
                   0);
  assert_int_equal(m->regs[H][0], 0x806B);
  assert_int_equal(m->regs[H][1], 0x4212);
  profile_free(p);

  /* Open-channel volume: high part in 10^8 m3, low part in m3. */
  p = load("open-channel");
  const prof_field *tot = field(p, "total_m3");
  assert_int_equal(profile_encode_field(tot, 1234567890123.0, -1, map_put, m),
                   0);
  assert_int_equal(m->regs[H][8], 0x0000);
  assert_int_equal(m->regs[H][9], 12345); /* 0x3039 */
  assert_int_equal(m->regs[H][10], 0x040B); /* 67890123 = 0x040BEBCB */
  assert_int_equal(m->regs[H][11], 0xEBCB);
  assert_true(decode_ok(tot, m) == 1234567890123.0);
  /* A low part that rounds up to 10^8 carries into the high part. */
  assert_int_equal(profile_encode_field(tot, 299999999.7, -1, map_put, m), 0);
  assert_int_equal(m->regs[H][9], 3);
  assert_int_equal(m->regs[H][11], 0);
  /* Both flow fields share one register and agree. */
  assert_int_equal(
      profile_encode_field(field(p, "flow_m3h"), 360.0, -1, map_put, m), 0);
  assert_float_equal(decode_ok(field(p, "flow_m3s"), m), 0.1, 1e-8);
  profile_free(p);

  /* mag-00h: written in the asked unit, the code stored with it. */
  p = load("mag-00h");
  const prof_field *flow = field(p, "flow_m3h");
  assert_int_equal(profile_encode_field(flow, 36.0, 0, map_put, m), 0);
  assert_int_equal(m->regs[H][2], 0);
  assert_int_equal(m->regs[H][0], 0x4120); /* 10 L/s */
  assert_int_equal(m->regs[H][1], 0x0000);
  assert_int_equal(profile_encode_field(flow, 36.0, -1, map_put, m), 0);
  assert_int_equal(m->regs[H][2], 5);
  assert_int_equal(m->regs[H][0], 0x4210); /* 36 m3/h */
  assert_int_equal(profile_encode_field(flow, 36.0, 9, map_put, m), -1);
  const prof_field *total = field(p, "total_m3");
  assert_int_equal(profile_encode_field(total, 123.456, 0, map_put, m), 0);
  assert_int_equal(m->regs[H][7], 0);
  assert_int_equal(m->regs[H][4], 123456 & 0xFFFF); /* litres */
  assert_float_equal(decode_ok(total, m), 123.456, 1e-6);
  profile_free(p);
  free(m);
}

/* ------------------------------------------------------- validation */

typedef struct {
  const char *text;
  const char *want; /* a substring of the error, often with its position */
} bad_case;

#define FIELD0 "name: t\nfields:\n"

static const bad_case bad_cases[] = {
    /* Structure. */
    {"", "t.yaml:1:1: the profile is empty"},
    {"- a\n", "t.yaml:1:1: expected a map for profile"},
    {"nme: t\nfields: []\n", "t.yaml:1:1: unknown key \"nme\""},
    {"fields:\n  - {name: a, address: 0, type: u16}\n", "has no name"},
    {"name: bad name\nfields: []\n", "t.yaml:1:7: expected an id"},
    {"name: t\n", "t.yaml:1:1: the profile has no fields"},
    {"name: t\nfields: []\n", "t.yaml:2:9: fields is empty"},
    {"name: t\nfields: {a: 1}\n", "t.yaml:2:9: expected a sequence"},
    {"name: t\ntable: coils\nfields: []\n",
     "t.yaml:2:8: expected holding or input"},
    {"name: t\nword_order: big\nfields: []\n", "t.yaml:2:13: expected abcd"},
    {"name: t\nmax_registers: 126\nfields: []\n", "t.yaml:2:16:"},
    {"name: t\nmax_registers: 0\nfields: []\n", "max_registers must be 1"},
    {"name: t\nmax_gap: -1\nfields: []\n", "t.yaml:2:10:"},
    /* Fields. */
    {FIELD0 "  - {name: a, address: 0, type: u16, colour: red}\n",
     "t.yaml:3:38: unknown key \"colour\" in field"},
    {FIELD0 "  - name: a\n    address: 0\n    type: f33\n",
     "t.yaml:5:11: unknown type 'f33'"},
    {FIELD0 "  - {name: Flow, address: 0, type: u16}\n",
     "t.yaml:3:12: field name 'Flow'"},
    {FIELD0 "  - {name: flow-rate, address: 0, type: u16}\n",
     "field name 'flow-rate'"},
    {FIELD0 "  - {address: 0, type: u16}\n", "t.yaml:3:5: field has no name"},
    {FIELD0 "  - {name: a, address: 0, type: u16}\n"
            "  - {name: b, address: 1, type: u16}\n"
            "  - {name: a, address: 2, type: u16}\n",
     "t.yaml:5:12: duplicate field name 'a' (first at line 3)"},
    {FIELD0 "  - {name: a, type: u16}\n", "has neither address and type"},
    {FIELD0 "  - {name: a, address: 0}\n", "field a has no type"},
    {FIELD0 "  - {name: a, address: 70000, type: u16}\n", "t.yaml:3:24:"},
    {FIELD0 "  - {name: a, address: -1, type: u16}\n", "t.yaml:3:24:"},
    {FIELD0 "  - {name: a, address: zero, type: u16}\n", "t.yaml:3:24:"},
    {FIELD0 "  - {name: a, address: 0xFFFF, type: f32}\n",
     "t.yaml:3:24: f32 at address 65535 needs 2 registers and runs past"},
    {FIELD0 "  - {name: a, address: 65533, type: u64}\n", "runs past"},
    {FIELD0 "  - {name: a, address: 65534, type: totalizer}\n", "runs past"},
    {FIELD0 "  - {name: a, address: 65533, type: totalizer}\n", "runs past"},
    {FIELD0 "  - {name: a, address: 0, type: u16, role: pressure}\n",
     "t.yaml:3:44: expected none, flow"},
    {FIELD0 "  - {name: a, address: 0, type: u16, table: coil}\n",
     "expected holding or input"},
    {FIELD0 "  - {name: a, address: 0, type: u32, word_order: 1234}\n",
     "expected abcd"},
    {FIELD0 "  - {name: a, address: 0, type: u16, scale: 0}\n",
     "t.yaml:3:45: scale must not be 0"},
    {FIELD0 "  - {name: a, address: 0, type: u16, scale: lots}\n",
     "t.yaml:3:45: expected a number"},
    {FIELD0 "  - {name: a, address: 0, type: u16, offset: nan}\n",
     "expected a number"},
    {FIELD0 "  - {name: a, address: 0, type: u16, unit: cubic_metres_per_hour}\n",
     "a unit is longer than 15 characters"},
    {FIELD0 "  - {name: a, address: 0, type: u16, min: 5, max: 1}\n",
     "min 5 is greater than max 1"},
    {FIELD0 "  - {name: a, address: 0, type: f32, rollover: 1000}\n",
     "rollover applies to a totalizer"},
    {FIELD0 "  - {name: a, role: total, address: 0, type: u32, rollover: 0}\n",
     "rollover must be greater than 0"},
    /* Bit fields. */
    {FIELD0 "  - {name: a, address: 0, type: u32, mask: 0xFF}\n",
     "t.yaml:3:44: mask applies to a 16-bit type (u16 or i16), not u32"},
    {FIELD0 "  - {name: a, address: 0, type: f32, shift: 2}\n",
     "shift applies to a 16-bit type"},
    {FIELD0 "  - {name: a, address: 0, type: u16, mask: 0x10000}\n",
     "t.yaml:3:44:"},
    {FIELD0 "  - {name: a, address: 0, type: u16, mask: 0}\n", "mask 0 keeps"},
    {FIELD0 "  - {name: a, address: 0, type: u16, shift: 16}\n", "t.yaml:3:45:"},
    {FIELD0 "  - {name: a, address: 0, type: u16, mask: 0x00FF, shift: 8}\n",
     "shift 8 moves every bit of mask 0x00FF out"},
    {FIELD0 "  - name: a\n    mask: 0xFF\n    parts:\n"
            "      - {address: 0, type: u16}\n      - {address: 1, type: u16}\n",
     "t.yaml:4:11: mask applies to a single 16-bit register"},
    /* Parts. */
    {FIELD0 "  - name: a\n    address: 0\n    parts:\n"
            "      - {address: 0, type: u16}\n",
     "t.yaml:4:14: field a has parts: address and type belong to each part"},
    {FIELD0 "  - {name: a, parts: []}\n", "parts is empty"},
    {FIELD0 "  - {name: a, parts: {address: 0}}\n", "expected a sequence"},
    {FIELD0 "  - name: a\n    parts:\n      - {address: 0, type: u32}\n"
            "      - {address: 1, type: u16}\n",
     "t.yaml:6:9: part 2 (holding u16 at 1) overlaps part 1 (u32 at 0)"},
    {FIELD0 "  - name: a\n    parts:\n      - {address: 0, type: u32}\n"
            "      - {address: 0, type: u32}\n",
     "overlaps part 1"},
    {FIELD0 "  - name: a\n    parts:\n      - {address: 0, type: f32}\n"
            "      - {address: 2, type: f32}\n",
     "part 1 is a f32: only the last part of a field may be a float"},
    {FIELD0 "  - name: a\n    parts:\n      - {address: 0, type: u32, scale: 1}\n"
            "      - {address: 2, type: u32, scale: 1000}\n",
     "part 2 has a larger scale"},
    {FIELD0 "  - name: a\n    parts:\n      - {address: 0, type: u32, scale: -1}\n",
     "a part's scale must be greater than 0"},
    {FIELD0 "  - name: a\n    parts:\n      - {address: 0, type: totalizer}\n",
     "t.yaml:5:28: type totalizer names a whole field"},
    {FIELD0 "  - name: a\n    parts:\n      - {type: u16}\n", "part has no address"},
    {FIELD0 "  - name: a\n    parts:\n      - {address: 0}\n", "part has no type"},
    {FIELD0 "  - name: a\n    parts:\n      - {address: 0, type: u16, mask: 1}\n",
     "unknown key \"mask\" in part"},
    {FIELD0 "  - name: a\n    parts:\n"
            "      - {address: 0, type: u16}\n      - {address: 1, type: u16}\n"
            "      - {address: 2, type: u16}\n      - {address: 3, type: u16}\n"
            "      - {address: 4, type: u16}\n",
     "at most 4 parts"},
    {FIELD0 "  - name: a\n    parts:\n      - {address: 65535, type: u32}\n",
     "runs past register 65535"},
    /* Unit registers. */
    {FIELD0 "  - {name: a, address: 0, type: f32, unit_register: {address: 1, "
            "codes: {0: 1}}}\n",
     "unit register 1 lies inside the field's own value registers"},
    {FIELD0 "  - {name: a, address: 0, type: f32, unit_register: {address: 2}}\n",
     "unit_register has no codes"},
    {FIELD0 "  - {name: a, address: 0, type: f32, unit_register: {codes: {0: 1}}}\n",
     "unit_register has no address"},
    {FIELD0 "  - {name: a, address: 0, type: f32, unit_register: {address: 2, "
            "codes: [1, 2]}}\n",
     "codes: expected a map"},
    {FIELD0 "  - {name: a, address: 0, type: f32, unit_register: {address: 2, "
            "codes: {}}}\n",
     "codes is empty"},
    {FIELD0 "  - name: a\n    address: 0\n    type: f32\n    unit_register:\n"
            "      address: 2\n      codes:\n        1: 1\n        0x01: 2\n",
     "t.yaml:10:9: unit code 1 appears twice"},
    {FIELD0 "  - name: a\n    address: 0\n    type: f32\n    unit_register:\n"
            "      address: 2\n      codes:\n        1: 0\n",
     "t.yaml:9:12: a unit multiplier must be greater than 0"},
    {FIELD0 "  - name: a\n    address: 0\n    type: f32\n    unit_register:\n"
            "      address: 2\n      codes:\n        L: 0.001\n",
     "t.yaml:9:9:"},
    {FIELD0 "  - {name: a, address: 0, type: f32, unit_register: {address: 2, "
            "type: u16, codes: {0: 1}}}\n",
     "unknown key \"type\" in unit_register"},
    /* YAML itself. */
    {"name: t\nfields:\n  - {name: a, address: 0, type: u16\n", "t.yaml:"},
    {"name: t\nname: u\nfields: []\n", "t.yaml:2:"},
};

static void test_validation_errors(void **state) {
  (void)state;
  int failures = 0;
  for (size_t i = 0; i < N(bad_cases); i++) {
    char err[512] = "";
    mb_profile *p = parse(bad_cases[i].text, err, sizeof err);
    int line = 0, col = 0;
    if (p != NULL) {
      print_error("case %zu accepted:\n%s", i, bad_cases[i].text);
      profile_free(p);
      failures++;
    } else if (strstr(err, bad_cases[i].want) == NULL) {
      print_error("case %zu: want \"%s\"\n  got \"%s\"\n", i,
                  bad_cases[i].want, err);
      failures++;
    } else if (sscanf(err, "t.yaml:%d:%d:", &line, &col) != 2 || line < 1 ||
               col < 1) {
      /* Every error is positioned: "t.yaml:LINE:COL: ". */
      print_error("case %zu: not positioned: \"%s\"\n", i, err);
      failures++;
    }
  }
  assert_int_equal(failures, 0);
}

static void test_defaults_and_inheritance(void **state) {
  (void)state;
  static const char text[] =
      "name: site-meter\n"
      "description: a meter of our own\n"
      "table: input\n"
      "word_order: dcba\n"
      "max_gap: 0\n"
      "max_registers: 60\n"
      "fields:\n"
      "  - {name: a, address: 0x10, type: f32}\n"
      "  - {name: b, address: 16, type: u32, word_order: badc, table: holding}\n"
      "  - name: c\n"
      "    table: holding\n"
      "    parts:\n"
      "      - {address: 0x20, type: u16, scale: 1000}\n"
      "      - {address: 0x21, type: u16, table: input}\n"
      "  - {name: d, address: 0x30, type: totalizer, word_order: cdab}\n"
      "  - name: e\n"
      "    address: 0x40\n"
      "    type: u16\n"
      "    role: status\n"
      "    unit: ''\n"
      "    min: 0\n"
      "    unit_register: {address: 0x41, codes: {0x0A: 2.5}}\n";
  char err[512] = "";
  mb_profile *p = parse(text, err, sizeof err);
  if (p == NULL)
    fail_msg("%s", err);
  assert_string_equal(p->name, "site-meter");
  assert_string_equal(p->description, "a meter of our own");
  assert_int_equal(p->max_gap, 0);
  assert_int_equal(p->max_registers, 60);
  expect_part(&field(p, "a")->parts[0], I, 0x10, MB_T_F32, MB_ORDER_DCBA, 1);
  expect_part(&field(p, "b")->parts[0], H, 16, MB_T_U32, MB_ORDER_BADC, 1);
  const prof_field *c = field(p, "c");
  expect_part(&c->parts[0], H, 0x20, MB_T_U16, MB_ORDER_DCBA, 1000);
  expect_part(&c->parts[1], I, 0x21, MB_T_U16, MB_ORDER_DCBA, 1);
  const prof_field *d = field(p, "d");
  assert_int_equal(d->nparts, 2);
  expect_part(&d->parts[0], I, 0x30, MB_T_I32, MB_ORDER_CDAB, 1);
  expect_part(&d->parts[1], I, 0x32, MB_T_F32, MB_ORDER_CDAB, 1);
  const prof_field *e = field(p, "e");
  assert_int_equal(e->role, PROF_ROLE_STATUS);
  assert_string_equal(e->unit, "");
  assert_true(e->has_range && e->min == 0 && isinf(e->max));
  assert_true(e->has_unit_reg);
  assert_int_equal(e->unit_reg.table, I);
  assert_int_equal(e->unit_reg.address, 0x41);
  assert_true(profile_unit_multiplier(e, 10) == 2.5);
  /* Defaults where nothing is said. */
  assert_int_equal(field(p, "a")->role, PROF_ROLE_NONE);
  assert_true(field(p, "a")->scale == 1 && field(p, "a")->offset == 0);
  assert_int_equal(field(p, "a")->mask, 0xFFFF);
  assert_false(field(p, "a")->has_range);
  profile_free(p);

  /* Top-level defaults. */
  static const char plain[] = "name: p\nfields:\n  - {name: a, address: 1, "
                              "type: u32}\n";
  p = parse(plain, err, sizeof err);
  assert_non_null(p);
  assert_int_equal(p->max_gap, 8);
  assert_int_equal(p->max_registers, 125);
  assert_string_equal(p->description, "");
  expect_part(&p->fields[0].parts[0], H, 1, MB_T_U32, MB_ORDER_ABCD, 1);
  profile_free(p);
}

/* ------------------------------------------------------- loading */

static char tmpdir[256];

static int make_tmpdir(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/ic-profile-test-XXXXXX");
  return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void test_load_paths(void **state) {
  (void)state;
  char err[1024] = "";
  char path[512];

  /* Unknown built-in: the error lists the ones there are. */
  assert_null(profile_load("nosuch", NULL, NULL, err, sizeof err));
  assert_non_null(strstr(err, "unknown profile 'nosuch'"));
  assert_non_null(strstr(err, "mag-00h"));
  assert_non_null(strstr(err, "open-channel"));
  assert_non_null(strstr(err, "tuf2000m"));
  assert_null(profile_load("no such!", NULL, NULL, err, sizeof err));
  assert_non_null(strstr(err, "neither a built-in name"));
  assert_null(profile_load("", NULL, NULL, err, sizeof err));

  /* A site folder of profiles instead of the built-ins. */
  snprintf(path, sizeof path, "%s/site.yaml", tmpdir);
  write_file(path, "name: site\nfields:\n  - {name: a, address: 0, type: u16}\n");
  mb_profile *p = profile_load("site", NULL, tmpdir, err, sizeof err);
  if (p == NULL)
    fail_msg("%s", err);
  assert_string_equal(p->path, path);
  profile_free(p);
  assert_null(profile_load("tuf2000m", NULL, tmpdir, err, sizeof err));
  assert_non_null(strstr(err, "built-in profiles: site"));

  /* A path relative to the config's folder, and an absolute one. */
  p = profile_load("site.yaml", tmpdir, NULL, err, sizeof err);
  if (p == NULL)
    fail_msg("%s", err);
  assert_string_equal(p->path, path);
  profile_free(p);
  p = profile_load(path, "/nonexistent", NULL, err, sizeof err);
  assert_non_null(p);
  profile_free(p);
  char sub[512];
  snprintf(sub, sizeof sub, "%s/meters", tmpdir);
  assert_int_equal(mkdir(sub, 0700), 0);
  snprintf(path, sizeof path, "%s/meters/x.yml", tmpdir);
  write_file(path, "name: x\nfields:\n  - {name: a, address: 0, type: u16}\n");
  p = profile_load("meters/x.yml", tmpdir, NULL, err, sizeof err);
  if (p == NULL)
    fail_msg("%s", err);
  assert_string_equal(p->name, "x");
  profile_free(p);

  /* Errors in a file name the file, line and column. */
  snprintf(path, sizeof path, "%s/bad.yaml", tmpdir);
  write_file(path, "name: bad\nfields:\n  - name: a\n    address: 0\n"
                   "    type: u17\n");
  assert_null(profile_load("bad.yaml", tmpdir, NULL, err, sizeof err));
  char want[600];
  snprintf(want, sizeof want, "%s:5:11: unknown type 'u17'", path);
  assert_int_equal(strncmp(err, want, strlen(want)), 0);
  assert_null(profile_load("missing.yaml", tmpdir, NULL, err, sizeof err));
  assert_non_null(strstr(err, "missing.yaml"));
}

static int remove_tmpdir(void **state) {
  (void)state;
  char cmd[512];
  const char *names[] = {"site.yaml", "bad.yaml", "meters/x.yml", "meters"};
  for (size_t i = 0; i < N(names); i++) {
    snprintf(cmd, sizeof cmd, "%s/%s", tmpdir, names[i]);
    remove(cmd);
  }
  return rmdir(tmpdir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_builtin_tuf2000m),
      cmocka_unit_test(test_builtin_mag00h),
      cmocka_unit_test(test_builtin_open_channel),
      cmocka_unit_test(test_lookups),
      cmocka_unit_test(test_tuf_manual_example),
      cmocka_unit_test(test_decode_errors),
      cmocka_unit_test(test_unit_codes),
      cmocka_unit_test(test_mask_shift_scale_offset),
      cmocka_unit_test(test_roundtrip_tuf2000m),
      cmocka_unit_test(test_roundtrip_mag00h),
      cmocka_unit_test(test_roundtrip_open_channel),
      cmocka_unit_test(test_encode_splits),
      cmocka_unit_test(test_validation_errors),
      cmocka_unit_test(test_defaults_and_inheritance),
      cmocka_unit_test(test_load_paths),
  };
  return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
