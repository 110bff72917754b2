#include "proto/dtu_filter.h"

#include <string.h>

int dtu_packet_parse(const char *s, uint8_t *out, size_t cap) {
  if (!s || !out) return -1;
  size_t n = 0;
  if (strncmp(s, "hex:", 4) != 0) {
    n = strlen(s);
    if (n == 0 || n > cap) return -1;
    memcpy(out, s, n);
    return (int)n;
  }
  for (const char *p = s + 4; *p;) {
    if (*p == ' ') {
      p++;
      continue;
    }
    int v = 0;
    for (int k = 0; k < 2; k++, p++) {
      char c = *p;
      int d = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                     : -1;
      if (d < 0) return -1; /* a lone digit, or not hex */
      v = v * 16 + d;
    }
    if (n == cap) return -1;
    out[n++] = (uint8_t)v;
  }
  return n ? (int)n : -1;
}

int dtu_filter_init(dtu_filter *f, const uint8_t *reg, size_t reglen,
                    bool reg_every, const uint8_t *hb, size_t hblen) {
  memset(f, 0, sizeof *f);
  if (!reg || reglen == 0 || reglen > DTU_PKT_MAX || hblen > DTU_PKT_MAX ||
      (hblen && !hb))
    return -1;
  memcpy(f->reg, reg, reglen);
  f->reglen = reglen;
  if (hblen) memcpy(f->hb, hb, hblen);
  f->hblen = hblen;
  f->reg_every = reg_every;
  return 0;
}

size_t dtu_filter_feed(dtu_filter *f, const uint8_t *data, size_t len) {
  size_t room = sizeof f->buf - f->len;
  if (len > room) len = room;
  memcpy(f->buf + f->len, data, len);
  f->len += len;
  return len;
}

void dtu_filter_reset(dtu_filter *f) { f->len = 0; }

static void consume(dtu_filter *f, size_t n) {
  memmove(f->buf, f->buf + n, f->len - n);
  f->len -= n;
}

/* Does packet P start at POS: 1 whole, 0 the buffer ends inside it, -1 no. */
static int match(const dtu_filter *f, size_t pos, const uint8_t *p, size_t plen) {
  if (plen == 0) return -1;
  size_t n = f->len - pos;
  if (n > plen) n = plen;
  if (memcmp(f->buf + pos, p, n) != 0) return -1;
  return n == plen ? 1 : 0;
}

static uint16_t crc_step(uint16_t crc, uint8_t b) {
  crc ^= b;
  for (int i = 0; i < 8; i++)
    crc = (crc & 1u) ? (uint16_t)((crc >> 1) ^ 0xA001u) : (uint16_t)(crc >> 1);
  return crc;
}

enum { S_BUDGET = -2, S_BAD = -1, S_MORE = 0, S_FOUND = 1 };

typedef struct {
  const dtu_filter *f;
  uint8_t fr[MB_RTU_MAX];
  long steps;
  size_t used, flen;
  int skips;
} search;

static int dfs(search *s, size_t pos, size_t flen, uint16_t crc, int want,
               int skips);

/* Take the byte at POS into the frame. */
static int take(search *s, size_t pos, size_t flen, uint16_t crc, int want,
                int skips) {
  const dtu_filter *f = s->f;
  if (pos >= f->len) return S_MORE;
  /* An answer comes from a unit 1..247 (0 is broadcast, 248..255 are
   * reserved): a heartbeat such as 0xFE never starts one. */
  if (flen == 0 && (f->buf[pos] == 0 || f->buf[pos] > 247)) return S_BAD;
  s->fr[flen] = f->buf[pos];
  if (want <= 0) {
    want = mb_rtu_frame_len(s->fr, flen + 1, false);
    if (want == MB_EMALFORMED || want > MB_RTU_MAX) return S_BAD;
    if (want < 0) want = 0;
  }
  return dfs(s, pos + 1, flen + 1, crc_step(crc, f->buf[pos]), want, skips);
}

/* Take the packet at POS out of the frame, if one starts there. */
static int skip(search *s, const uint8_t *p, size_t plen, size_t pos,
                size_t flen, uint16_t crc, int want, int skips) {
  int m = match(s->f, pos, p, plen);
  if (m < 0) return S_BAD;
  if (m == 0) return S_MORE;
  return dfs(s, pos + plen, flen, crc, want, skips + 1);
}

/* Find a frame in the buffer from POS, FLEN of its bytes taken so far (CRC
 * over them, WANT its length once known), SKIPS packets taken out (in front
 * of it or inside). The bytes as they came are tried first, so data that
 * looks like a packet stays data whenever the CRC says it is. */
static int dfs(search *s, size_t pos, size_t flen, uint16_t crc, int want,
               int skips) {
  if (want > 0 && flen == (size_t)want) {
    if (crc != 0) return S_BAD; /* a good frame's CRC over itself is 0 */
    s->used = pos;
    s->flen = flen;
    s->skips = skips;
    return S_FOUND;
  }
  if (++s->steps > DTU_FILTER_BUDGET) return S_BUDGET;
  int best = take(s, pos, flen, crc, want, skips);
  if (best == S_FOUND || best == S_BUDGET) return best;
  if (skips >= DTU_FILTER_SKIPS) return best;
  const dtu_filter *f = s->f;
  int r = skip(s, f->hb, f->hblen, pos, flen, crc, want, skips);
  if (r == S_FOUND || r == S_BUDGET) return r;
  if (r == S_MORE) best = S_MORE;
  /* The registration in front of a frame always (a DTU may send it again
   * after its own reconnect), inside one only with the setting. */
  if (f->reg_every || flen == 0) {
    r = skip(s, f->reg, f->reglen, pos, flen, crc, want, skips);
    if (r == S_FOUND || r == S_BUDGET) return r;
    if (r == S_MORE) best = S_MORE;
  }
  return best;
}

size_t dtu_filter_next(dtu_filter *f, uint8_t *out, size_t cap) {
  while (f->len) {
    search s = {.f = f};
    int r = dfs(&s, 0, 0, 0xFFFF, 0, 0);
    bool full = f->len == sizeof f->buf;
    if (r == S_FOUND && s.flen <= cap) {
      memcpy(out, s.fr, s.flen);
      consume(f, s.used);
      f->packets += (uint64_t)s.skips;
      return s.flen;
    }
    if (r == S_MORE && !full) return 0;
    /* No frame starts here: a whole packet in front goes (a heartbeat
     * between answers; the registration again, which a DTU may send after
     * its own reconnect, whatever the setting). */
    if (match(f, 0, f->hb, f->hblen) == 1 || match(f, 0, f->reg, f->reglen) == 1) {
      consume(f, match(f, 0, f->hb, f->hblen) == 1 ? f->hblen : f->reglen);
      f->packets++;
      continue;
    }
    /* No way gives a good frame: hand the bytes on as they came, a whole
     * frame's length (the framer reports its CRC) or one byte of noise. */
    int want = mb_rtu_frame_len(f->buf, f->len, false);
    size_t n = 1;
    if (want > 0 && (size_t)want <= f->len) n = (size_t)want;
    else if (want > 0 && !full) return 0; /* out of budget: wait for it */
    if (n > cap) n = cap;
    memcpy(out, f->buf, n);
    consume(f, n);
    return n;
  }
  return 0;
}
