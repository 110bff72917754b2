/* Register decoding: every type in every word order, against constants
 * assembled by hand and the TUF-2000M manual's example. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <string.h>

#include "proto/mb_decode.h"

static const mb_word_order all_orders[] = {MB_ORDER_ABCD, MB_ORDER_CDAB,
                                           MB_ORDER_BADC, MB_ORDER_DCBA};
static const mb_type all_types[] = {MB_T_U16, MB_T_I16, MB_T_U32, MB_T_I32,
                                    MB_T_U64, MB_T_F32, MB_T_F64};

/* 0x4212806B (36.6254f) as the four orders lay it out in registers. */
static const uint16_t f32_regs[4][2] = {
    {0x4212, 0x806B}, /* abcd */
    {0x806B, 0x4212}, /* cdab */
    {0x1242, 0x6B80}, /* badc */
    {0x6B80, 0x1242}, /* dcba */
};

/* 0x0102030405060708 in the four 64-bit layouts of mb_decode.h. */
static const uint16_t u64_regs[4][4] = {
    {0x0102, 0x0304, 0x0506, 0x0708}, /* abcd: most significant first */
    {0x0708, 0x0506, 0x0304, 0x0102}, /* cdab: least significant first */
    {0x0201, 0x0403, 0x0605, 0x0807}, /* badc: bytes swapped per word */
    {0x0807, 0x0605, 0x0403, 0x0201}, /* dcba: fully reversed */
};

static void test_type_words_and_names(void **state) {
  (void)state;
  assert_int_equal(mb_type_words(MB_T_U16), 1);
  assert_int_equal(mb_type_words(MB_T_I16), 1);
  assert_int_equal(mb_type_words(MB_T_U32), 2);
  assert_int_equal(mb_type_words(MB_T_I32), 2);
  assert_int_equal(mb_type_words(MB_T_F32), 2);
  assert_int_equal(mb_type_words(MB_T_U64), 4);
  assert_int_equal(mb_type_words(MB_T_F64), 4);

  for (size_t i = 0; i < sizeof all_types / sizeof all_types[0]; i++) {
    mb_type t;
    assert_int_equal(mb_type_parse(mb_type_name(all_types[i]), &t), 0);
    assert_int_equal(t, all_types[i]);
  }
  mb_type t;
  assert_int_equal(mb_type_parse("f32", &t), 0);
  assert_int_equal(t, MB_T_F32);
  assert_int_equal(mb_type_parse("float", &t), -1);
  assert_int_equal(mb_type_parse("F32", &t), -1);
  assert_int_equal(mb_type_parse("", &t), -1);
  assert_int_equal(mb_type_parse(NULL, &t), -1);

  for (size_t i = 0; i < 4; i++) {
    mb_word_order o;
    assert_int_equal(mb_order_parse(mb_order_name(all_orders[i]), &o), 0);
    assert_int_equal(o, all_orders[i]);
  }
  mb_word_order o;
  assert_int_equal(mb_order_parse("cdab", &o), 0);
  assert_int_equal(o, MB_ORDER_CDAB);
  assert_string_equal(mb_order_name(MB_ORDER_DCBA), "dcba");
  assert_int_equal(mb_order_parse("ABCD", &o), -1);
  assert_int_equal(mb_order_parse("little", &o), -1);
}

static void test_get32_orders(void **state) {
  (void)state;
  for (size_t i = 0; i < 4; i++)
    assert_int_equal(mb_get32(f32_regs[i], all_orders[i]), 0x4212806Bu);
  /* The same registers read in the wrong order give other bits. */
  assert_int_equal(mb_get32(f32_regs[0], MB_ORDER_CDAB), 0x806B4212u);
  assert_int_equal(mb_get32(f32_regs[0], MB_ORDER_BADC), 0x12426B80u);
  assert_int_equal(mb_get32(f32_regs[0], MB_ORDER_DCBA), 0x6B801242u);
}

static void test_put32_orders(void **state) {
  (void)state;
  for (size_t i = 0; i < 4; i++) {
    uint16_t r[2] = {0, 0};
    mb_put32(r, 0x4212806Bu, all_orders[i]);
    assert_int_equal(r[0], f32_regs[i][0]);
    assert_int_equal(r[1], f32_regs[i][1]);
  }
}

static void test_get_put64_orders(void **state) {
  (void)state;
  for (size_t i = 0; i < 4; i++) {
    assert_true(mb_get64(u64_regs[i], all_orders[i]) == 0x0102030405060708ull);
    uint16_t r[4] = {0};
    mb_put64(r, 0x0102030405060708ull, all_orders[i]);
    assert_memory_equal(r, u64_regs[i], sizeof r);
  }
}

static void test_tuf2000m_manual_example(void **state) {
  (void)state;
  /* Registers 1-2 of a TUF-2000M read 0x806B, 0x4212: low word first. */
  const uint16_t regs[2] = {0x806B, 0x4212};
  double v = mb_decode(regs, MB_T_F32, MB_ORDER_CDAB);
  assert_float_equal(v, 36.6254, 1e-4);
  /* Exactly the float 0x4212806B. */
  float expect;
  uint32_t bits = 0x4212806Bu;
  memcpy(&expect, &bits, sizeof expect);
  assert_true(v == (double)expect);
}

static void test_f32_all_orders(void **state) {
  (void)state;
  for (size_t i = 0; i < 4; i++)
    assert_float_equal(mb_decode(f32_regs[i], MB_T_F32, all_orders[i]),
                       36.6254, 1e-4);
  /* -2.5f = 0xC0200000 */
  const uint16_t neg[4][2] = {
      {0xC020, 0x0000}, {0x0000, 0xC020}, {0x20C0, 0x0000}, {0x0000, 0x20C0}};
  for (size_t i = 0; i < 4; i++)
    assert_true(mb_decode(neg[i], MB_T_F32, all_orders[i]) == -2.5);
}

static void test_f64_all_orders(void **state) {
  (void)state;
  /* 3.14 = 0x40091EB851EB851F */
  const uint16_t pi[4][4] = {
      {0x4009, 0x1EB8, 0x51EB, 0x851F},
      {0x851F, 0x51EB, 0x1EB8, 0x4009},
      {0x0940, 0xB81E, 0xEB51, 0x1F85},
      {0x1F85, 0xEB51, 0xB81E, 0x0940},
  };
  for (size_t i = 0; i < 4; i++)
    assert_true(mb_decode(pi[i], MB_T_F64, all_orders[i]) == 3.14);
  /* -1.0 = 0xBFF0000000000000 */
  const uint16_t m1[4] = {0x0000, 0x0000, 0x0000, 0xBFF0};
  assert_true(mb_decode(m1, MB_T_F64, MB_ORDER_CDAB) == -1.0);
}

static void test_u16_i16(void **state) {
  (void)state;
  const uint16_t a = 0xFFFF, b = 0x8000, c = 0x7FFF, d = 0x0001;
  assert_true(mb_decode(&a, MB_T_U16, MB_ORDER_ABCD) == 65535.0);
  assert_true(mb_decode(&a, MB_T_I16, MB_ORDER_ABCD) == -1.0);
  assert_true(mb_decode(&b, MB_T_I16, MB_ORDER_ABCD) == -32768.0);
  assert_true(mb_decode(&c, MB_T_I16, MB_ORDER_ABCD) == 32767.0);
  assert_true(mb_decode(&d, MB_T_I16, MB_ORDER_ABCD) == 1.0);
  /* 16-bit types ignore the word order. */
  for (size_t i = 0; i < 4; i++) {
    assert_true(mb_decode(&b, MB_T_U16, all_orders[i]) == 32768.0);
    assert_true(mb_decode(&b, MB_T_I16, all_orders[i]) == -32768.0);
  }
}

static void test_u32_i32(void **state) {
  (void)state;
  /* -2 = 0xFFFFFFFE in each order. */
  const uint16_t m2[4][2] = {
      {0xFFFF, 0xFFFE}, {0xFFFE, 0xFFFF}, {0xFFFF, 0xFEFF}, {0xFEFF, 0xFFFF}};
  for (size_t i = 0; i < 4; i++) {
    assert_true(mb_decode(m2[i], MB_T_I32, all_orders[i]) == -2.0);
    assert_true(mb_decode(m2[i], MB_T_U32, all_orders[i]) == 4294967294.0);
  }
  const uint16_t min[2] = {0x8000, 0x0000};
  assert_true(mb_decode(min, MB_T_I32, MB_ORDER_ABCD) == -2147483648.0);
  const uint16_t max[2] = {0x7FFF, 0xFFFF};
  assert_true(mb_decode(max, MB_T_I32, MB_ORDER_ABCD) == 2147483647.0);
  /* 123456 = 0x0001E240; TUF LONG registers are low word first. */
  const uint16_t tuf[2] = {0xE240, 0x0001};
  assert_true(mb_decode(tuf, MB_T_I32, MB_ORDER_CDAB) == 123456.0);
  /* -123456 = 0xFFFE1DC0 */
  const uint16_t tufn[2] = {0x1DC0, 0xFFFE};
  assert_true(mb_decode(tufn, MB_T_I32, MB_ORDER_CDAB) == -123456.0);
}

static void test_u64(void **state) {
  (void)state;
  /* 2^32 + 2 = 0x0000000100000002, above what 32 bits hold. */
  const uint16_t r[4][4] = {
      {0x0000, 0x0001, 0x0000, 0x0002},
      {0x0002, 0x0000, 0x0001, 0x0000},
      {0x0000, 0x0100, 0x0000, 0x0200},
      {0x0200, 0x0000, 0x0100, 0x0000},
  };
  for (size_t i = 0; i < 4; i++)
    assert_true(mb_decode(r[i], MB_T_U64, all_orders[i]) == 4294967298.0);
  for (size_t i = 0; i < 4; i++)
    assert_true(mb_decode(u64_regs[i], MB_T_U64, all_orders[i]) ==
                (double)0x0102030405060708ull);
  const uint16_t big[4] = {0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF};
  assert_true(mb_decode(big, MB_T_U64, MB_ORDER_ABCD) == 18446744073709551616.0);
}

static void test_encode_roundtrip(void **state) {
  (void)state;
  const double values[] = {0,      1,        -1,          12.5,     -12.5,
                           100,    65535,    -32768,      32767,    123456,
                           -123456, 4294967295.0, 1e12, 36.6254, 1e-3};
  for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
    mb_type t = all_types[ti];
    for (size_t oi = 0; oi < 4; oi++) {
      for (size_t vi = 0; vi < sizeof values / sizeof values[0]; vi++) {
        uint16_t r[4] = {0};
        double v = values[vi];
        mb_encode(r, t, all_orders[oi], v);
        double back = mb_decode(r, t, all_orders[oi]);
        double expect;
        switch (t) {
        case MB_T_U16: expect = fmin(fmax(round(v), 0), 65535); break;
        case MB_T_I16: expect = fmin(fmax(round(v), -32768), 32767); break;
        case MB_T_U32: expect = fmin(fmax(round(v), 0), 4294967295.0); break;
        case MB_T_I32:
          expect = fmin(fmax(round(v), -2147483648.0), 2147483647.0);
          break;
        case MB_T_U64: expect = fmax(round(v), 0); break;
        case MB_T_F32: expect = (double)(float)v; break;
        default: expect = v; break;
        }
        assert_true(back == expect);
      }
    }
  }
  /* The encoder lays out the same bits the decoder test reads. */
  for (size_t i = 0; i < 4; i++) {
    uint16_t r[2];
    float f;
    uint32_t bits = 0x4212806Bu;
    memcpy(&f, &bits, sizeof f);
    mb_encode(r, MB_T_F32, all_orders[i], (double)f);
    assert_int_equal(r[0], f32_regs[i][0]);
    assert_int_equal(r[1], f32_regs[i][1]);
  }
}

static void test_encode_rounds_and_saturates(void **state) {
  (void)state;
  uint16_t r[4];
  mb_encode(r, MB_T_U16, MB_ORDER_ABCD, 70000);
  assert_int_equal(r[0], 0xFFFF);
  mb_encode(r, MB_T_U16, MB_ORDER_ABCD, -5);
  assert_int_equal(r[0], 0);
  mb_encode(r, MB_T_U16, MB_ORDER_ABCD, 2.5);
  assert_int_equal(r[0], 3);
  mb_encode(r, MB_T_U16, MB_ORDER_ABCD, 2.49);
  assert_int_equal(r[0], 2);
  mb_encode(r, MB_T_U16, MB_ORDER_ABCD, NAN);
  assert_int_equal(r[0], 0);
  mb_encode(r, MB_T_I16, MB_ORDER_ABCD, -40000);
  assert_int_equal(r[0], 0x8000);
  mb_encode(r, MB_T_I16, MB_ORDER_ABCD, 40000);
  assert_int_equal(r[0], 0x7FFF);
  mb_encode(r, MB_T_I16, MB_ORDER_ABCD, -2.5);
  assert_int_equal(r[0], 0xFFFD); /* -3: half away from zero */
  mb_encode(r, MB_T_I32, MB_ORDER_ABCD, -3e9);
  assert_int_equal(mb_get32(r, MB_ORDER_ABCD), 0x80000000u);
  mb_encode(r, MB_T_U32, MB_ORDER_ABCD, 5e9);
  assert_int_equal(mb_get32(r, MB_ORDER_ABCD), 0xFFFFFFFFu);
  mb_encode(r, MB_T_U64, MB_ORDER_ABCD, 1e20);
  assert_true(mb_get64(r, MB_ORDER_ABCD) == UINT64_MAX);
  mb_encode(r, MB_T_U64, MB_ORDER_ABCD, -1);
  assert_true(mb_get64(r, MB_ORDER_ABCD) == 0);
  mb_encode(r, MB_T_U64, MB_ORDER_DCBA, 4294967298.0);
  assert_true(mb_get64(r, MB_ORDER_DCBA) == 0x0000000100000002ull);
  /* Beyond the float range: infinity, not undefined behaviour. */
  mb_encode(r, MB_T_F32, MB_ORDER_ABCD, 1e39);
  assert_true(isinf(mb_decode(r, MB_T_F32, MB_ORDER_ABCD)));
  mb_encode(r, MB_T_F32, MB_ORDER_ABCD, -1e39);
  assert_true(mb_decode(r, MB_T_F32, MB_ORDER_ABCD) == -INFINITY);
  mb_encode(r, MB_T_F32, MB_ORDER_ABCD, (double)FLT_MAX);
  assert_true(mb_decode(r, MB_T_F32, MB_ORDER_ABCD) == (double)FLT_MAX);
  mb_encode(r, MB_T_F32, MB_ORDER_ABCD, NAN);
  assert_true(isnan(mb_decode(r, MB_T_F32, MB_ORDER_ABCD)));
}

static void test_nan_inf_decode(void **state) {
  (void)state;
  /* Float patterns a broken meter can send: the decoder passes them on and
   * the field layer refuses them (see test_profile). */
  const uint16_t nan32[2] = {0x7FC0, 0x0000};
  const uint16_t inf32[2] = {0x0000, 0x7F80}; /* cdab */
  const uint16_t ninf64[4] = {0xFFF0, 0, 0, 0};
  assert_true(isnan(mb_decode(nan32, MB_T_F32, MB_ORDER_ABCD)));
  assert_true(isinf(mb_decode(inf32, MB_T_F32, MB_ORDER_CDAB)));
  assert_true(mb_decode(ninf64, MB_T_F64, MB_ORDER_ABCD) == -INFINITY);
}

static void test_scale_offset(void **state) {
  (void)state;
  assert_true(mb_scale(1234, 0.01, 0) == 1234 * 0.01);
  assert_float_equal(mb_scale(1234, 0.01, -2.5), 9.84, 1e-12);
  assert_true(mb_scale(-7, 1, 0) == -7);
  assert_true(mb_scale(10, 3600, 0) == 36000);
  assert_true(mb_scale(0, 5, 4) == 4);
}

static void test_totalizer(void **state) {
  (void)state;
  assert_true(mb_totalizer(12, 0.25) == 12.25);
  assert_true(mb_totalizer(0, 0.0) == 0.0);
  assert_true(mb_totalizer(-12, -0.25) == -12.25);
  assert_true(mb_totalizer(0, -0.5) == -0.5);
  assert_float_equal(mb_totalizer(2147483647, 0.999), 2147483647.999, 1e-6);
  assert_true(mb_totalizer(4294967296LL * 3, 0.5) == 12884901888.5);
  /* Fraction not below one unit, or not a number: refused. */
  assert_true(isnan(mb_totalizer(12, 1.0)));
  assert_true(isnan(mb_totalizer(12, 1.5)));
  assert_true(isnan(mb_totalizer(-12, -1.0)));
  assert_true(isnan(mb_totalizer(12, NAN)));
  assert_true(isnan(mb_totalizer(12, INFINITY)));
  assert_true(isnan(mb_totalizer(12, -INFINITY)));
  /* As a TUF-2000M sends it: LONG 9-10 and REAL4 11-12, low word first. */
  const uint16_t regs[4] = {0xE240, 0x0001, 0x0000, 0x3E80}; /* 123456, 0.25 */
  double total = mb_totalizer((int64_t)mb_decode(regs, MB_T_I32, MB_ORDER_CDAB),
                              mb_decode(regs + 2, MB_T_F32, MB_ORDER_CDAB));
  assert_true(total == 123456.25);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_type_words_and_names),
      cmocka_unit_test(test_get32_orders),
      cmocka_unit_test(test_put32_orders),
      cmocka_unit_test(test_get_put64_orders),
      cmocka_unit_test(test_tuf2000m_manual_example),
      cmocka_unit_test(test_f32_all_orders),
      cmocka_unit_test(test_f64_all_orders),
      cmocka_unit_test(test_u16_i16),
      cmocka_unit_test(test_u32_i32),
      cmocka_unit_test(test_u64),
      cmocka_unit_test(test_encode_roundtrip),
      cmocka_unit_test(test_encode_rounds_and_saturates),
      cmocka_unit_test(test_nan_inf_decode),
      cmocka_unit_test(test_scale_offset),
      cmocka_unit_test(test_totalizer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
