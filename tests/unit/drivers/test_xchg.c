/* Unit tests of one request's exchange without I/O
 * (drivers/proto/mb_xchg.c): the request bytes, answers in pieces, late
 * answers passed over, and the verdicts on wrong ones. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "proto/mb_xchg.h"

/* An MBAP answer to a read: TID, UNIT, FC, then the registers. */
static size_t mbap_answer(uint8_t *out, uint16_t tid, uint8_t unit, uint8_t fc,
                          const uint16_t *regs, uint16_t n) {
  uint8_t pdu[MB_PDU_MAX];
  int plen = mb_pdu_read_resp(pdu, sizeof pdu, fc, regs, n);
  assert_true(plen > 0);
  int len = mb_mbap_frame(out, MB_TCP_MAX, tid, unit, pdu, (size_t)plen);
  assert_true(len > 0);
  return (size_t)len;
}

static size_t rtu_answer(uint8_t *out, uint8_t unit, uint8_t fc,
                         const uint16_t *regs, uint16_t n) {
  uint8_t pdu[MB_PDU_MAX];
  int plen = mb_pdu_read_resp(pdu, sizeof pdu, fc, regs, n);
  assert_true(plen > 0);
  int len = mb_rtu_frame(out, MB_RTU_MAX, unit, pdu, (size_t)plen);
  assert_true(len > 0);
  return (size_t)len;
}

static void test_mbap_request_bytes(void **state) {
  (void)state;
  mb_xchg x;
  tr_error e;
  uint16_t regs[2];
  uint8_t req[MB_TCP_MAX];
  int len = mb_xchg_begin(&x, false, 0x1234, 7, MB_FC_READ_INPUT, 0x0010, 2,
                          regs, req, sizeof req, &e);
  const uint8_t want[] = {0x12, 0x34, 0x00, 0x00, 0x00, 0x06, 0x07,
                          0x04, 0x00, 0x10, 0x00, 0x02};
  assert_int_equal(len, sizeof want);
  assert_memory_equal(req, want, sizeof want);
}

static void test_rtu_request_bytes(void **state) {
  (void)state;
  mb_xchg x;
  tr_error e;
  uint16_t regs[10];
  uint8_t req[MB_TCP_MAX];
  int len = mb_xchg_begin(&x, true, 0, 1, MB_FC_READ_HOLDING, 0, 10, regs, req,
                          sizeof req, &e);
  /* 01 03 00 00 00 0A with its CRC C5 CD, low byte first. */
  const uint8_t want[] = {0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD};
  assert_int_equal(len, sizeof want);
  assert_memory_equal(req, want, sizeof want);
}

static void test_bad_request_refused(void **state) {
  (void)state;
  mb_xchg x;
  tr_error e;
  uint16_t regs[1];
  uint8_t req[MB_TCP_MAX];
  assert_int_equal(mb_xchg_begin(&x, false, 1, 1, MB_FC_READ_HOLDING, 0, 200,
                                 regs, req, sizeof req, &e),
                   TR_EIO);
  assert_non_null(strstr(e.detail, "cannot build the request"));
}

/* The answer one byte at a time: only the last byte completes it. */
static void test_mbap_answer_in_pieces(void **state) {
  (void)state;
  mb_xchg x;
  tr_error e;
  uint16_t got[3] = {0}, regs[3] = {0x0102, 0xFFFF, 0x8000};
  uint8_t req[MB_TCP_MAX], ans[MB_TCP_MAX];
  mb_xchg_begin(&x, false, 42, 3, MB_FC_READ_HOLDING, 100, 3, got, req,
                sizeof req, &e);
  size_t n = mbap_answer(ans, 42, 3, MB_FC_READ_HOLDING, regs, 3);
  for (size_t i = 0; i + 1 < n; i++)
    assert_int_equal(mb_xchg_feed(&x, ans + i, 1, &e), MB_XCHG_MORE);
  assert_int_equal(mb_xchg_feed(&x, ans + n - 1, 1, &e), TR_OK);
  assert_memory_equal(got, regs, sizeof regs);
}

/* A late answer (an earlier transaction id) and ours in one segment: the
 * late one is passed over, ours taken. */
static void test_mbap_late_answer_passed_over(void **state) {
  (void)state;
  mb_xchg x;
  tr_error e;
  uint16_t got[1] = {0}, old[1] = {111}, ours[1] = {222};
  uint8_t req[MB_TCP_MAX], seg[2 * MB_TCP_MAX];
  mb_xchg_begin(&x, false, 9, 1, MB_FC_READ_HOLDING, 0, 1, got, req, sizeof req,
                &e);
  size_t n = mbap_answer(seg, 8, 1, MB_FC_READ_HOLDING, old, 1);
  n += mbap_answer(seg + n, 9, 1, MB_FC_READ_HOLDING, ours, 1);
  assert_int_equal(mb_xchg_feed(&x, seg, n, &e), TR_OK);
  assert_int_equal(got[0], 222);
  assert_int_equal(x.foreign, 1);
}

/* Only a late answer comes, then the timeout: it says so. */
static void test_mbap_timeout_names_what_came(void **state) {
  (void)state;
  mb_xchg x;
  tr_error e;
  uint16_t got[1], old[1] = {1};
  uint8_t req[MB_TCP_MAX], seg[MB_TCP_MAX];
  mb_xchg_begin(&x, false, 5, 1, MB_FC_READ_HOLDING, 0, 1, got, req, sizeof req,
                &e);
  assert_int_equal(mb_xchg_timeout(&x, 800, &e), TR_ETIMEOUT);
  assert_string_equal(e.detail, "no answer from unit 1 within 800 ms");
  size_t n = mbap_answer(seg, 4, 1, MB_FC_READ_HOLDING, old, 1);
  assert_int_equal(mb_xchg_feed(&x, seg, n, &e), MB_XCHG_MORE);
  assert_int_equal(mb_xchg_feed(&x, seg, 3, &e), MB_XCHG_MORE);
  assert_int_equal(mb_xchg_timeout(&x, 800, &e), TR_ETIMEOUT);
  assert_string_equal(e.detail,
                      "incomplete answer from unit 1 within 800 ms (3 bytes); "
                      "discarded 1 frame not for it (first: unit 1, function "
                      "0x03)");
}

static void test_mbap_exception(void **state) {
  (void)state;
  mb_xchg x;
  tr_error e;
  uint16_t got[1];
  uint8_t req[MB_TCP_MAX], pdu[2], ans[MB_TCP_MAX];
  mb_xchg_begin(&x, false, 1, 1, MB_FC_READ_INPUT, 0, 1, got, req, sizeof req,
                &e);
  mb_pdu_exception(pdu, sizeof pdu, MB_FC_READ_INPUT, MB_EX_ILLEGAL_ADDRESS);
  int n = mb_mbap_frame(ans, sizeof ans, 1, 1, pdu, 2);
  assert_int_equal(mb_xchg_feed(&x, ans, (size_t)n, &e), TR_EEXCEPTION);
  assert_int_equal(e.exception, 2);
  assert_string_equal(e.detail, "exception 0x02 (illegal data address)");
}

/* A header that is not one: the stream cannot be trusted any more. */
static void test_mbap_garbage_desyncs(void **state) {
  (void)state;
  mb_xchg x;
  tr_error e;
  uint16_t got[1];
  uint8_t req[MB_TCP_MAX];
  const uint8_t junk[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
  mb_xchg_begin(&x, false, 1, 1, MB_FC_READ_HOLDING, 0, 1, got, req, sizeof req,
                &e);
  assert_int_equal(mb_xchg_feed(&x, junk, sizeof junk - 1, &e), TR_EMALFORMED);
  assert_true(x.desync);
  assert_non_null(strstr(e.detail, "unframeable answer from unit 1"));
  /* Anything more is refused, not read past. */
  assert_int_equal(mb_xchg_feed(&x, junk, 4, &e), TR_EMALFORMED);
}

static void test_mbap_wrong_unit_and_count(void **state) {
  (void)state;
  mb_xchg x;
  tr_error e;
  uint16_t got[2], regs[2] = {1, 2};
  uint8_t req[MB_TCP_MAX], ans[MB_TCP_MAX];
  mb_xchg_begin(&x, false, 1, 1, MB_FC_READ_HOLDING, 0, 2, got, req, sizeof req,
                &e);
  size_t n = mbap_answer(ans, 1, 9, MB_FC_READ_HOLDING, regs, 2);
  assert_int_equal(mb_xchg_feed(&x, ans, n, &e), TR_EMALFORMED);
  assert_string_equal(e.detail, "answer from unit 9, expected 1");
  assert_false(x.desync);

  mb_xchg_begin(&x, false, 2, 1, MB_FC_READ_HOLDING, 0, 2, got, req, sizeof req,
                &e);
  n = mbap_answer(ans, 2, 1, MB_FC_READ_HOLDING, regs, 1); /* one, not two */
  assert_int_equal(mb_xchg_feed(&x, ans, n, &e), TR_EMALFORMED);
  assert_non_null(strstr(e.detail, "does not match the request"));
}

/* The longest frame an MBAP header may announce (length 254: the unit id
 * and a 253-byte PDU) is taken whole and judged, not overrun. */
static void test_mbap_longest_frame(void **state) {
  (void)state;
  mb_xchg x;
  tr_error e;
  uint16_t got[2];
  uint8_t req[MB_TCP_MAX], ans[MB_TCP_MAX];
  assert_int_equal(MB_TCP_MAX, 260);
  mb_xchg_begin(&x, false, 3, 1, MB_FC_READ_HOLDING, 0, 2, got, req, sizeof req,
                &e);
  memset(ans, 0, sizeof ans);
  ans[0] = 0;
  ans[1] = 3;        /* transaction id 3 */
  ans[5] = 254;      /* unit id + 253 bytes of PDU */
  ans[6] = 1;        /* unit */
  ans[7] = MB_FC_READ_HOLDING;
  ans[8] = 250;      /* byte count: not the 4 asked for */
  assert_int_equal(mb_xchg_feed(&x, ans, sizeof ans - 1, &e), MB_XCHG_MORE);
  assert_int_equal(mb_xchg_feed(&x, ans + sizeof ans - 1, 1, &e), TR_EMALFORMED);
  assert_string_equal(e.detail, "malformed answer from unit 1 (malformed frame)");
}

/* RTU behind a DTU: another unit's late answer, then ours split in two. */
static void test_rtu_foreign_then_ours(void **state) {
  (void)state;
  mb_xchg x;
  tr_error e;
  uint16_t got[2] = {0}, theirs[1] = {7}, ours[2] = {0xABCD, 0x0001};
  uint8_t req[MB_TCP_MAX], seg[2 * MB_RTU_MAX];
  mb_xchg_begin(&x, true, 0, 5, MB_FC_READ_HOLDING, 0, 2, got, req, sizeof req,
                &e);
  size_t n = rtu_answer(seg, 4, MB_FC_READ_HOLDING, theirs, 1);
  size_t m = rtu_answer(seg + n, 5, MB_FC_READ_HOLDING, ours, 2);
  assert_int_equal(mb_xchg_feed(&x, seg, n + 2, &e), MB_XCHG_MORE);
  assert_int_equal(mb_xchg_feed(&x, seg + n + 2, m - 2, &e), TR_OK);
  assert_memory_equal(got, ours, sizeof ours);
  assert_int_equal(x.foreign, 1);
  assert_int_equal(x.foreign_unit, 4);
}

static void test_rtu_bad_crc(void **state) {
  (void)state;
  mb_xchg x;
  tr_error e;
  uint16_t got[1], regs[1] = {3};
  uint8_t req[MB_TCP_MAX], ans[MB_RTU_MAX];
  mb_xchg_begin(&x, true, 0, 1, MB_FC_READ_HOLDING, 0, 1, got, req, sizeof req,
                &e);
  size_t n = rtu_answer(ans, 1, MB_FC_READ_HOLDING, regs, 1);
  ans[n - 1] ^= 0xFF;
  assert_int_equal(mb_xchg_feed(&x, ans, n, &e), TR_ECRC);
  assert_string_equal(e.detail, "bad CRC in the answer from unit 1");
}

/* Whatever a broken peer sends, in whatever pieces, ends in a verdict or a
 * wait, never a read or write out of bounds (AddressSanitizer watches). */
static void test_random_bytes_never_overrun(void **state) {
  (void)state;
  srand(12345);
  for (int round = 0; round < 2000; round++) {
    mb_xchg x;
    tr_error e;
    uint16_t *got = malloc(125 * sizeof *got);
    uint8_t req[MB_TCP_MAX];
    uint16_t count = (uint16_t)(1 + rand() % 125);
    mb_xchg_begin(&x, round & 1, (uint16_t)rand(), (uint8_t)(1 + rand() % 247),
                  MB_FC_READ_HOLDING, 0, count, got, req, sizeof req, &e);
    int rc = MB_XCHG_MORE;
    for (int k = 0; k < 20 && rc == MB_XCHG_MORE; k++) {
      size_t n = 1 + (size_t)(rand() % 700);
      uint8_t *buf = malloc(n);
      for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)rand();
      /* Now and then a plausible MBAP header, so frames get parsed. */
      if (!(round & 1) && n > 7 && rand() % 2) {
        buf[2] = buf[3] = 0;
        buf[4] = 0;
        buf[5] = (uint8_t)(2 + rand() % 250);
      }
      rc = mb_xchg_feed(&x, buf, n, &e);
      free(buf);
    }
    assert_true(rc == MB_XCHG_MORE || rc == TR_OK || (rc < 0 && e.detail[0]));
    free(got);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mbap_request_bytes),
      cmocka_unit_test(test_rtu_request_bytes),
      cmocka_unit_test(test_bad_request_refused),
      cmocka_unit_test(test_mbap_answer_in_pieces),
      cmocka_unit_test(test_mbap_late_answer_passed_over),
      cmocka_unit_test(test_mbap_timeout_names_what_came),
      cmocka_unit_test(test_mbap_exception),
      cmocka_unit_test(test_mbap_garbage_desyncs),
      cmocka_unit_test(test_mbap_wrong_unit_and_count),
      cmocka_unit_test(test_mbap_longest_frame),
      cmocka_unit_test(test_rtu_foreign_then_ours),
      cmocka_unit_test(test_rtu_bad_crc),
      cmocka_unit_test(test_random_bytes_never_overrun),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
