/* Unit tests of the DTU packet filter (drivers/proto/dtu_filter.c):
 * registration and heartbeat packets taken out before the RTU framer,
 * between answers, inside one, in front of every packet, and data bytes that
 * look like a heartbeat left alone, also when they are common (a heartbeat
 * 0xFE in dense data, 0x00 in zero-rich data), and the work bounded when
 * every byte comes alone. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>
#include <time.h>

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
  /* Written in capitals, it is hex all the same, not 8 bytes of text. */
  assert_int_equal(dtu_packet_parse("HEX:AA01", b, sizeof b), 2);
  assert_int_equal(b[0], 0xAA);
  assert_int_equal(b[1], 0x01);
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

/* A fixed-seed generator (xorshift64): the same cases on every run. */
static uint64_t rng_state;

static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 11);
}

/* An answer of COUNT registers from unit 1 (function 0x03) in which PCT
 * percent of the data bytes are LIKE, the others anything else. */
static size_t dense_answer(uint8_t *out, uint16_t count, uint8_t like, unsigned pct) {
  uint8_t pdu[MB_PDU_MAX];
  pdu[0] = MB_FC_READ_HOLDING;
  pdu[1] = (uint8_t)(2 * count);
  for (size_t i = 0; i < 2u * count; i++)
    pdu[2 + i] = rng() % 100 < pct ? like : (uint8_t)(like + 1 + rng() % 255);
  int len = mb_rtu_frame(out, MB_RTU_MAX, 1, pdu, 2 + 2u * count);
  assert_true(len > 0);
  return (size_t)len;
}

typedef struct {
  unsigned cases, lost, wrong;
} tally;

/* Feed the chunks of IN (cut at CUTS[0..NCUTS-1], ascending) and judge
 * what comes out against the answer A: it must come out whole, and nothing
 * else with a good CRC. */
static void judge(dtu_filter *f, const uint8_t *in, size_t len, const size_t *cuts,
                  size_t ncuts, const uint8_t *a, size_t al, tally *t) {
  uint8_t out[MB_RTU_MAX];
  bool ok = false;
  size_t from = 0;
  for (size_t c = 0; c <= ncuts; c++) {
    size_t to = c < ncuts ? cuts[c] : len;
    while (from < to) {
      from += dtu_filter_feed(f, in + from, to - from);
      size_t k;
      while ((k = dtu_filter_next(f, out, sizeof out)) > 0) {
        if (k == al && memcmp(out, a, al) == 0) ok = true;
        else if (k >= 4 && mb_crc16(out, k) == 0) t->wrong++;
      }
    }
  }
  t->cases++;
  if (!ok) t->lost++;
}

/* One case: an answer of COUNT registers, PCT percent of its data bytes
 * equal to the one-byte heartbeat HB, cut in two packets with the
 * heartbeat between them: at the start of the second chunk (AT_END false)
 * or at the end of the first. EXPECT: the caller says the answer awaited. */
static void one_cut(uint8_t hb, uint16_t count, unsigned pct, bool at_end, bool expect,
                    tally *t) {
  uint8_t a[MB_RTU_MAX], in[MB_RTU_MAX + 1];
  size_t al = dense_answer(a, count, hb, pct);
  size_t cut = 1 + rng() % (al - 1);
  memcpy(in, a, cut);
  in[cut] = hb;
  memcpy(in + cut + 1, a + cut, al - cut);
  dtu_filter f;
  uint8_t h[1] = {hb};
  assert_int_equal(dtu_filter_init(&f, (const uint8_t *)"DTU-1", 5, false, h, 1), 0);
  if (expect) dtu_filter_expect(&f, 1, MB_FC_READ_HOLDING, al);
  size_t at = at_end ? cut + 1 : cut;
  judge(&f, in, al + 1, &at, 1, a, al, t);
  assert_true(f.work_max <= DTU_FILTER_BUDGET);
}

#define DENSE_CASES 2000

/* A 125-register answer whose data bytes are 0xFE one in ten, the DTU's
 * heartbeat 0xFE between its two packets: every answer comes out right. */
static void test_dense_heartbeat_bytes(void **state) {
  (void)state;
  rng_state = 0x9E3779B97F4A7C15u;
  tally t = {0};
  for (unsigned i = 0; i < DENSE_CASES; i++) {
    one_cut(0xFE, 125, 10, false, i & 1, &t);
    one_cut(0xFE, 125, 10, true, i & 1, &t);
  }
  print_message("heartbeat FE, 10%% FE data, 125 registers: %u cases, %u lost, %u wrong\n",
                t.cases, t.lost, t.wrong);
  assert_int_equal(t.lost, 0);
  assert_int_equal(t.wrong, 0);
}

/* A heartbeat 0x00 among registers three bytes in ten of which are 0. */
static void test_zero_heartbeat(void **state) {
  (void)state;
  rng_state = 0x2545F4914F6CDD1Du;
  tally t = {0};
  for (unsigned i = 0; i < DENSE_CASES; i++) {
    one_cut(0x00, 40, 30, false, i & 1, &t);
    one_cut(0x00, 125, 30, false, i & 1, &t);
    one_cut(0x00, 125, 30, true, i & 1, &t);
  }
  print_message("heartbeat 00, 30%% zero data, 40 and 125 registers: %u cases, %u lost, %u wrong\n",
                t.cases, t.lost, t.wrong);
  assert_int_equal(t.lost, 0);
  assert_int_equal(t.wrong, 0);
}

/* Every byte a chunk of its own (every byte a chunk start): answers with
 * dense look-alike bytes and heartbeats between them all come out right,
 * and no call of dtu_filter_next goes over its budget. */
static void test_byte_at_a_time(void **state) {
  (void)state;
  rng_state = 0xD1B54A32D192ED03u;
  static const struct {
    uint8_t hb;
    unsigned pct;
  } kinds[] = {{0xFE, 10}, {0x00, 30}};
  for (size_t kd = 0; kd < 2; kd++) {
    dtu_filter f;
    uint8_t h[1] = {kinds[kd].hb};
    assert_int_equal(dtu_filter_init(&f, (const uint8_t *)"DTU-1", 5, false, h, 1), 0);
    tally t = {0};
    for (unsigned i = 0; i < 500; i++) {
      uint8_t a[MB_RTU_MAX], in[MB_RTU_MAX + 2];
      size_t al = dense_answer(a, (uint16_t)(1 + rng() % 125), kinds[kd].hb, kinds[kd].pct);
      size_t n = 0;
      if (i % 3 == 0) in[n++] = kinds[kd].hb; /* a heartbeat before it */
      memcpy(in + n, a, al), n += al;
      size_t at[MB_RTU_MAX + 2];
      for (size_t c = 1; c < n; c++) at[c - 1] = c;
      if (i & 1) dtu_filter_expect(&f, 1, MB_FC_READ_HOLDING, al);
      else dtu_filter_expect(&f, 0, 0, 0);
      judge(&f, in, n, at, n - 1, a, al, &t);
      /* What follows an answer is not part of it (the daemon does so). */
      dtu_filter_reset(&f);
    }
    print_message("heartbeat %02X, one byte at a time: %u answers, %u lost, %u wrong, "
                  "at most %u steps a call\n",
                  kinds[kd].hb, t.cases, t.lost, t.wrong, f.work_max);
    assert_int_equal(t.lost, 0);
    assert_int_equal(t.wrong, 0);
    assert_true(f.work_max <= DTU_FILTER_BUDGET);
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Hostile bytes, fed one at a time and all at once: answers' heads
 * (unit 1, function 3, 250 bytes) with every other byte the heartbeat,
 * and the heartbeat and the registration (0xFE, 0xFE 0xFE) everywhere.
 * Every call ends within its budget, in well under a few milliseconds
 * even with sanitizers (some 100 us in a release build). */
static void test_hostile_bounded(void **state) {
  (void)state;
  static uint8_t in[4096];
  static const uint8_t head[] = {0x01, 0x03, 0xFA};
  for (size_t i = 0; i < sizeof in; i++)
    in[i] = i % 5 < 3 ? head[i % 5] : 0xFE;
  const uint8_t hb[] = {0xFE}, reg[] = {0xFE, 0xFE};
  for (size_t step = 1; step <= sizeof in; step *= 64) {
    dtu_filter f;
    assert_int_equal(dtu_filter_init(&f, reg, 2, true, hb, 1), 0);
    uint8_t out[MB_RTU_MAX];
    double worst = 0;
    size_t off = 0, total = 0;
    while (off < sizeof in) {
      size_t n = sizeof in - off < step ? sizeof in - off : step;
      off += dtu_filter_feed(&f, in + off, n);
      for (;;) {
        double t0 = now_s();
        size_t k = dtu_filter_next(&f, out, sizeof out);
        double dt = now_s() - t0;
        if (dt > worst) worst = dt;
        total += k;
        if (!k) break;
      }
    }
    print_message("hostile, %zu bytes a chunk: at most %u steps, %.0f us a call\n", step,
                  f.work_max, worst * 1e6);
    assert_true(f.work_max <= DTU_FILTER_BUDGET);
    /* Every byte handed on, held, or in a packet (of at most 2 bytes). */
    assert_true(total + f.len <= sizeof in);
    assert_true(total + f.len + 2 * f.packets >= sizeof in);
    assert_true(worst < 0.05); /* generous: the machine may be busy */
  }
}

/* With the answer awaited said, a way that takes a packet out must give
 * it; a frame as it came is handed on whatever it is. */
static void test_expect(void **state) {
  (void)state;
  uint16_t regs[] = {0x1111, 0x2222};
  uint8_t a1[MB_RTU_MAX], a2[MB_RTU_MAX], in[64], out[256];
  size_t al = rtu_answer(a1, 1, regs, 2);
  rtu_answer(a2, 2, regs, 2);
  dtu_filter f;
  init(&f, "REG", false, "HEART");
  dtu_filter_expect(&f, 1, MB_FC_READ_HOLDING, al);
  /* Another unit's answer as it came: handed on. */
  assert_int_equal(run(&f, a2, al, al, out, sizeof out), al);
  assert_memory_equal(out, a2, al);
  /* Another unit's answer with a heartbeat inside: not made into a frame. */
  size_t n = 0;
  memcpy(in, a2, 4), n = 4;
  memcpy(in + n, "HEART", 5), n += 5;
  memcpy(in + n, a2 + 4, al - 4), n += al - 4;
  size_t got = run(&f, in, n, 4, out, sizeof out);
  assert_true(got > 0);
  assert_memory_not_equal(out, a2, al);
  dtu_filter_reset(&f);
  /* Ours, and the exception to our request, with a heartbeat inside:
   * taken out. */
  memcpy(in, a1, 4), n = 4;
  memcpy(in + n, "HEART", 5), n += 5;
  memcpy(in + n, a1 + 4, al - 4), n += al - 4;
  got = run(&f, in, n, 4, out, sizeof out);
  assert_int_equal(got, al);
  assert_memory_equal(out, a1, al);
  uint8_t pdu[2], ex[8];
  assert_int_equal(mb_pdu_exception(pdu, sizeof pdu, MB_FC_READ_HOLDING, 2), 2);
  int el = mb_rtu_frame(ex, sizeof ex, 1, pdu, 2);
  assert_int_equal(el, 5);
  memcpy(in, ex, 2), n = 2;
  memcpy(in + n, "HEART", 5), n += 5;
  memcpy(in + n, ex + 2, 3), n += 3;
  got = run(&f, in, n, 2, out, sizeof out);
  assert_int_equal(got, 5);
  assert_memory_equal(out, ex, 5);
  /* Cleared: another unit's answer is repaired again. */
  dtu_filter_expect(&f, 0, 0, 0);
  memcpy(in, a2, 4), n = 4;
  memcpy(in + n, "HEART", 5), n += 5;
  memcpy(in + n, a2 + 4, al - 4), n += al - 4;
  got = run(&f, in, n, 4, out, sizeof out);
  assert_int_equal(got, al);
  assert_memory_equal(out, a2, al);
}

/* Two ways with one heartbeat out that give two different good frames:
 * with nothing to tell them apart (the bytes came in one chunk) neither is
 * taken, nor the bytes as they came; when the heartbeat starts a chunk,
 * the right one is. */
static void test_ambiguous(void **state) {
  (void)state;
  /* Unit 1, 10 registers; a data byte 0xFE at 5, the heartbeat after 15
   * bytes; two bytes at 8 and 9 chosen so that taking the data byte out
   * instead also gives a good CRC. */
  uint8_t a[25], b[25], in[26];
  bool made = false;
  for (uint32_t seed = 1; seed < 64 && !made; seed++) {
    rng_state = 0x51A7E5u * seed;
    a[0] = 1, a[1] = 3, a[2] = 20;
    for (size_t i = 3; i < 23; i++) a[i] = (uint8_t)(rng() % 0xFE);
    a[5] = 0xFE;
    for (uint32_t v = 0; v < 65536 && !made; v++) {
      a[8] = (uint8_t)(v >> 8), a[9] = (uint8_t)v;
      uint16_t c = mb_crc16(a, 23);
      a[23] = (uint8_t)c, a[24] = (uint8_t)(c >> 8);
      memcpy(in, a, 15);
      in[15] = 0xFE;
      memcpy(in + 16, a + 15, 10);
      /* The other way: the data byte at 5 out, the heartbeat kept. */
      memcpy(b, in, 5);
      memcpy(b + 5, in + 6, 20);
      made = mb_crc16(b, 25) == 0 && memcmp(a, b, 25) != 0;
    }
  }
  assert_true(made);
  uint8_t out[256];
  dtu_filter f;
  init(&f, "REG", false, "hex:FE");
  size_t got = run(&f, in, 26, 26, out, sizeof out);
  for (size_t off = 0; off < got;) {
    int w = mb_rtu_frame_len(out + off, got - off, false);
    size_t k = w > 0 && (size_t)w <= got - off ? (size_t)w : 1;
    assert_false(k == 25 && (!memcmp(out + off, a, 25) || !memcmp(out + off, b, 25)));
    off += k;
  }
  assert_int_equal(f.ambiguous, 1);
  init(&f, "REG", false, "hex:FE");
  assert_int_equal(dtu_filter_feed(&f, in, 15), 15);
  assert_int_equal(dtu_filter_next(&f, out, sizeof out), 0);
  assert_int_equal(dtu_filter_feed(&f, in + 15, 11), 11);
  assert_int_equal(dtu_filter_next(&f, out, sizeof out), 25);
  assert_memory_equal(out, a, 25);
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
      cmocka_unit_test(test_dense_heartbeat_bytes),
      cmocka_unit_test(test_zero_heartbeat),
      cmocka_unit_test(test_byte_at_a_time),
      cmocka_unit_test(test_hostile_bounded),
      cmocka_unit_test(test_expect),
      cmocka_unit_test(test_ambiguous),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
