/* Unit tests of the water-resources monitoring frame (drivers/proto/szy206.c):
 * the three checked vectors decoded field by field and rebuilt byte for byte,
 * the CRC, BCD edge cases and both time-label lengths. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "proto/szy206.h"

/* A copy of BUF in a heap block of exactly LEN bytes, so AddressSanitizer
 * catches any read past the length a function was given. */
static uint8_t *exact(const uint8_t *buf, size_t len) {
  uint8_t *p = malloc(len ? len : 1);
  assert_non_null(p);
  if (len) memcpy(p, buf, len);
  return p;
}

static const uint8_t V1[] = {0x68, 0x1A, 0x68, 0xB3, 0x53, 0x03, 0x81, 0x0D, 0x00, 0xC0, 0x00,
                             0x59, 0x00, 0x00, 0x00, 0x82, 0x61, 0x10, 0x00, 0x00, 0x01, 0x10,
                             0x60, 0x00, 0x00, 0x45, 0x08, 0x09, 0x0A, 0x35, 0x16};
static const uint8_t V2[] = {0x68, 0x1A, 0x68, 0xB3, 0x14, 0x04, 0x31, 0x59, 0x1B, 0xC0, 0x84,
                             0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x20,
                             0x50, 0x00, 0x00, 0x00, 0x16, 0x14, 0x00, 0x2D, 0x16};
static const uint8_t V3[] = {0x68, 0x1A, 0x68, 0xB3, 0x12, 0x37, 0x89, 0x98, 0x76, 0xC0, 0x00,
                             0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                             0x00, 0x00, 0x00, 0x57, 0x17, 0x28, 0x00, 0xF1, 0x16};

typedef struct {
  const uint8_t *bytes;
  const char *admin;
  unsigned station;
  int64_t flow;
  uint64_t volume;
  uint16_t alarm, status;
  szy_tp tp;
  uint8_t cs;
} vector;

static const vector VECTORS[] = {
    {V1, "530381", 13, 5900, 106182, 0x1001, 0x0060, {0, 45, 8, 9, 0, 0, 10}, 0x35},
    {V2, "140431", 7001, 584, 0, 0x2020, 0x0050, {0, 0, 16, 14, 0, 0, 0}, 0x2D},
    {V3, "123789", 30360, 0, 8, 0x0000, 0x0000, {0, 57, 17, 28, 0, 0, 0}, 0xF1},
};

/* Each vector: parsed into its fields, and built back from those fields
 * (not from its bytes) byte for byte. */
static void test_vectors_decode_and_rebuild(void **state) {
  (void)state;
  for (size_t k = 0; k < sizeof VECTORS / sizeof VECTORS[0]; k++) {
    const vector *v = &VECTORS[k];
    uint8_t *in = exact(v->bytes, 31);
    assert_int_equal(szy_frame_len(in, 3), 31);
    szy_frame f;
    assert_int_equal(szy_parse(in, 31, &f), SZY_OK);
    assert_int_equal(f.c, SZY_C_REPORT);
    assert_int_equal(f.divs, -1);
    assert_int_equal(f.afn, SZY_AFN_REPORT);
    assert_int_equal(szy_crc8(in + 3, 26), v->cs);

    uint8_t addr[SZY_ADDR_LEN];
    assert_int_equal(szy_addr_make(addr, v->admin, v->station), SZY_OK);
    assert_memory_equal(addr, f.addr, SZY_ADDR_LEN);

    szy_report r;
    assert_int_equal(szy_report_decode(f.data, f.data_len, 5, &r), SZY_OK);
    assert_int_equal(r.n, 1);
    int64_t flow = -1;
    uint64_t vol = 1;
    assert_int_equal(szy_flow_decode(r.flow[0], &flow), SZY_OK);
    assert_int_equal(flow, v->flow);
    assert_int_equal(szy_volume_decode(r.volume[0], &vol), SZY_OK);
    assert_int_equal(vol, v->volume);
    assert_int_equal(r.alarm, v->alarm);
    assert_int_equal(r.status, v->status);
    assert_int_equal(r.tp_len, 5);
    assert_memory_equal(&r.tp, &v->tp, sizeof r.tp);
    /* The length alone tells the label's length. */
    szy_report r2;
    assert_int_equal(szy_report_decode(f.data, f.data_len, -1, &r2), SZY_OK);
    assert_int_equal(r2.tp_len, 5);

    szy_report b = {0};
    b.n = 1;
    assert_int_equal(szy_flow_encode(b.flow[0], v->flow), SZY_OK);
    assert_int_equal(szy_volume_encode(b.volume[0], v->volume), SZY_OK);
    b.alarm = v->alarm;
    b.status = v->status;
    b.tp_len = 5;
    b.tp = v->tp;
    uint8_t data[64], out[SZY_FRAME_MAX];
    int dn = szy_report_encode(data, sizeof data, &b);
    assert_int_equal(dn, 19);
    int n = szy_build(out, sizeof out, SZY_C_REPORT, addr, SZY_AFN_REPORT, data, (size_t)dn);
    assert_int_equal(n, 31);
    assert_memory_equal(out, v->bytes, 31);
    free(in);
  }
}

static void test_crc(void **state) {
  (void)state;
  assert_int_equal(szy_crc8(NULL, 4), 0);
  assert_int_equal(szy_crc8(V1, 0), 0);
  /* One byte 0x01: the polynomial itself. */
  const uint8_t one = 0x01;
  assert_int_equal(szy_crc8(&one, 1), 0xE5);
  /* The confirm a public decoder gives for vector 1. */
  const uint8_t confirm[] = {0x68, 0x08, 0x68, 0x33, 0x53, 0x03, 0x81,
                             0x0D, 0x00, 0xC0, 0x00, 0x3E, 0x16};
  szy_frame f;
  assert_int_equal(szy_parse(confirm, sizeof confirm, &f), SZY_OK);
  assert_int_equal(f.c & SZY_C_DIR, 0);
  assert_int_equal(f.afn, SZY_AFN_REPORT);
  assert_int_equal(f.data_len, 1);
  /* Any flipped bit of the user data or of CS is caught. */
  for (size_t i = 3; i < 30; i++) {
    for (int b = 0; b < 8; b++) {
      uint8_t bad[31];
      memcpy(bad, V1, 31);
      bad[i] ^= (uint8_t)(1u << b);
      assert_int_equal(szy_parse(bad, 31, NULL), SZY_ECRC);
    }
  }
}

static void test_frame_shape(void **state) {
  (void)state;
  uint8_t f[31];
  memcpy(f, V1, 31);
  assert_int_equal(szy_frame_len(f, 0), SZY_ENEEDMORE);
  assert_int_equal(szy_frame_len(f, 2), SZY_ENEEDMORE);
  f[0] = 0x69;
  assert_int_equal(szy_frame_len(f, 1), SZY_EMALFORMED);
  assert_int_equal(szy_parse(f, 31, NULL), SZY_EMALFORMED);
  memcpy(f, V1, 31);
  f[2] = 0x00;
  assert_int_equal(szy_frame_len(f, 3), SZY_EMALFORMED);
  memcpy(f, V1, 31);
  f[30] = 0x17; /* end byte */
  assert_int_equal(szy_parse(f, 31, NULL), SZY_EMALFORMED);
  /* A length that does not match the bytes given, both ways. */
  uint8_t *shorter = exact(V1, 30);
  assert_int_equal(szy_parse(shorter, 30, NULL), SZY_EMALFORMED);
  free(shorter);
  memcpy(f, V1, 31);
  f[1] = 6; /* under C + A + AFN */
  assert_int_equal(szy_frame_len(f, 3), SZY_EMALFORMED);
  assert_int_equal(szy_parse(V1, 0, NULL), SZY_EMALFORMED);
  /* A DIV frame carries DIVS after C. */
  uint8_t data[1] = {0x00}, out[64];
  uint8_t addr[5] = {0x53, 0x03, 0x81, 0x0D, 0x00};
  int n = szy_build(out, sizeof out, SZY_C_REPORT, addr, SZY_AFN_REPORT, data, 1);
  assert_int_equal(n, 13);
  /* Rebuild by hand with DIV set and a DIVS byte of 7. */
  uint8_t d[14] = {0x68, 9, 0x68, SZY_C_REPORT | SZY_C_DIV, 7, 0x53, 0x03, 0x81, 0x0D, 0x00,
                   0xC0, 0x00, 0, 0x16};
  d[12] = szy_crc8(d + 3, 9);
  szy_frame fr;
  assert_int_equal(szy_parse(d, 14, &fr), SZY_OK);
  assert_int_equal(fr.divs, 7);
  assert_memory_equal(fr.addr, addr, 5);
  assert_int_equal(fr.afn, 0xC0);
  assert_int_equal(fr.data_len, 1);
  /* Builder limits. */
  assert_int_equal(szy_build(out, 12, SZY_C_REPORT, addr, 0xC0, data, 1), SZY_ESPACE);
  static uint8_t big[300];
  assert_int_equal(szy_build(out, sizeof out, SZY_C_REPORT, addr, 0xC0, big, 249),
                   SZY_ERANGE);
  static uint8_t max[SZY_FRAME_MAX];
  assert_int_equal(szy_build(max, sizeof max, SZY_C_REPORT, addr, 0xC0, big, 248),
                   SZY_FRAME_MAX);
  assert_int_equal(szy_parse(max, SZY_FRAME_MAX, NULL), SZY_OK);
}

static void test_address(void **state) {
  (void)state;
  uint8_t a[5];
  assert_int_equal(szy_addr_make(a, "530381", 13), SZY_OK);
  const uint8_t want[] = {0x53, 0x03, 0x81, 0x0D, 0x00};
  assert_memory_equal(a, want, 5);
  assert_int_equal(szy_addr_make(a, "000000", 60000), SZY_OK);
  assert_int_equal(a[3], 0x60);
  assert_int_equal(a[4], 0xEA);
  assert_int_equal(szy_addr_make(a, "530381", 0), SZY_ERANGE);
  assert_int_equal(szy_addr_make(a, "530381", 60001), SZY_ERANGE);
  assert_int_equal(szy_addr_make(a, "53038", 1), SZY_EBCD);
  assert_int_equal(szy_addr_make(a, "5303811", 1), SZY_EBCD);
  assert_int_equal(szy_addr_make(a, "53O381", 1), SZY_EBCD);
  assert_int_equal(szy_addr_make(a, NULL, 1), SZY_EBCD);
}

static void test_bcd_edges(void **state) {
  (void)state;
  uint8_t v[5];
  int64_t f;
  uint64_t m;
  /* Zero. */
  assert_int_equal(szy_flow_encode(v, 0), SZY_OK);
  assert_memory_equal(v, "\0\0\0\0\0", 5);
  assert_int_equal(szy_flow_decode(v, &f), SZY_OK);
  assert_int_equal(f, 0);
  assert_int_equal(szy_volume_encode(v, 0), SZY_OK);
  assert_memory_equal(v, "\0\0\0\0\0", 5);
  assert_int_equal(szy_volume_decode(v, &m), SZY_OK);
  assert_int_equal(m, 0);
  /* The largest volume, and one more. */
  assert_int_equal(szy_volume_encode(v, 799999999), SZY_OK);
  const uint8_t vmax[] = {0x99, 0x99, 0x99, 0x99, 0x07};
  assert_memory_equal(v, vmax, 5);
  assert_int_equal(szy_volume_decode(v, &m), SZY_OK);
  assert_int_equal(m, 799999999);
  assert_int_equal(szy_volume_encode(v, 800000000), SZY_ERANGE);
  const uint8_t v8[] = {0x00, 0x00, 0x00, 0x00, 0x08};
  assert_int_equal(szy_volume_decode(v8, &m), SZY_ERANGE);
  /* The largest flow, both signs; a negative flow sets byte 5's top bit. */
  assert_int_equal(szy_flow_encode(v, 999999999), SZY_OK);
  const uint8_t fmax[] = {0x99, 0x99, 0x99, 0x99, 0x09};
  assert_memory_equal(v, fmax, 5);
  assert_int_equal(szy_flow_encode(v, -5900), SZY_OK);
  const uint8_t fneg[] = {0x00, 0x59, 0x00, 0x00, 0x80};
  assert_memory_equal(v, fneg, 5);
  assert_int_equal(szy_flow_decode(v, &f), SZY_OK);
  assert_int_equal(f, -5900);
  assert_int_equal(szy_flow_encode(v, -999999999), SZY_OK);
  assert_int_equal(szy_flow_decode(v, &f), SZY_OK);
  assert_int_equal(f, -999999999);
  assert_int_equal(szy_flow_encode(v, 1000000000), SZY_ERANGE);
  assert_int_equal(szy_flow_encode(v, -1000000000), SZY_ERANGE);
  /* A unit other than m3/s is not read as a flow. */
  const uint8_t funit[] = {0x00, 0x59, 0x00, 0x00, 0x10};
  assert_int_equal(szy_flow_decode(funit, &f), SZY_EBCD);
  /* AA: no value, both fields. */
  szy_value_none(v);
  assert_memory_equal(v, "\xAA\xAA\xAA\xAA\xAA", 5);
  assert_int_equal(szy_flow_decode(v, &f), SZY_ENONE);
  assert_int_equal(szy_volume_decode(v, &m), SZY_ENONE);
  /* A nibble over 9 anywhere else. */
  for (int i = 0; i < 5; i++) {
    uint8_t bad[5] = {0};
    bad[i] = i == 4 ? 0x0A : 0xA0;
    assert_int_equal(szy_volume_decode(bad, &m), SZY_EBCD);
    if (i < 4) assert_int_equal(szy_flow_decode(bad, &f), SZY_EBCD);
  }
  const uint8_t f9[] = {0x00, 0x00, 0x00, 0x00, 0x0A};
  assert_int_equal(szy_flow_decode(f9, &f), SZY_EBCD);
}

static void test_time_labels(void **state) {
  (void)state;
  szy_tp tp = {5, 30, 14, 31, 12, 26, 10}, back;
  uint8_t out[8];
  assert_int_equal(szy_tp_encode(out, sizeof out, 5, &tp), 5);
  const uint8_t w5[] = {0x05, 0x30, 0x14, 0x31, 0x0A};
  assert_memory_equal(out, w5, 5);
  assert_int_equal(szy_tp_decode(out, 5, 5, &back), 5);
  assert_int_equal(back.sec, 5);
  assert_int_equal(back.day, 31);
  assert_int_equal(back.month, 0);
  assert_int_equal(back.delay, 10);
  assert_int_equal(szy_tp_encode(out, sizeof out, 7, &tp), 7);
  const uint8_t w7[] = {0x05, 0x30, 0x14, 0x31, 0x12, 0x26, 0x0A};
  assert_memory_equal(out, w7, 7);
  assert_int_equal(szy_tp_decode(out, 7, 7, &back), 7);
  assert_memory_equal(&back, &tp, sizeof tp);
  assert_int_equal(szy_tp_decode(out, 6, 7, &back), SZY_EMALFORMED);
  assert_int_equal(szy_tp_encode(out, 4, 5, &tp), SZY_ESPACE);
  assert_int_equal(szy_tp_encode(out, sizeof out, 6, &tp), SZY_ERANGE);
  szy_tp bad = tp;
  bad.hour = 24;
  assert_int_equal(szy_tp_encode(out, sizeof out, 5, &bad), SZY_ERANGE);
  bad = tp;
  bad.month = 13;
  assert_int_equal(szy_tp_encode(out, sizeof out, 5, &bad), 5); /* not in a 5-byte label */
  assert_int_equal(szy_tp_encode(out, sizeof out, 7, &bad), SZY_ERANGE);
  const uint8_t badmin[] = {0x00, 0x60, 0x00, 0x01, 0x00};
  assert_int_equal(szy_tp_decode(badmin, 5, 5, &back), SZY_EBCD);

  /* A report with the 7-byte label: two meters, one of them without values. */
  szy_report r = {0};
  r.n = 2;
  szy_flow_encode(r.flow[0], 1234);
  szy_volume_encode(r.volume[0], 42);
  szy_value_none(r.flow[1]);
  szy_value_none(r.volume[1]);
  r.alarm = SZY_ALARM_METER_FAULT;
  r.tp_len = 7;
  r.tp = tp;
  uint8_t data[128];
  int n = szy_report_encode(data, sizeof data, &r);
  assert_int_equal(n, 20 + 4 + 7);
  assert_int_equal(data[20], 0x20);
  assert_int_equal(data[21], 0x00);
  szy_report d;
  assert_int_equal(szy_report_decode(data, (size_t)n, -1, &d), SZY_OK);
  assert_int_equal(d.n, 2);
  assert_int_equal(d.tp_len, 7);
  assert_memory_equal(&d.tp, &tp, sizeof tp);
  assert_memory_equal(d.flow[1], "\xAA\xAA\xAA\xAA\xAA", 5);
  assert_int_equal(d.alarm, SZY_ALARM_METER_FAULT);
  assert_int_equal(szy_report_decode(data, (size_t)n - 1, -1, &d), SZY_EMALFORMED);
  assert_int_equal(szy_report_decode(data, (size_t)n, 5, &d), SZY_EMALFORMED);
  r.n = SZY_REPORT_METERS_MAX + 1;
  assert_int_equal(szy_report_encode(data, sizeof data, &r), SZY_ERANGE);
}

static void test_describe(void **state) {
  (void)state;
  char out[1024];
  int n = szy_describe(V1, sizeof V1, out, sizeof out);
  assert_true(n > 0);
  assert_string_equal(
      out, "{\"len\":31,\"c\":\"B3\",\"dir\":\"up\",\"fcb\":3,\"type\":3,"
           "\"address\":\"5303810D00\",\"admin\":\"530381\",\"station\":13,"
           "\"afn\":\"C0\",\"function\":\"report\",\"meters\":[{\"flow_m3s\":5.900,"
           "\"volume_m3\":106182,\"raw\":\"0059000000 8261100000\"}],"
           "\"alarm\":\"1001\",\"status\":\"0060\","
           "\"tp\":{\"day\":9,\"time\":\"08:45:00\",\"delay_min\":10}}");
  uint8_t bad[31];
  memcpy(bad, V1, 31);
  bad[29] = 0x36;
  szy_describe(bad, 31, out, sizeof out);
  assert_string_equal(out, "{\"error\":\"CS (CRC-8) mismatch\",\"len\":31,\"cs\":\"36\","
                           "\"expected\":\"35\"}");
  szy_describe(V1, 20, out, sizeof out);
  assert_string_equal(out, "{\"error\":\"malformed frame\",\"len\":20,\"expected_len\":31}");
  /* A wrong start or end byte is named, with what it should be. */
  memcpy(bad, V1, 31);
  bad[30] = 0x17;
  szy_describe(bad, 31, out, sizeof out);
  assert_string_equal(out, "{\"error\":\"malformed frame\",\"len\":31,\"byte\":30,"
                           "\"found\":\"17\",\"expected\":\"16\"}");
  memcpy(bad, V1, 31);
  bad[2] = 0x67;
  szy_describe(bad, 31, out, sizeof out);
  assert_string_equal(out, "{\"error\":\"malformed frame\",\"len\":31,\"byte\":2,"
                           "\"found\":\"67\",\"expected\":\"68\"}");
  /* Truncated to the buffer, always terminated. */
  n = szy_describe(V1, sizeof V1, out, 10);
  assert_int_equal(n, 9);
  assert_int_equal(strlen(out), 9);
  assert_int_equal(szy_describe(V1, sizeof V1, out, 0), SZY_ESPACE);
  /* A login with a time label. */
  uint8_t addr[5] = {0x53, 0x03, 0x81, 0x0D, 0x00}, data[6] = {SZY_LINK_LOGIN}, f[32];
  szy_tp tp = {0, 45, 8, 9, 0, 0, 10};
  szy_tp_encode(data + 1, 5, 5, &tp);
  int fl = szy_build(f, sizeof f, SZY_C_LINK, addr, SZY_AFN_LINK, data, 6);
  szy_describe(f, (size_t)fl, out, sizeof out);
  assert_non_null(strstr(out, "\"function\":\"link\",\"link\":\"login\",\"data\":\"F0\","
                              "\"tp\":{\"day\":9,\"time\":\"08:45:00\",\"delay_min\":10}"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_vectors_decode_and_rebuild),
      cmocka_unit_test(test_crc),
      cmocka_unit_test(test_frame_shape),
      cmocka_unit_test(test_address),
      cmocka_unit_test(test_bcd_edges),
      cmocka_unit_test(test_time_labels),
      cmocka_unit_test(test_describe),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
