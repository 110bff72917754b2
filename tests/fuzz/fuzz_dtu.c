/* libFuzzer target: the DTU packet filter (drivers/proto/dtu_filter.c) that
 * takes registration and heartbeat packets out of the RTU answers a DTU
 * carries, before the framer. The first byte picks the mode.
 *
 * Mode 0 feeds arbitrary bytes in arbitrary pieces: the filter never holds
 * more than its buffer, never hands on more than it was fed, and a chunk it
 * hands on with a good CRC has the length its function code implies.
 * Mode 1 builds answers from the input and puts heartbeats and the
 * registration (packets that start with a byte no unit id has, as DTUs'
 * do) between them: the answers come out byte for byte. With a bit of the
 * input set, packets go inside answers too; as the input chooses the
 * packets' bytes, it can make one that completes a frame with a good CRC,
 * so then only the bounds are held. With another bit, every packet and
 * every piece of an answer is fed as a chunk of its own, as a DTU sends
 * them; as a wrong frame can then have a good CRC by chance (which input
 * can arrange) as well as the right one, the filter may drop both
 * (counted in ambiguous): then answers may be missing, but what comes out
 * with a good CRC is still an answer sent. In every mode, no call of
 * dtu_filter_next goes past its step budget. A broken promise aborts. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/dtu_filter.h"

#define FUZZ_TARGET "fuzz_dtu"
#include "fuzz_check.h"

static int crc_ok(const uint8_t *f, size_t n) {
  if (n < 4) return 0;
  uint16_t c = mb_crc16(f, n - 2);
  return f[n - 2] == (uint8_t)(c & 0xFF) && f[n - 1] == (uint8_t)(c >> 8);
}

/* Packets from the input: lengths 1..8 from two bytes. */
static size_t setup(dtu_filter *f, const uint8_t *d, size_t n) {
  if (n < 3) return 0;
  size_t rl = 1 + d[0] % 8, hl = d[1] % 9;
  bool every = d[2] & 1;
  if (n < 3 + rl + hl) return 0;
  CHECK(dtu_filter_init(f, d + 3, rl, every, d + 3 + rl, hl) == 0, "init %zu %zu", rl, hl);
  return 3 + rl + hl;
}

static void arbitrary(const uint8_t *d, size_t n) {
  dtu_filter f;
  size_t off = setup(&f, d, n);
  if (!off) return;
  size_t fed = 0, out_total = 0;
  uint8_t out[MB_RTU_MAX];
  while (off < n) {
    size_t step = 1 + d[off] % 64;
    off++;
    if (step > n - off) step = n - off;
    size_t took = dtu_filter_feed(&f, d + off, step);
    off += took;
    fed += took;
    size_t k;
    while ((k = dtu_filter_next(&f, out, sizeof out)) > 0) {
      out_total += k;
      CHECK(k <= MB_RTU_MAX, "chunk of %zu", k);
      if (crc_ok(out, k)) {
        int want = mb_rtu_frame_len(out, k, false);
        CHECK(want < 0 || (size_t)want == k || k == 1,
              "a chunk of %zu bytes with a good CRC, framed as %d", k, want);
      }
    }
    CHECK(f.len <= sizeof f.buf, "buffer %zu", f.len);
    CHECK(out_total + f.len <= fed, "out %zu + held %zu > fed %zu", out_total, f.len, fed);
    CHECK(f.work_max <= DTU_FILTER_BUDGET, "%u steps in one call", f.work_max);
  }
}

static void constructed(const uint8_t *d, size_t n) {
  dtu_filter f;
  size_t off = setup(&f, d, n);
  if (!off) return;
  f.reg[0] |= 0xF8;
  f.hb[0] |= 0xF8;
  bool exact = !(d[2] & 2), chunked = d[2] & 4;
  static uint8_t stream[16384];
  /* Where chunks start, when fed as a DTU sends: each packet, each piece
   * of an answer. */
  static size_t cuts[8 * 6];
  size_t ncuts = 0;
  uint8_t frames[8][MB_RTU_MAX];
  size_t flen[8];
  size_t nframes = 0, sl = 0;
  while (off + 4 <= n && nframes < 8) {
    uint8_t unit = 1 + d[off] % 247;
    uint16_t count = 1 + d[off + 1] % 20;
    uint8_t how = d[off + 2], where = d[off + 3];
    off += 4;
    uint16_t regs[20];
    for (uint16_t i = 0; i < count; i++) {
      regs[i] = off + 1 < n ? (uint16_t)(d[off] << 8 | d[off + 1]) : i;
      off += 2;
    }
    uint8_t pdu[MB_PDU_MAX];
    int plen = mb_pdu_read_resp(pdu, sizeof pdu, MB_FC_READ_HOLDING, regs, count);
    int len = mb_rtu_frame(frames[nframes], MB_RTU_MAX, unit, pdu, (size_t)plen);
    CHECK(len > 0, "frame %d", len);
    flen[nframes] = (size_t)len;
    /* Before it: a heartbeat or the registration, or both, or nothing. */
    if ((how & 1) && f.hblen) {
      cuts[ncuts++] = sl;
      memcpy(stream + sl, f.hb, f.hblen), sl += f.hblen;
    }
    if (how & 2) {
      cuts[ncuts++] = sl;
      memcpy(stream + sl, f.reg, f.reglen), sl += f.reglen;
    }
    /* Inside it, after WHERE bytes: a heartbeat, or the registration when
     * it may come before any packet. */
    size_t at = 1 + where % ((size_t)len - 1);
    const uint8_t *pk = NULL;
    size_t pl = 0;
    if (!exact && (how & 4) && f.hblen) pk = f.hb, pl = f.hblen;
    else if (!exact && (how & 8) && f.reg_every) pk = f.reg, pl = f.reglen;
    cuts[ncuts++] = sl;
    memcpy(stream + sl, frames[nframes], at), sl += at;
    if (pk) {
      cuts[ncuts++] = sl;
      memcpy(stream + sl, pk, pl), sl += pl;
    }
    if (pk || !(how & 16)) cuts[ncuts++] = sl; /* else the answer is one chunk */
    memcpy(stream + sl, frames[nframes] + at, (size_t)len - at), sl += (size_t)len - at;
    nframes++;
  }
  if (!nframes) return;
  uint8_t out[MB_RTU_MAX];
  size_t got = 0, k, o = 0, c = 0;
  while (o < sl) {
    /* The chunk fed: to the next cut, or all that is left. */
    size_t end = sl;
    if (chunked) {
      while (c < ncuts && cuts[c] <= o) c++;
      if (c < ncuts) end = cuts[c];
    }
    o += dtu_filter_feed(&f, stream + o, end - o);
    while ((k = dtu_filter_next(&f, out, sizeof out)) > 0) {
      CHECK(f.len <= sizeof f.buf, "buffer %zu", f.len);
      CHECK(f.work_max <= DTU_FILTER_BUDGET, "%u steps in one call", f.work_max);
      if (!exact) continue;
      if (f.ambiguous) {
        /* Answers may be missing; a good frame out is one sent. */
        if (!crc_ok(out, k)) continue;
        while (got < nframes && (k != flen[got] || memcmp(out, frames[got], k) != 0)) got++;
        CHECK(got < nframes, "a good frame of %zu bytes that no answer sent", k);
        got++;
        continue;
      }
      CHECK(got < nframes, "more chunks than answers (%zu)", got);
      CHECK(k == flen[got] && memcmp(out, frames[got], k) == 0,
            "answer %zu: %zu bytes out for %zu in", got, k, flen[got]);
      got++;
    }
  }
  CHECK(!exact || f.ambiguous || got == nframes, "%zu answers out of %zu", got, nframes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  if (data[0] & 1) constructed(data + 1, size - 1);
  else arbitrary(data + 1, size - 1);
  return 0;
}
