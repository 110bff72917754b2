/* Unit tests of the DTU packet filter (drivers/proto/dtu_filter.c):
 * registration and heartbeat packets taken out before the RTU framer,
 * between answers, inside one, in front of every packet, and data bytes that
 * look like a heartbeat left alone. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "proto/dtu_filter.h"

static size_t rtu_answer(uint8_t *out, uint8_t unit, const uint16_t *regs,
                         uint16_t n) {
  uint8_t pdu[MB_PDU_MAX];
  int plen = mb_pdu_read_resp(pdu, sizeof pdu, MB_FC_READ_HOLDING, regs, n);
  assert_true(plen > 0);
  int len = mb_rtu_frame(out, MB_RTU_MAX, unit, pdu, (size_t)plen);
  assert_true(len > 0);
  return (size_t)len;
}

/* Feed LEN bytes in pieces of STEP and collect what comes out. */
static size_t run(dtu_filter *f, const uint8_t *in, size_t len, size_t step,
                  uint8_t *out, size_t cap) {
  size_t got = 0, off = 0;
  while (off < len) {
    size_t n = len - off < step ? len - off : step;
    size_t took = dtu_filter_feed(f, in + off, n);
    off += took;
    size_t k;
    while ((k = dtu_filter_next(f, out + got, cap - got)) > 0) got += k;
  }
  return got;
}

static void init(dtu_filter *f, const char *reg, bool every, const char *hb) {
  uint8_t r[DTU_PKT_MAX], h[DTU_PKT_MAX];
  int rl = dtu_packet_parse(reg, r, sizeof r);
  int hl = hb ? dtu_packet_parse(hb, h, sizeof h) : 0;
  assert_true(rl > 0 && hl >= 0);
  assert_int_equal(dtu_filter_init(f, r, (size_t)rl, every, h, (size_t)hl), 0);
}

static void test_packet_parse(void **state) {
  (void)state;
  uint8_t b[DTU_PKT_MAX];
  assert_int_equal(dtu_packet_parse("KKY-DTU-03", b, sizeof b), 10);
  assert_memory_equal(b, "KKY-DTU-03", 10);
  assert_int_equal(dtu_packet_parse("hex:7B01 fe", b, sizeof b), 3);
  assert_int_equal(b[0], 0x7B);
  assert_int_equal(b[1], 0x01);
  assert_int_equal(b[2], 0xFE);
  assert_int_equal(dtu_packet_parse("hex:7", b, sizeof b), -1);
  assert_int_equal(dtu_packet_parse("hex:zz", b, sizeof b), -1);
  assert_int_equal(dtu_packet_parse("hex:", b, sizeof b), -1);
  assert_int_equal(dtu_packet_parse("", b, sizeof b), -1);
  char big[DTU_PKT_MAX + 2];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(dtu_packet_parse(big, b, sizeof b), -1);
}

/* Heartbeats between answers and a registration before one are dropped, in
 * any split of the stream. */
static void test_between_frames(void **state) {
  (void)state;
  uint16_t regs[] = {1, 2, 3};
  uint8_t a[MB_RTU_MAX], in[1024], out[1024];
  size_t al = rtu_answer(a, 1, regs, 3);
  for (size_t step = 1; step <= 40; step++) {
    dtu_filter f;
    init(&f, "KKY-DTU-03", false, "hex:FE");
    size_t n = 0;
    memcpy(in + n, "KKY-DTU-03", 10), n += 10;
    in[n++] = 0xFE;
    memcpy(in + n, a, al), n += al;
    in[n++] = 0xFE;
    in[n++] = 0xFE;
    memcpy(in + n, a, al), n += al;
    size_t got = run(&f, in, n, step, out, sizeof out);
    assert_int_equal(got, 2 * al);
    assert_memory_equal(out, a, al);
    assert_memory_equal(out + al, a, al);
    assert_int_equal(f.packets, 4);
  }
}

/* A heartbeat inside an answer (the DTU cut it in two packets) is taken out,
 * wherever it falls, in any split. */
static void test_inside_answer(void **state) {
  (void)state;
  uint16_t regs[] = {0x1234, 0x5678, 0x9ABC, 0xDEF0};
  uint8_t a[MB_RTU_MAX], in[1024], out[1024];
  size_t al = rtu_answer(a, 2, regs, 4);
  for (size_t at = 1; at < al; at++)
    for (size_t step = 1; step <= 7; step += 3) {
      dtu_filter f;
      init(&f, "REG", false, "HEART");
      size_t n = 0;
      memcpy(in, a, at), n = at;
      memcpy(in + n, "HEART", 5), n += 5;
      memcpy(in + n, a + at, al - at), n += al - at;
      size_t got = run(&f, in, n, step, out, sizeof out);
      assert_int_equal(got, al);
      assert_memory_equal(out, a, al);
      assert_int_equal(f.packets, 1);
    }
}

/* Data bytes equal to a one-byte heartbeat stay data; a real heartbeat
 * among them still goes. */
static void test_heartbeat_lookalike_data(void **state) {
  (void)state;
  uint16_t regs[] = {0xFEFE, 0x00FE, 0xFE01};
  uint8_t a[MB_RTU_MAX], in[1024], out[1024];
  size_t al = rtu_answer(a, 3, regs, 3);
  dtu_filter f;
  init(&f, "REG", false, "hex:FE");
  size_t got = run(&f, a, al, 1, out, sizeof out);
  assert_int_equal(got, al);
  assert_memory_equal(out, a, al);
  assert_int_equal(f.packets, 0);
  /* Now with a heartbeat after the byte count. */
  size_t n = 0;
  memcpy(in, a, 3), n = 3;
  in[n++] = 0xFE;
  memcpy(in + n, a + 3, al - 3), n += al - 3;
  init(&f, "REG", false, "hex:FE");
  got = run(&f, in, n, 4, out, sizeof out);
  assert_int_equal(got, al);
  assert_memory_equal(out, a, al);
}

/* With the registration on every packet, its prefix goes in front of each
 * answer and inside one cut in two. */
static void test_registration_every_packet(void **state) {
  (void)state;
  uint16_t regs[] = {7, 8};
  uint8_t a[MB_RTU_MAX], in[1024], out[1024];
  size_t al = rtu_answer(a, 1, regs, 2);
  dtu_filter f;
  init(&f, "hex:AA0131", true, NULL);
  size_t n = 0;
  const uint8_t reg[] = {0xAA, 0x01, 0x31};
  memcpy(in + n, reg, 3), n += 3;
  memcpy(in + n, a, 4), n += 4;
  memcpy(in + n, reg, 3), n += 3;
  memcpy(in + n, a + 4, al - 4), n += al - 4;
  memcpy(in + n, reg, 3), n += 3;
  memcpy(in + n, a, al), n += al;
  size_t got = run(&f, in, n, 5, out, sizeof out);
  assert_int_equal(got, 2 * al);
  assert_memory_equal(out, a, al);
  assert_memory_equal(out + al, a, al);
  /* Without the setting, a registration inside a frame is not taken out:
   * the frame is handed on as it came, for the framer to reject. */
  init(&f, "hex:AA0131", false, NULL);
  n = 0;
  memcpy(in + n, a, 4), n += 4;
  memcpy(in + n, reg, 3), n += 3;
  memcpy(in + n, a + 4, al - 4), n += al - 4;
  got = run(&f, in, n, n, out, sizeof out);
  assert_true(got >= al && got <= n);
  assert_memory_equal(out, a, 4);
  assert_memory_not_equal(out + 4, a + 4, al - 4);
}

/* A part of a heartbeat waits for the rest; noise is handed on as it is;
 * an answer with a bad CRC is handed on whole. */
static void test_partial_and_noise(void **state) {
  (void)state;
  dtu_filter f;
  uint8_t out[1024];
  init(&f, "REG", false, "PING");
  assert_int_equal(run(&f, (const uint8_t *)"PI", 2, 2, out, sizeof out), 0);
  assert_int_equal(run(&f, (const uint8_t *)"NG", 2, 2, out, sizeof out), 0);
  /* A heartbeat alone waits for what follows it (it could start a frame);
   * with an answer behind it, it goes. */
  uint16_t one[] = {42};
  uint8_t ans[MB_RTU_MAX];
  size_t anl = rtu_answer(ans, 1, one, 1);
  assert_int_equal(run(&f, ans, anl, 1, out, sizeof out), anl);
  assert_memory_equal(out, ans, anl);
  assert_int_equal(f.packets, 1);
  assert_int_equal(f.len, 0);
  /* Noise: an unknown function code. Its first byte goes on; the rest
   * could still start a frame (unit 0x55, function 0x02). */
  const uint8_t noise[] = {0x01, 0x55, 0x02};
  size_t got = run(&f, noise, sizeof noise, 3, out, sizeof out);
  assert_int_equal(got, 1);
  assert_int_equal(out[0], 0x01);
  dtu_filter_reset(&f);
  /* A bad CRC, with nothing that could be a packet in it. */
  uint16_t regs[] = {1};
  uint8_t a[MB_RTU_MAX];
  size_t al = rtu_answer(a, 1, regs, 1);
  a[al - 1] ^= 0xFF;
  got = run(&f, a, al, al, out, sizeof out);
  assert_int_equal(got, al);
  assert_memory_equal(out, a, al);
  dtu_filter_reset(&f);
  assert_int_equal(f.len, 0);
}

/* The buffer is bounded: an endless stream of noise passes through. */
static void test_bounded(void **state) {
  (void)state;
  dtu_filter f;
  init(&f, "hex:FE", true, "hex:FE");
  uint8_t in[4096], out[MB_RTU_MAX];
  for (size_t i = 0; i < sizeof in; i++) in[i] = (uint8_t)(i * 31 + 7);
  size_t off = 0, total = 0;
  while (off < sizeof in) {
    off += dtu_filter_feed(&f, in + off, sizeof in - off);
    size_t k;
    while ((k = dtu_filter_next(&f, out, sizeof out)) > 0) total += k;
  }
  assert_true(f.len < sizeof f.buf);
  assert_true(total + f.len + f.packets <= sizeof in);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_packet_parse),
      cmocka_unit_test(test_between_frames),
      cmocka_unit_test(test_inside_answer),
      cmocka_unit_test(test_heartbeat_lookalike_data),
      cmocka_unit_test(test_registration_every_packet),
      cmocka_unit_test(test_partial_and_noise),
      cmocka_unit_test(test_bounded),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
