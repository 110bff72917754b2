/* Unit tests of the Modbus protocol core (drivers/proto/mb_proto.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "proto/mb_proto.h"

/* A copy of BUF in a heap block of exactly LEN bytes, so AddressSanitizer
 * catches any read past the length a function was given. */
static uint8_t *exact(const uint8_t *buf, size_t len) {
  uint8_t *p = malloc(len ? len : 1);
  assert_non_null(p);
  if (len) memcpy(p, buf, len);
  return p;
}

/* --- CRC ------------------------------------------------------------------ */

static void test_crc_known_vectors(void **state) {
  (void)state;
  const uint8_t req[] = {0x01, 0x03, 0x00, 0x00, 0x00, 0x0A};
  assert_int_equal(mb_crc16(req, sizeof req), 0xCDC5);
  /* The specification's own example: 11 03 00 6B 00 03 -> 76 87. */
  const uint8_t spec[] = {0x11, 0x03, 0x00, 0x6B, 0x00, 0x03};
  assert_int_equal(mb_crc16(spec, sizeof spec), 0x8776);
  /* CRC-16/MODBUS check value. */
  assert_int_equal(mb_crc16((const uint8_t *)"123456789", 9), 0x4B37);
  assert_int_equal(mb_crc16(req, 0), 0xFFFF);
  assert_int_equal(mb_crc16(NULL, 5), 0xFFFF);
}

static void test_rtu_frame_bytes(void **state) {
  (void)state;
  uint8_t pdu[8], frame[MB_RTU_MAX];
  assert_int_equal(mb_pdu_read_req(pdu, sizeof pdu, 0x03, 0, 10), 5);
  assert_int_equal(mb_rtu_frame(frame, sizeof frame, 1, pdu, 5), 8);
  const uint8_t want[] = {0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD};
  assert_memory_equal(frame, want, sizeof want);

  uint8_t unit = 0;
  const uint8_t *p = NULL;
  size_t plen = 0;
  assert_int_equal(mb_rtu_parse(frame, 8, &unit, &p, &plen), MB_OK);
  assert_int_equal(unit, 1);
  assert_ptr_equal(p, frame + 1);
  assert_int_equal(plen, 5);

  /* Any flipped bit is caught. */
  for (size_t i = 0; i < 8; i++) {
    for (int b = 0; b < 8; b++) {
      uint8_t bad[8];
      memcpy(bad, want, 8);
      bad[i] ^= (uint8_t)(1u << b);
      assert_int_equal(mb_rtu_parse(bad, 8, NULL, NULL, NULL), MB_ECRC);
    }
  }
  /* Too small a buffer, too long a PDU. */
  assert_int_equal(mb_rtu_frame(frame, 7, 1, pdu, 5), MB_ESPACE);
  assert_int_equal(mb_rtu_frame(frame, sizeof frame, 1, pdu, 0),
                   MB_EMALFORMED);
  uint8_t big[MB_PDU_MAX + 1] = {0x03};
  assert_int_equal(mb_rtu_frame(frame, sizeof frame, 1, big, sizeof big),
                   MB_EMALFORMED);
  assert_int_equal(mb_rtu_frame(frame, sizeof frame, 1, big, MB_PDU_MAX),
                   MB_RTU_MAX);
  /* Frames shorter than unit + fc + CRC or longer than 256. */
  assert_int_equal(mb_rtu_parse(want, 3, NULL, NULL, NULL), MB_EMALFORMED);
  assert_int_equal(mb_rtu_parse(frame, MB_RTU_MAX + 1, NULL, NULL, NULL),
                   MB_EMALFORMED);
}

/* --- request PDUs --------------------------------------------------------- */

static void test_read_req_build(void **state) {
  (void)state;
  uint8_t pdu[5];
  assert_int_equal(mb_pdu_read_req(pdu, sizeof pdu, 0x04, 0x1234, 125), 5);
  const uint8_t want[] = {0x04, 0x12, 0x34, 0x00, 0x7D};
  assert_memory_equal(pdu, want, 5);

  assert_int_equal(mb_pdu_read_req(pdu, sizeof pdu, 0x03, 0, 0), MB_ERANGE);
  assert_int_equal(mb_pdu_read_req(pdu, sizeof pdu, 0x03, 0, 126), MB_ERANGE);
  assert_int_equal(mb_pdu_read_req(pdu, sizeof pdu, 0x03, 0xFFFF, 1), 5);
  assert_int_equal(mb_pdu_read_req(pdu, sizeof pdu, 0x03, 0xFFFF, 2),
                   MB_ERANGE);
  assert_int_equal(mb_pdu_read_req(pdu, sizeof pdu, 0x06, 0, 1),
                   MB_EMALFORMED);
  assert_int_equal(mb_pdu_read_req(pdu, 4, 0x03, 0, 1), MB_ESPACE);
  assert_int_equal(mb_pdu_read_req(NULL, 5, 0x03, 0, 1), MB_ESPACE);
}

static void test_read_req_parse(void **state) {
  (void)state;
  uint8_t pdu[5];
  mb_request r;
  for (uint16_t count = 1; count <= MB_READ_MAX; count++) {
    assert_int_equal(mb_pdu_read_req(pdu, sizeof pdu, 0x03, 40000, count), 5);
    assert_int_equal(mb_pdu_parse_read_req(pdu, 5, &r), MB_OK);
    assert_int_equal(r.fc, 0x03);
    assert_int_equal(r.addr, 40000);
    assert_int_equal(r.count, count);
  }
  /* Count 0 and 126 are refused, with the fields filled so a server can
   * answer "illegal data value". */
  const uint8_t zero[] = {0x04, 0x00, 0x10, 0x00, 0x00};
  assert_int_equal(mb_pdu_parse_read_req(zero, 5, &r), MB_ERANGE);
  assert_int_equal(r.fc, 0x04);
  assert_int_equal(r.addr, 0x10);
  const uint8_t many[] = {0x03, 0x00, 0x00, 0x00, 0x7E};
  assert_int_equal(mb_pdu_parse_read_req(many, 5, &r), MB_ERANGE);
  assert_int_equal(r.count, 126);

  /* Every truncation, and one byte too many. */
  const uint8_t ok[] = {0x03, 0x00, 0x01, 0x00, 0x02, 0xFF};
  for (size_t len = 0; len < 5; len++) {
    uint8_t *p = exact(ok, len);
    assert_int_equal(mb_pdu_parse_read_req(p, len, &r), MB_EMALFORMED);
    free(p);
  }
  assert_int_equal(mb_pdu_parse_read_req(ok, 6, &r), MB_EMALFORMED);

  /* An unknown function code parses, so the server can refuse it. */
  const uint8_t odd[] = {0x2B, 0x0E, 0x01, 0x00};
  r.addr = 7;
  r.count = 7;
  assert_int_equal(mb_pdu_parse_read_req(odd, sizeof odd, &r), MB_OK);
  assert_int_equal(r.fc, 0x2B);
  assert_int_equal(r.addr, 0);
  assert_int_equal(r.count, 0);
  assert_int_equal(mb_pdu_parse_read_req(odd, 1, &r), MB_OK);
  assert_int_equal(mb_pdu_parse_read_req(NULL, 5, &r), MB_EMALFORMED);
}

/* --- response PDUs -------------------------------------------------------- */

static void test_read_resp_roundtrip(void **state) {
  (void)state;
  uint16_t regs[MB_READ_MAX], back[MB_READ_MAX];
  for (int i = 0; i < MB_READ_MAX; i++) regs[i] = (uint16_t)(i * 0x0101 + 7);
  uint8_t pdu[MB_PDU_MAX];
  const uint16_t counts[] = {1, 2, 10, 124, 125};
  for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
    uint16_t n = counts[k];
    int len = mb_pdu_read_resp(pdu, sizeof pdu, 0x03, regs, n);
    assert_int_equal(len, 2 + 2 * n);
    assert_int_equal(pdu[0], 0x03);
    assert_int_equal(pdu[1], 2 * n);
    memset(back, 0, sizeof back);
    assert_int_equal(
        mb_pdu_parse_read_resp(pdu, (size_t)len, 0x03, n, back, NULL), MB_OK);
    assert_memory_equal(back, regs, n * sizeof regs[0]);
  }
  /* Big-endian words on the wire. */
  const uint16_t one = 0xABCD;
  assert_int_equal(mb_pdu_read_resp(pdu, sizeof pdu, 0x04, &one, 1), 4);
  const uint8_t want[] = {0x04, 0x02, 0xAB, 0xCD};
  assert_memory_equal(pdu, want, 4);

  assert_int_equal(mb_pdu_read_resp(pdu, sizeof pdu, 0x03, regs, 0),
                   MB_ERANGE);
  assert_int_equal(mb_pdu_read_resp(pdu, sizeof pdu, 0x03, regs, 126),
                   MB_ERANGE);
  assert_int_equal(mb_pdu_read_resp(pdu, 3, 0x03, regs, 1), MB_ESPACE);
  assert_int_equal(mb_pdu_read_resp(pdu, sizeof pdu, 0x10, regs, 1),
                   MB_EMALFORMED);
}

static void test_read_resp_errors(void **state) {
  (void)state;
  uint16_t regs[4];
  uint8_t exc = 0;
  /* Byte count says 4 registers, we asked for 3. */
  const uint8_t four[] = {0x03, 0x08, 0, 1, 0, 2, 0, 3, 0, 4};
  assert_int_equal(mb_pdu_parse_read_resp(four, sizeof four, 0x03, 3, regs,
                                          &exc),
                   MB_EMISMATCH);
  assert_int_equal(
      mb_pdu_parse_read_resp(four, sizeof four, 0x03, 4, regs, &exc), MB_OK);
  assert_int_equal(regs[3], 4);
  /* Byte count and length disagree: inconsistent in itself. */
  assert_int_equal(mb_pdu_parse_read_resp(four, sizeof four - 1, 0x03, 4,
                                          regs, &exc),
                   MB_EMALFORMED);
  const uint8_t odd[] = {0x03, 0x03, 0, 1, 2};
  assert_int_equal(mb_pdu_parse_read_resp(odd, sizeof odd, 0x03, 1, regs,
                                          &exc),
                   MB_EMALFORMED);
  const uint8_t empty[] = {0x03, 0x00};
  assert_int_equal(mb_pdu_parse_read_resp(empty, 2, 0x03, 1, regs, &exc),
                   MB_EMALFORMED);
  /* The answer to another function. */
  const uint8_t other[] = {0x04, 0x02, 0, 1};
  assert_int_equal(mb_pdu_parse_read_resp(other, 4, 0x03, 1, regs, &exc),
                   MB_EMISMATCH);
  /* Asking for 0 or 126 registers is refused before looking. */
  assert_int_equal(mb_pdu_parse_read_resp(four, sizeof four, 0x03, 0, regs,
                                          &exc),
                   MB_ERANGE);
  assert_int_equal(mb_pdu_parse_read_resp(four, sizeof four, 0x03, 126, regs,
                                          &exc),
                   MB_ERANGE);
  /* Every truncation of a good answer fails without reading past it. */
  for (size_t len = 0; len < sizeof four; len++) {
    uint8_t *p = exact(four, len);
    int rc = mb_pdu_parse_read_resp(p, len, 0x03, 4, regs, &exc);
    assert_true(rc == MB_EMALFORMED || rc == MB_EMISMATCH);
    free(p);
  }
}

static void test_exception(void **state) {
  (void)state;
  uint8_t pdu[2];
  assert_int_equal(mb_pdu_exception(pdu, sizeof pdu, 0x03,
                                    MB_EX_ILLEGAL_ADDRESS),
                   2);
  assert_int_equal(pdu[0], 0x83);
  assert_int_equal(pdu[1], 0x02);
  uint16_t regs[2] = {0xAAAA, 0xBBBB};
  uint8_t exc = 0;
  assert_int_equal(mb_pdu_parse_read_resp(pdu, 2, 0x03, 2, regs, &exc),
                   MB_EEXCEPTION);
  assert_int_equal(exc, MB_EX_ILLEGAL_ADDRESS);
  assert_int_equal(regs[0], 0xAAAA); /* untouched */

  /* An exception to another function does not answer ours. */
  const uint8_t other[] = {0x84, 0x04};
  assert_int_equal(mb_pdu_parse_read_resp(other, 2, 0x03, 1, regs, &exc),
                   MB_EMISMATCH);
  /* An exception is exactly two bytes. */
  const uint8_t longer[] = {0x83, 0x02, 0x00};
  assert_int_equal(mb_pdu_parse_read_resp(longer, 3, 0x03, 1, regs, &exc),
                   MB_EMALFORMED);
  assert_int_equal(mb_pdu_parse_read_resp(longer, 1, 0x03, 1, regs, &exc),
                   MB_EMALFORMED);

  assert_int_equal(mb_pdu_exception(pdu, 1, 0x03, 2), MB_ESPACE);
  assert_int_equal(mb_pdu_exception(pdu, 2, 0x83, 2), MB_EMALFORMED);
  assert_int_equal(mb_pdu_exception(pdu, 2, 0x00, 2), MB_EMALFORMED);
  assert_int_equal(mb_pdu_exception(pdu, 2, 0x03, 0), MB_ERANGE);
  assert_int_equal(mb_pdu_exception(pdu, 2, 0x2B, MB_EX_ILLEGAL_FUNCTION), 2);
  assert_int_equal(pdu[0], 0xAB);
}

/* --- RTU frames ------------------------------------------------------------ */

static int make_resp_frame(uint8_t *frame, uint8_t unit, uint8_t fc,
                           uint16_t count, uint16_t base) {
  uint16_t regs[MB_READ_MAX];
  uint8_t pdu[MB_PDU_MAX];
  for (uint16_t i = 0; i < count; i++) regs[i] = (uint16_t)(base + i);
  int plen = mb_pdu_read_resp(pdu, sizeof pdu, fc, regs, count);
  assert_true(plen > 0);
  return mb_rtu_frame(frame, MB_RTU_MAX, unit, pdu, (size_t)plen);
}

static void test_rtu_read_resp(void **state) {
  (void)state;
  uint8_t frame[MB_RTU_MAX];
  int len = make_resp_frame(frame, 7, 0x04, 3, 100);
  assert_int_equal(len, 5 + 6);
  uint16_t regs[3] = {0};
  uint8_t exc = 0;
  assert_int_equal(mb_rtu_parse_read_resp(frame, (size_t)len, 7, 0x04, 3,
                                          regs, &exc),
                   MB_OK);
  assert_int_equal(regs[0], 100);
  assert_int_equal(regs[2], 102);
  /* The same answer, sent to unit 7, read as the answer to unit 8. */
  assert_int_equal(mb_rtu_parse_read_resp(frame, (size_t)len, 8, 0x04, 3,
                                          regs, &exc),
                   MB_EUNIT);
  /* The CRC is judged before the unit. */
  frame[len - 1] ^= 0x01;
  assert_int_equal(mb_rtu_parse_read_resp(frame, (size_t)len, 8, 0x04, 3,
                                          regs, &exc),
                   MB_ECRC);
  frame[len - 1] ^= 0x01;
  /* The wrong function code and count. */
  assert_int_equal(mb_rtu_parse_read_resp(frame, (size_t)len, 7, 0x03, 3,
                                          regs, &exc),
                   MB_EMISMATCH);
  assert_int_equal(mb_rtu_parse_read_resp(frame, (size_t)len, 7, 0x04, 2,
                                          regs, &exc),
                   MB_EMISMATCH);

  /* An exception frame. */
  uint8_t pdu[2], ef[8];
  mb_pdu_exception(pdu, 2, 0x04, MB_EX_DEVICE_FAILURE);
  assert_int_equal(mb_rtu_frame(ef, sizeof ef, 7, pdu, 2), 5);
  assert_int_equal(mb_rtu_parse_read_resp(ef, 5, 7, 0x04, 3, regs, &exc),
                   MB_EEXCEPTION);
  assert_int_equal(exc, MB_EX_DEVICE_FAILURE);
}

static void test_rtu_truncated_every_length(void **state) {
  (void)state;
  uint8_t frame[MB_RTU_MAX];
  int full = make_resp_frame(frame, 1, 0x03, MB_READ_MAX, 0x1000);
  assert_int_equal(full, 255);
  uint16_t regs[MB_READ_MAX];
  uint8_t exc;
  for (int len = 0; len < full; len++) {
    uint8_t *p = exact(frame, (size_t)len);
    int rc = mb_rtu_parse_read_resp(p, (size_t)len, 1, 0x03, MB_READ_MAX,
                                    regs, &exc);
    assert_true(rc == MB_EMALFORMED || rc == MB_ECRC);
    /* The length judged from a prefix is "more" or the full length. */
    int fl = mb_rtu_frame_len(p, (size_t)len, false);
    assert_true(fl == MB_ENEEDMORE || fl == full);
    free(p);
  }
  uint8_t *p = exact(frame, (size_t)full);
  assert_int_equal(mb_rtu_parse_read_resp(p, (size_t)full, 1, 0x03,
                                          MB_READ_MAX, regs, &exc),
                   MB_OK);
  assert_int_equal(regs[124], 0x1000 + 124);
  free(p);
}

static void test_rtu_frame_len(void **state) {
  (void)state;
  /* Responses. */
  const uint8_t r03[] = {1, 0x03, 0x04};
  assert_int_equal(mb_rtu_frame_len(r03, 3, false), 9);
  assert_int_equal(mb_rtu_frame_len(r03, 2, false), MB_ENEEDMORE);
  assert_int_equal(mb_rtu_frame_len(r03, 1, false), MB_ENEEDMORE);
  assert_int_equal(mb_rtu_frame_len(r03, 0, false), MB_ENEEDMORE);
  const uint8_t r04[] = {1, 0x04, 0xFA};
  assert_int_equal(mb_rtu_frame_len(r04, 3, false), 255);
  const uint8_t r01[] = {1, 0x01, 0x01};
  assert_int_equal(mb_rtu_frame_len(r01, 3, false), 6);
  const uint8_t r02[] = {1, 0x02, 0x03};
  assert_int_equal(mb_rtu_frame_len(r02, 3, false), 8);
  const uint8_t rex[] = {1, 0x83};
  assert_int_equal(mb_rtu_frame_len(rex, 2, false), 5);
  const uint8_t r06[] = {1, 0x06};
  assert_int_equal(mb_rtu_frame_len(r06, 2, false), 8);
  const uint8_t r10[] = {1, 0x10};
  assert_int_equal(mb_rtu_frame_len(r10, 2, false), 8);
  /* A register answer with an odd, zero or oversized byte count. */
  const uint8_t rodd[] = {1, 0x03, 0x05};
  assert_int_equal(mb_rtu_frame_len(rodd, 3, false), MB_EMALFORMED);
  const uint8_t rzero[] = {1, 0x03, 0x00};
  assert_int_equal(mb_rtu_frame_len(rzero, 3, false), MB_EMALFORMED);
  const uint8_t rbig[] = {1, 0x03, 0xFC};
  assert_int_equal(mb_rtu_frame_len(rbig, 3, false), MB_EMALFORMED);
  /* Unknown function codes. */
  const uint8_t unk[][2] = {{1, 0x00}, {1, 0x07}, {1, 0x2B}, {1, 0x05},
                            {1, 0x7F}};
  for (size_t i = 0; i < sizeof unk / sizeof unk[0]; i++)
    assert_int_equal(mb_rtu_frame_len(unk[i], 2, false), MB_EMALFORMED);

  /* Requests. */
  const uint8_t q[][2] = {{1, 0x03}, {1, 0x04}, {1, 0x05}, {1, 0x06}};
  for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
    assert_int_equal(mb_rtu_frame_len(q[i], 2, true), 8);
  const uint8_t q10[] = {1, 0x10, 0, 0, 0, 2, 4};
  assert_int_equal(mb_rtu_frame_len(q10, 7, true), 13);
  assert_int_equal(mb_rtu_frame_len(q10, 6, true), MB_ENEEDMORE);
  const uint8_t q10odd[] = {1, 0x10, 0, 0, 0, 2, 3};
  assert_int_equal(mb_rtu_frame_len(q10odd, 7, true), MB_EMALFORMED);
  const uint8_t qex[] = {1, 0x83};
  assert_int_equal(mb_rtu_frame_len(qex, 2, true), MB_EMALFORMED);
  assert_int_equal(mb_rtu_frame_len(NULL, 8, true), MB_ENEEDMORE);
}

/* Every request a client may send is framed, so a server can answer the
 * ones it does not serve with "illegal function". */
static void test_rtu_request_len(void **state) {
  (void)state;
  /* Fixed length: reads of bits and registers, single writes. */
  const uint8_t fixed[][2] = {{1, 0x01}, {1, 0x02}, {1, 0x03},
                              {1, 0x04}, {1, 0x05}, {1, 0x06}};
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
    assert_int_equal(mb_rtu_frame_len(fixed[i], 2, true), 8);
  assert_int_equal(mb_rtu_frame_len(fixed[0], 1, true), MB_ENEEDMORE);

  /* 0x0F write multiple coils: 10 coils in 2 bytes; the byte count is the
   * seventh byte. */
  const uint8_t q0f[] = {1, 0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02};
  for (size_t have = 2; have < 7; have++)
    assert_int_equal(mb_rtu_frame_len(q0f, have, true), MB_ENEEDMORE);
  assert_int_equal(mb_rtu_frame_len(q0f, 7, true), 11);
  const uint8_t q0f1[] = {1, 0x0F, 0, 0, 0, 1, 1};
  assert_int_equal(mb_rtu_frame_len(q0f1, 7, true), 10);
  const uint8_t q0fmax[] = {1, 0x0F, 0, 0, 0x07, 0xB0, 246};
  assert_int_equal(mb_rtu_frame_len(q0fmax, 7, true), 255);
  const uint8_t q0fzero[] = {1, 0x0F, 0, 0, 0, 1, 0};
  assert_int_equal(mb_rtu_frame_len(q0fzero, 7, true), MB_EMALFORMED);
  const uint8_t q0fbig[] = {1, 0x0F, 0, 0, 0, 1, 247};
  assert_int_equal(mb_rtu_frame_len(q0fbig, 7, true), MB_EMALFORMED);

  /* 0x17 read/write multiple registers: read 6 at 3, write 3 at 14 (6
   * bytes); the byte count is the eleventh byte. */
  const uint8_t q17[] = {1,    0x17, 0x00, 0x03, 0x00, 0x06,
                         0x00, 0x0E, 0x00, 0x03, 0x06};
  for (size_t have = 2; have < 11; have++)
    assert_int_equal(mb_rtu_frame_len(q17, have, true), MB_ENEEDMORE);
  assert_int_equal(mb_rtu_frame_len(q17, 11, true), 19);
  const uint8_t q17max[] = {1, 0x17, 0, 0, 0, 1, 0, 0, 0, 121, 242};
  assert_int_equal(mb_rtu_frame_len(q17max, 11, true), 255);
  const uint8_t q17odd[] = {1, 0x17, 0, 0, 0, 1, 0, 0, 0, 1, 3};
  assert_int_equal(mb_rtu_frame_len(q17odd, 11, true), MB_EMALFORMED);
  const uint8_t q17zero[] = {1, 0x17, 0, 0, 0, 1, 0, 0, 0, 1, 0};
  assert_int_equal(mb_rtu_frame_len(q17zero, 11, true), MB_EMALFORMED);
  const uint8_t q17big[] = {1, 0x17, 0, 0, 0, 1, 0, 0, 0, 122, 244};
  assert_int_equal(mb_rtu_frame_len(q17big, 11, true), MB_EMALFORMED);

  /* Functions whose request length is not known stay unframeable. */
  const uint8_t unk[][2] = {{1, 0x00}, {1, 0x07}, {1, 0x08}, {1, 0x11},
                            {1, 0x16}, {1, 0x2B}, {1, 0x83}, {1, 0x7F}};
  for (size_t i = 0; i < sizeof unk / sizeof unk[0]; i++)
    assert_int_equal(mb_rtu_frame_len(unk[i], 2, true), MB_EMALFORMED);
}

/* --- MBAP ------------------------------------------------------------------ */

static void test_mbap(void **state) {
  (void)state;
  uint8_t pdu[5], adu[MB_TCP_MAX];
  mb_pdu_read_req(pdu, sizeof pdu, 0x03, 0, 10);
  assert_int_equal(mb_mbap_frame(adu, sizeof adu, 0x1234, 1, pdu, 5), 12);
  const uint8_t want[] = {0x12, 0x34, 0x00, 0x00, 0x00, 0x06,
                          0x01, 0x03, 0x00, 0x00, 0x00, 0x0A};
  assert_memory_equal(adu, want, sizeof want);

  mb_mbap h;
  assert_int_equal(mb_mbap_parse(adu, 12, &h), 12);
  assert_int_equal(h.tid, 0x1234);
  assert_int_equal(h.proto, 0);
  assert_int_equal(h.len, 6);
  assert_int_equal(h.unit, 1);
  for (size_t have = 0; have < MB_MBAP_HDR; have++) {
    uint8_t *p = exact(adu, have);
    assert_int_equal(mb_mbap_parse(p, have, &h), MB_ENEEDMORE);
    free(p);
  }
  /* The header alone tells the length. */
  assert_int_equal(mb_mbap_parse(adu, MB_MBAP_HDR, &h), 12);

  uint8_t bad[MB_MBAP_HDR];
  memcpy(bad, want, sizeof bad);
  bad[3] = 0x01; /* protocol id 1 */
  assert_int_equal(mb_mbap_parse(bad, sizeof bad, &h), MB_EMALFORMED);
  assert_int_equal(h.tid, 0x1234); /* still filled, for the record */
  memcpy(bad, want, sizeof bad);
  bad[4] = 0x00;
  bad[5] = 0x01; /* unit id and no PDU */
  assert_int_equal(mb_mbap_parse(bad, sizeof bad, &h), MB_EMALFORMED);
  bad[5] = 0x00;
  assert_int_equal(mb_mbap_parse(bad, sizeof bad, &h), MB_EMALFORMED);
  bad[5] = 0xFF; /* 255: one more than unit id + 253 */
  assert_int_equal(mb_mbap_parse(bad, sizeof bad, &h), MB_EMALFORMED);
  bad[5] = 0xFE;
  assert_int_equal(mb_mbap_parse(bad, sizeof bad, &h), 260);
  bad[4] = 0x01;
  bad[5] = 0x00;
  assert_int_equal(mb_mbap_parse(bad, sizeof bad, &h), MB_EMALFORMED);
  bad[4] = 0x00;
  bad[5] = 0x02;
  assert_int_equal(mb_mbap_parse(bad, sizeof bad, &h), 8);

  /* The biggest read answer (function, count, 250 bytes) fits MB_TCP_MAX,
   * which holds the longest PDU any header may announce. */
  uint16_t regs[MB_READ_MAX] = {0};
  uint8_t rp[MB_PDU_MAX];
  int rl = mb_pdu_read_resp(rp, sizeof rp, 0x03, regs, MB_READ_MAX);
  assert_int_equal(mb_mbap_frame(adu, sizeof adu, 1, 1, rp, (size_t)rl),
                   MB_MBAP_HDR + 2 + 2 * MB_READ_MAX);
  assert_int_equal(MB_TCP_MAX, MB_MBAP_HDR + MB_PDU_MAX);
  assert_int_equal(mb_mbap_frame(adu, 11, 1, 1, pdu, 5), MB_ESPACE);
  assert_int_equal(mb_mbap_frame(adu, sizeof adu, 1, 1, pdu, 0),
                   MB_EMALFORMED);
}

/* --- streaming framer ------------------------------------------------------ */

/* Three answers back to back: two reads and an exception. */
static size_t three_frames(uint8_t *buf, size_t *lens) {
  size_t off = 0;
  int n = make_resp_frame(buf, 1, 0x03, 2, 10);
  lens[0] = (size_t)n;
  off += (size_t)n;
  n = make_resp_frame(buf + off, 2, 0x04, 125, 500);
  lens[1] = (size_t)n;
  off += (size_t)n;
  uint8_t pdu[2];
  mb_pdu_exception(pdu, 2, 0x03, MB_EX_BUSY);
  n = mb_rtu_frame(buf + off, MB_RTU_MAX, 3, pdu, 2);
  lens[2] = (size_t)n;
  return off + (size_t)n;
}

static void expect_frames(mb_rtu_framer *f, const uint8_t *all,
                          const size_t *lens, size_t nframes) {
  size_t off = 0;
  uint8_t out[MB_RTU_MAX];
  for (size_t i = 0; i < nframes; i++) {
    int n = mb_rtu_framer_next(f, out, sizeof out);
    assert_int_equal(n, (int)lens[i]);
    assert_memory_equal(out, all + off, lens[i]);
    off += lens[i];
  }
  assert_int_equal(mb_rtu_framer_next(f, out, sizeof out), MB_ENEEDMORE);
}

static void test_framer_byte_at_a_time(void **state) {
  (void)state;
  uint8_t all[3 * MB_RTU_MAX];
  size_t lens[3];
  size_t total = three_frames(all, lens);
  mb_rtu_framer f;
  mb_rtu_framer_init(&f, false);
  uint8_t out[MB_RTU_MAX];
  size_t got = 0, off = 0;
  for (size_t i = 0; i < total; i++) {
    assert_int_equal(mb_rtu_framer_feed(&f, all + i, 1), 1);
    int n = mb_rtu_framer_next(&f, out, sizeof out);
    if (n == MB_ENEEDMORE) continue;
    assert_int_equal(n, (int)lens[got]);
    assert_memory_equal(out, all + off, lens[got]);
    /* A frame comes out exactly when its last byte arrives. */
    assert_int_equal(i + 1, off + lens[got]);
    off += lens[got];
    got++;
  }
  assert_int_equal(got, 3);
  assert_int_equal(f.crc_errors, 0);
  assert_int_equal(f.dropped_bytes, 0);
}

static void test_framer_merged(void **state) {
  (void)state;
  uint8_t all[3 * MB_RTU_MAX];
  size_t lens[3];
  size_t total = three_frames(all, lens);
  mb_rtu_framer f;
  mb_rtu_framer_init(&f, false);
  /* More than the buffer holds: feed what fits, take frames, feed on. */
  size_t fed = mb_rtu_framer_feed(&f, all, total);
  assert_true(fed <= sizeof f.buf);
  uint8_t out[MB_RTU_MAX];
  size_t off = 0;
  for (size_t i = 0; i < 3; i++) {
    int n;
    while ((n = mb_rtu_framer_next(&f, out, sizeof out)) == MB_ENEEDMORE) {
      assert_true(fed < total);
      fed += mb_rtu_framer_feed(&f, all + fed, total - fed);
    }
    assert_int_equal(n, (int)lens[i]);
    assert_memory_equal(out, all + off, lens[i]);
    off += lens[i];
  }
  assert_int_equal(fed, total);

  /* Three small frames in one feed. */
  uint8_t small[64];
  size_t slen[3], soff = 0;
  for (int i = 0; i < 3; i++) {
    int n = make_resp_frame(small + soff, (uint8_t)(i + 1), 0x03, 3,
                            (uint16_t)(i * 10));
    slen[i] = (size_t)n;
    soff += (size_t)n;
  }
  mb_rtu_framer_init(&f, false);
  assert_int_equal(mb_rtu_framer_feed(&f, small, soff), soff);
  expect_frames(&f, small, slen, 3);
}

static void test_framer_split_every_position(void **state) {
  (void)state;
  uint8_t all[3 * MB_RTU_MAX];
  size_t lens[3];
  size_t total = three_frames(all, lens);
  for (size_t cut = 0; cut <= total; cut++) {
    mb_rtu_framer f;
    mb_rtu_framer_init(&f, false);
    uint8_t out[MB_RTU_MAX];
    size_t off = 0, got = 0, fed = 0;
    const size_t parts[2][2] = {{0, cut}, {cut, total}};
    for (int p = 0; p < 2; p++) {
      fed = parts[p][0];
      while (fed < parts[p][1]) {
        fed += mb_rtu_framer_feed(&f, all + fed, parts[p][1] - fed);
        int n;
        while ((n = mb_rtu_framer_next(&f, out, sizeof out)) > 0) {
          assert_int_equal(n, (int)lens[got]);
          assert_memory_equal(out, all + off, lens[got]);
          off += lens[got];
          got++;
        }
        assert_int_equal(n, MB_ENEEDMORE);
      }
    }
    assert_int_equal(got, 3);
  }
}

static void test_framer_bad_crc(void **state) {
  (void)state;
  uint8_t all[3 * MB_RTU_MAX];
  size_t lens[3];
  size_t total = three_frames(all, lens);
  all[lens[0] + 10] ^= 0x40; /* inside the second frame's data */
  mb_rtu_framer f;
  mb_rtu_framer_init(&f, false);
  uint8_t out[MB_RTU_MAX];
  size_t fed = mb_rtu_framer_feed(&f, all, total);
  assert_int_equal(mb_rtu_framer_next(&f, out, sizeof out), (int)lens[0]);
  int n;
  while ((n = mb_rtu_framer_next(&f, out, sizeof out)) == MB_ENEEDMORE)
    fed += mb_rtu_framer_feed(&f, all + fed, total - fed);
  assert_int_equal(n, MB_ECRC);
  assert_int_equal(f.crc_errors, 1);
  while ((n = mb_rtu_framer_next(&f, out, sizeof out)) == MB_ENEEDMORE)
    fed += mb_rtu_framer_feed(&f, all + fed, total - fed);
  assert_int_equal(n, (int)lens[2]);
  assert_memory_equal(out, all + lens[0] + lens[1], lens[2]);
  assert_int_equal(f.dropped_bytes, 0);
}

static void test_framer_noise(void **state) {
  (void)state;
  mb_rtu_framer f;
  mb_rtu_framer_init(&f, false);
  const uint8_t noise[] = {0x55, 0x2B, 0x99, 0x01, 0x03, 0x02};
  uint8_t out[MB_RTU_MAX];
  assert_int_equal(mb_rtu_framer_feed(&f, noise, sizeof noise), sizeof noise);
  assert_int_equal(mb_rtu_framer_next(&f, out, sizeof out), MB_EMALFORMED);
  assert_int_equal(f.dropped_bytes, sizeof noise);
  assert_int_equal(f.len, 0);
  assert_int_equal(mb_rtu_framer_next(&f, out, sizeof out), MB_ENEEDMORE);

  /* After the noise, frames come through again. */
  uint8_t frame[MB_RTU_MAX];
  int n = make_resp_frame(frame, 9, 0x03, 1, 42);
  mb_rtu_framer_feed(&f, frame, (size_t)n);
  assert_int_equal(mb_rtu_framer_next(&f, out, sizeof out), n);

  /* Too small an output buffer leaves the frame in place. */
  mb_rtu_framer_feed(&f, frame, (size_t)n);
  assert_int_equal(mb_rtu_framer_next(&f, out, 4), MB_ESPACE);
  assert_int_equal(mb_rtu_framer_next(&f, out, sizeof out), n);

  /* Reset drops a partial frame. */
  mb_rtu_framer_feed(&f, frame, 3);
  mb_rtu_framer_reset(&f);
  assert_int_equal(f.len, 0);
  mb_rtu_framer_feed(&f, frame, (size_t)n);
  assert_int_equal(mb_rtu_framer_next(&f, out, sizeof out), n);
}

static void test_framer_requests(void **state) {
  (void)state;
  mb_rtu_framer f;
  mb_rtu_framer_init(&f, true);
  uint8_t buf[64], pdu[8];
  size_t off = 0;
  size_t lens[2];
  mb_pdu_read_req(pdu, sizeof pdu, 0x04, 3, 4);
  lens[0] = (size_t)mb_rtu_frame(buf, sizeof buf, 5, pdu, 5);
  off += lens[0];
  /* Write multiple registers: 2 registers, 4 bytes. */
  const uint8_t wr[] = {0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 1, 2, 3, 4};
  lens[1] = (size_t)mb_rtu_frame(buf + off, sizeof buf - off, 5, wr,
                                 sizeof wr);
  assert_int_equal(lens[1], 13);
  off += lens[1];
  for (size_t i = 0; i < off; i++) mb_rtu_framer_feed(&f, buf + i, 1);
  expect_frames(&f, buf, lens, 2);
}

/* Requests a register server does not serve (bits, 0x0F, 0x17) come out of
 * the framer whole, and the stream stays framed after them: the server
 * answers each with "illegal function" and then serves the next read. */
static void test_framer_other_requests(void **state) {
  (void)state;
  uint8_t buf[128];
  size_t lens[5], off = 0;
  const uint8_t coils[] = {0x01, 0x00, 0x13, 0x00, 0x25};
  const uint8_t inputs[] = {0x02, 0x00, 0xC4, 0x00, 0x16};
  const uint8_t wcoils[] = {0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01};
  const uint8_t rw[] = {0x17, 0x00, 0x03, 0x00, 0x06, 0x00, 0x0E,
                        0x00, 0x03, 0x06, 0x00, 0xFF, 0x00, 0xFF,
                        0x00, 0xFF};
  const struct {
    const uint8_t *pdu;
    size_t len;
  } reqs[] = {{coils, sizeof coils},
              {inputs, sizeof inputs},
              {wcoils, sizeof wcoils},
              {rw, sizeof rw}};
  for (size_t i = 0; i < 4; i++) {
    lens[i] = (size_t)mb_rtu_frame(buf + off, sizeof buf - off, 9,
                                   reqs[i].pdu, reqs[i].len);
    off += lens[i];
  }
  assert_int_equal(lens[0], 8);
  assert_int_equal(lens[2], 11);
  assert_int_equal(lens[3], 19);
  uint8_t pdu[8];
  mb_pdu_read_req(pdu, sizeof pdu, 0x03, 7, 2);
  lens[4] = (size_t)mb_rtu_frame(buf + off, sizeof buf - off, 9, pdu, 5);
  off += lens[4];

  /* Byte by byte and all at once. */
  mb_rtu_framer f;
  mb_rtu_framer_init(&f, true);
  for (size_t i = 0; i < off; i++) mb_rtu_framer_feed(&f, buf + i, 1);
  expect_frames(&f, buf, lens, 5);
  mb_rtu_framer_init(&f, true);
  assert_int_equal(mb_rtu_framer_feed(&f, buf, off), off);
  expect_frames(&f, buf, lens, 5);
  assert_int_equal(f.dropped_bytes, 0);
  assert_int_equal(f.crc_errors, 0);

  /* The server learns the function code it has to refuse. */
  mb_request req;
  assert_int_equal(mb_pdu_parse_read_req(buf + 1, lens[0] - 3, &req), MB_OK);
  assert_int_equal(req.fc, 0x01);
  assert_int_equal(mb_pdu_parse_read_req(buf + off - lens[4] - lens[3] + 1,
                                         lens[3] - 3, &req),
                   MB_OK);
  assert_int_equal(req.fc, 0x17);
}

static void test_framer_full(void **state) {
  (void)state;
  mb_rtu_framer f;
  mb_rtu_framer_init(&f, false);
  uint8_t junk[3 * MB_RTU_MAX];
  memset(junk, 0x01, sizeof junk); /* unit 1, fc 1, byte count 1 ... */
  size_t n = mb_rtu_framer_feed(&f, junk, sizeof junk);
  assert_int_equal(n, sizeof f.buf);
  assert_int_equal(mb_rtu_framer_feed(&f, junk, 1), 0);
  uint8_t out[MB_RTU_MAX];
  /* 01 01 01 01 01 -> a 6-byte frame with a bad CRC: consumed. */
  assert_int_equal(mb_rtu_framer_next(&f, out, sizeof out), MB_ECRC);
  assert_int_equal(f.len, sizeof f.buf - 6);
  assert_int_equal(mb_rtu_framer_feed(&f, junk, sizeof junk), 6);
}

/* --- timing ----------------------------------------------------------------- */

static void test_wire_time(void **state) {
  (void)state;
  assert_int_equal(mb_rtu_char_bits(8, false, 1), 10);
  assert_int_equal(mb_rtu_char_bits(8, true, 1), 11);
  assert_int_equal(mb_rtu_char_bits(8, false, 2), 11);
  assert_int_equal(mb_rtu_char_bits(7, true, 2), 11);
  assert_true(mb_rtu_char_bits(9, false, 1) < 0);
  assert_true(mb_rtu_char_bits(8, false, 3) < 0);
  assert_true(mb_rtu_char_bits(8, false, 0) < 0);

  /* 8 bytes * 10 bits at 9600 baud = 8333.3 us, rounded up. */
  assert_int_equal(mb_rtu_wire_us(8, 9600, 10), 8334);
  assert_int_equal(mb_rtu_wire_us(256, 115200, 11), 24445);
  assert_int_equal(mb_rtu_wire_us(960, 9600, 10), 1000000);
  assert_int_equal(mb_rtu_wire_us(0, 9600, 10), 0);
  assert_int_equal(mb_rtu_wire_us(8, 0, 10), 0);
  assert_int_equal(mb_rtu_wire_us(8, -9600, 10), 0);
  /* The largest size: saturated where its bits or its microseconds
   * overflow 64 bits (a 64-bit size_t), exact where they fit (a 32-bit one:
   * 4.7e16 us). */
#if SIZE_MAX > UINT64_MAX / 11
  assert_true(mb_rtu_wire_us(SIZE_MAX, 1, 11) == UINT64_MAX);
  assert_true(mb_rtu_wire_us(UINT64_MAX / 11, 1, 11) == UINT64_MAX);
#else
  assert_true(mb_rtu_wire_us(SIZE_MAX, 1, 11) == (uint64_t)SIZE_MAX * 11u * 1000000u);
#endif

  /* 3.5 characters of 11 bits at 9600: 4010.4 us, rounded up. */
  assert_int_equal(mb_rtu_silence_us(9600, 11), 4011);
  assert_int_equal(mb_rtu_silence_us(19200, 10), 1823);
  assert_int_equal(mb_rtu_silence_us(1200, 10), 29167);
  /* Fixed above 19200. */
  assert_int_equal(mb_rtu_silence_us(38400, 11), 1750);
  assert_int_equal(mb_rtu_silence_us(115200, 10), 1750);
  assert_int_equal(mb_rtu_silence_us(0, 10), 0);
}

static void test_strerror(void **state) {
  (void)state;
  for (int rc = MB_EMISMATCH; rc <= MB_OK; rc++) {
    const char *s = mb_proto_strerror(rc);
    assert_non_null(s);
    assert_true(strlen(s) > 0);
    for (int other = MB_EMISMATCH; other < rc; other++)
      assert_string_not_equal(s, mb_proto_strerror(other));
  }
  assert_string_equal(mb_proto_strerror(-100), "unknown error");
}

/* Random bytes through every parser, each in a block of exactly its length:
 * a deterministic smoke test of the bounds (the fuzzers go further). */
static uint32_t rng(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

static void test_random_bytes(void **state) {
  (void)state;
  uint32_t seed = 0x1234567u;
  mb_rtu_framer fq, fr;
  mb_rtu_framer_init(&fq, true);
  mb_rtu_framer_init(&fr, false);
  for (int iter = 0; iter < 20000; iter++) {
    size_t len = rng(&seed) % 300;
    uint8_t tmp[300];
    for (size_t i = 0; i < len; i++) tmp[i] = (uint8_t)rng(&seed);
    /* Bias towards plausible headers so the deeper paths run too. */
    if (len > 2 && (iter & 1)) tmp[1] = (uint8_t)(1 + rng(&seed) % 4);
    uint8_t *p = exact(tmp, len);
    uint16_t regs[MB_READ_MAX];
    uint8_t exc, unit;
    const uint8_t *pdu;
    size_t plen;
    mb_request req;
    mb_mbap h;
    uint16_t count = (uint16_t)(1 + rng(&seed) % MB_READ_MAX);
    (void)mb_pdu_parse_read_req(p, len, &req);
    (void)mb_pdu_parse_read_resp(p, len, 0x03, count, regs, &exc);
    (void)mb_rtu_parse(p, len, &unit, &pdu, &plen);
    (void)mb_rtu_parse_read_resp(p, len, 1, 0x04, count, regs, &exc);
    (void)mb_rtu_frame_len(p, len, true);
    (void)mb_rtu_frame_len(p, len, false);
    int ml = mb_mbap_parse(p, len, &h);
    assert_true(ml == MB_ENEEDMORE || ml == MB_EMALFORMED ||
                (ml >= 8 && ml <= 260));
    uint8_t out[MB_RTU_MAX];
    size_t off = 0;
    while (off < len) {
      off += mb_rtu_framer_feed(&fr, p + off, len - off);
      mb_rtu_framer_feed(&fq, p, len);
      int n;
      while ((n = mb_rtu_framer_next(&fr, out, sizeof out)) != MB_ENEEDMORE)
        assert_true(n == MB_ECRC || n == MB_EMALFORMED ||
                    (n >= 4 && n <= MB_RTU_MAX));
      while ((n = mb_rtu_framer_next(&fq, out, sizeof out)) != MB_ENEEDMORE)
        assert_true(n == MB_ECRC || n == MB_EMALFORMED ||
                    (n >= 4 && n <= MB_RTU_MAX));
    }
    free(p);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crc_known_vectors),
      cmocka_unit_test(test_rtu_frame_bytes),
      cmocka_unit_test(test_read_req_build),
      cmocka_unit_test(test_read_req_parse),
      cmocka_unit_test(test_read_resp_roundtrip),
      cmocka_unit_test(test_read_resp_errors),
      cmocka_unit_test(test_exception),
      cmocka_unit_test(test_rtu_read_resp),
      cmocka_unit_test(test_rtu_truncated_every_length),
      cmocka_unit_test(test_rtu_frame_len),
      cmocka_unit_test(test_rtu_request_len),
      cmocka_unit_test(test_mbap),
      cmocka_unit_test(test_framer_byte_at_a_time),
      cmocka_unit_test(test_framer_merged),
      cmocka_unit_test(test_framer_split_every_position),
      cmocka_unit_test(test_framer_bad_crc),
      cmocka_unit_test(test_framer_noise),
      cmocka_unit_test(test_framer_requests),
      cmocka_unit_test(test_framer_other_requests),
      cmocka_unit_test(test_framer_full),
      cmocka_unit_test(test_wire_time),
      cmocka_unit_test(test_strerror),
      cmocka_unit_test(test_random_bytes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
