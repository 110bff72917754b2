#include "proto/dtu_filter.h"

#include <string.h>
#include <strings.h>

int dtu_packet_parse(const char *s, uint8_t *out, size_t cap) {
  if (!s || !out) return -1;
  size_t n = 0;
  if (strncasecmp(s, "hex:", 4) != 0) {
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
  size_t n = len < room ? len : room;
  if (n) {
    memcpy(f->buf + f->len, data, n);
    memset(f->chunk + f->len, 0, n);
    if (!f->cut) f->chunk[f->len] = 1;
    f->len += n;
  }
  if (len) f->cut = n < len;
  return n;
}

void dtu_filter_expect(dtu_filter *f, uint8_t unit, uint8_t fc, size_t len) {
  f->exp_unit = unit;
  f->exp_fc = fc;
  f->exp_len = len;
}

void dtu_filter_reset(dtu_filter *f) {
  f->len = 0;
  f->cut = false;
}

static void consume(dtu_filter *f, size_t n) {
  memmove(f->buf, f->buf + n, f->len - n);
  memmove(f->chunk, f->chunk + n, f->len - n);
  f->len -= n;
}

/* Does packet P start at POS: 1 whole, 0 the buffer ends inside it, -1 no. */
static int match(const dtu_filter *f, size_t pos, const uint8_t *p, size_t plen) {
  if (plen == 0 || pos >= f->len || f->buf[pos] != p[0]) return -1;
  size_t n = f->len - pos;
  if (n > plen) n = plen;
  if (memcmp(f->buf + pos, p, n) != 0) return -1;
  return n == plen ? 1 : 0;
}

/* CRC-16/MODBUS, a byte at a time. */
static const uint16_t crc_tab[256] = {
    0x0000, 0xC0C1, 0xC181, 0x0140, 0xC301, 0x03C0, 0x0280, 0xC241,
    0xC601, 0x06C0, 0x0780, 0xC741, 0x0500, 0xC5C1, 0xC481, 0x0440,
    0xCC01, 0x0CC0, 0x0D80, 0xCD41, 0x0F00, 0xCFC1, 0xCE81, 0x0E40,
    0x0A00, 0xCAC1, 0xCB81, 0x0B40, 0xC901, 0x09C0, 0x0880, 0xC841,
    0xD801, 0x18C0, 0x1980, 0xD941, 0x1B00, 0xDBC1, 0xDA81, 0x1A40,
    0x1E00, 0xDEC1, 0xDF81, 0x1F40, 0xDD01, 0x1DC0, 0x1C80, 0xDC41,
    0x1400, 0xD4C1, 0xD581, 0x1540, 0xD701, 0x17C0, 0x1680, 0xD641,
    0xD201, 0x12C0, 0x1380, 0xD341, 0x1100, 0xD1C1, 0xD081, 0x1040,
    0xF001, 0x30C0, 0x3180, 0xF141, 0x3300, 0xF3C1, 0xF281, 0x3240,
    0x3600, 0xF6C1, 0xF781, 0x3740, 0xF501, 0x35C0, 0x3480, 0xF441,
    0x3C00, 0xFCC1, 0xFD81, 0x3D40, 0xFF01, 0x3FC0, 0x3E80, 0xFE41,
    0xFA01, 0x3AC0, 0x3B80, 0xFB41, 0x3900, 0xF9C1, 0xF881, 0x3840,
    0x2800, 0xE8C1, 0xE981, 0x2940, 0xEB01, 0x2BC0, 0x2A80, 0xEA41,
    0xEE01, 0x2EC0, 0x2F80, 0xEF41, 0x2D00, 0xEDC1, 0xEC81, 0x2C40,
    0xE401, 0x24C0, 0x2580, 0xE541, 0x2700, 0xE7C1, 0xE681, 0x2640,
    0x2200, 0xE2C1, 0xE381, 0x2340, 0xE101, 0x21C0, 0x2080, 0xE041,
    0xA001, 0x60C0, 0x6180, 0xA141, 0x6300, 0xA3C1, 0xA281, 0x6240,
    0x6600, 0xA6C1, 0xA781, 0x6740, 0xA501, 0x65C0, 0x6480, 0xA441,
    0x6C00, 0xACC1, 0xAD81, 0x6D40, 0xAF01, 0x6FC0, 0x6E80, 0xAE41,
    0xAA01, 0x6AC0, 0x6B80, 0xAB41, 0x6900, 0xA9C1, 0xA881, 0x6840,
    0x7800, 0xB8C1, 0xB981, 0x7940, 0xBB01, 0x7BC0, 0x7A80, 0xBA41,
    0xBE01, 0x7EC0, 0x7F80, 0xBF41, 0x7D00, 0xBDC1, 0xBC81, 0x7C40,
    0xB401, 0x74C0, 0x7580, 0xB541, 0x7700, 0xB7C1, 0xB681, 0x7640,
    0x7200, 0xB2C1, 0xB381, 0x7340, 0xB101, 0x71C0, 0x7080, 0xB041,
    0x5000, 0x90C1, 0x9181, 0x5140, 0x9301, 0x53C0, 0x5280, 0x9241,
    0x9601, 0x56C0, 0x5780, 0x9741, 0x5500, 0x95C1, 0x9481, 0x5440,
    0x9C01, 0x5CC0, 0x5D80, 0x9D41, 0x5F00, 0x9FC1, 0x9E81, 0x5E40,
    0x5A00, 0x9AC1, 0x9B81, 0x5B40, 0x9901, 0x59C0, 0x5880, 0x9841,
    0x8801, 0x48C0, 0x4980, 0x8941, 0x4B00, 0x8BC1, 0x8A81, 0x4A40,
    0x4E00, 0x8EC1, 0x8F81, 0x4F40, 0x8D01, 0x4DC0, 0x4C80, 0x8C41,
    0x4400, 0x84C1, 0x8581, 0x4540, 0x8701, 0x47C0, 0x4680, 0x8641,
    0x8201, 0x42C0, 0x4380, 0x8341, 0x4100, 0x81C1, 0x8081, 0x4040,
};

static uint16_t crc_step(uint16_t crc, uint8_t b) {
  return (uint16_t)((crc >> 8) ^ crc_tab[(crc ^ b) & 0xFFu]);
}

enum { S_BUDGET = -2, S_BAD = -1, S_MORE = 0, S_FOUND = 1 };

/* Which packets a search may take out: in front of the frame, and inside
 * it only where a chunk starts or the next one starts (W_CHUNKS); or
 * anywhere, exactly EXACT of them (W_ANY). */
enum { W_CHUNKS, W_ANY };

typedef struct {
  const dtu_filter *f;
  int ways, exact;
  long steps, limit;
  uint8_t fr[MB_RTU_MAX]; /* the frame along the path being tried */
  /* The first frame found: its bytes, buffer bytes it used, packets out. */
  uint8_t got[MB_RTU_MAX];
  size_t used, flen;
  int skips;
  bool found;
  /* Another way in the same round gave another good frame; the buffer
   * bytes the two used. */
  bool ambiguous;
  size_t spanned;
} search;

typedef struct {
  size_t pos;   /* next buffer byte */
  size_t flen;  /* frame bytes taken so far, into search.fr */
  uint16_t crc; /* over them */
  int want;     /* the frame's length once known, else 0 */
  int skips;    /* packets taken out, in front or inside */
  int inside;   /* of them, inside the frame */
} path;

/* Can the frame begun in S->fr (FLEN bytes, WANT long if known) still be
 * the answer awaited? */
static bool fits(const search *s, size_t flen, int want) {
  const dtu_filter *f = s->f;
  if (f->exp_unit == 0) return true;
  if (flen >= 1 && s->fr[0] != f->exp_unit) return false;
  if (flen < 2) return true;
  if (s->fr[1] == (f->exp_fc | 0x80u)) return true; /* 5 bytes, always */
  if (s->fr[1] != f->exp_fc) return false;
  return want <= 0 || (size_t)want == f->exp_len;
}

/* A good frame along P. The first is kept and the search goes on: another
 * frame in the same round means the CRC cannot tell which is the answer
 * (S_FOUND: stop). */
static int good(search *s, const path *p) {
  if (!s->found) {
    memcpy(s->got, s->fr, p->flen);
    s->used = p->pos;
    s->flen = p->flen;
    s->skips = p->skips;
    s->found = true;
    return S_BAD;
  }
  if (p->flen != s->flen || memcmp(s->fr, s->got, p->flen) != 0) {
    s->ambiguous = true;
    s->spanned = p->pos > s->used ? p->pos : s->used;
    return S_FOUND;
  }
  return S_BAD; /* the same frame another way */
}

static int dfs(search *s, path p);

/* Take packet PK out at P's position, if the search may and it is there. */
static int skip(search *s, const path *p, const uint8_t *pk, size_t plen) {
  const dtu_filter *f = s->f;
  if (plen == 0) return S_BAD;
  if (s->ways == W_CHUNKS && p->flen > 0 && !f->chunk[p->pos] &&
      !(p->pos + plen < f->len && f->chunk[p->pos + plen]))
    return S_BAD;
  int m = match(f, p->pos, pk, plen);
  if (m < 0) return S_BAD;
  if (m == 0) return S_MORE;
  path q = *p;
  q.pos += plen;
  q.skips++;
  if (q.flen > 0) q.inside++;
  return dfs(s, q);
}

/* Try the ways along path P: at each byte, the packets that may start
 * there taken out first, then the byte taken into the frame (a loop, not a
 * call: only packets nest). Good frames go to good(). S_FOUND when it says
 * stop; else S_MORE when more bytes could give a frame, S_BAD when none
 * can, S_BUDGET when the steps ran out. */
static int dfs(search *s, path p) {
  const dtu_filter *f = s->f;
  int maxskips = s->ways == W_ANY ? s->exact : DTU_FILTER_SKIPS;
  int best = S_BAD;
  for (;;) {
    if (p.want > 0 && p.flen == (size_t)p.want) {
      /* A good frame's CRC over itself is 0. */
      if (p.crc != 0 || (s->ways == W_ANY && p.skips != maxskips)) return best;
      if (p.inside && !fits(s, p.flen, p.want)) return best;
      return good(s, &p) == S_FOUND ? S_FOUND : best;
    }
    if (++s->steps > s->limit) return S_BUDGET;
    if (p.pos >= f->len) return S_MORE;
    /* Too few bytes for the rest of the frame: wait for them (a way that
     * takes more packets out needs more bytes still). */
    if (p.want > 0 && f->len - p.pos < (size_t)p.want - p.flen) return S_MORE;
    /* A packet inside only out of what can still be the answer awaited. */
    if (p.skips < maxskips && (p.flen == 0 || fits(s, p.flen, p.want))) {
      int r = skip(s, &p, f->hb, f->hblen);
      if (r == S_FOUND || r == S_BUDGET) return r;
      if (r == S_MORE) best = S_MORE;
      /* The registration in front of a frame always (a DTU may send it
       * again after its own reconnect), inside one only with the
       * setting. */
      if (f->reg_every || p.flen == 0) {
        r = skip(s, &p, f->reg, f->reglen);
        if (r == S_FOUND || r == S_BUDGET) return r;
        if (r == S_MORE) best = S_MORE;
      }
    }
    uint8_t b = f->buf[p.pos];
    /* An answer comes from a unit 1..247 (0 is broadcast, 248..255 are
     * reserved): a heartbeat such as 0xFE never starts one. */
    if (p.flen == 0 && (b == 0 || b > 247)) return best;
    s->fr[p.flen] = b;
    if (p.want <= 0) {
      int want = mb_rtu_frame_len(s->fr, p.flen + 1, false);
      if (want == MB_EMALFORMED || want > MB_RTU_MAX) return best;
      p.want = want < 0 ? 0 : want;
    }
    p.crc = crc_step(p.crc, b);
    p.pos++;
    p.flen++;
    if (p.inside && !fits(s, p.flen, p.want)) return best;
  }
}

/* One round of ways: S_FOUND with the frame in S when exactly one frame
 * came out of the likeliest ways that gave any, S_BAD when none did or
 * they disagree, S_MORE when more bytes could give one, S_BUDGET when the
 * steps ran out first. */
static int round_of(search *s, int ways, int exact, long limit) {
  const path start = {.crc = 0xFFFF};
  s->ways = ways;
  s->exact = exact;
  s->limit = limit;
  s->found = s->ambiguous = false;
  int r = dfs(s, start);
  if (s->ambiguous) return S_BAD;
  if (r == S_BUDGET) return S_BUDGET; /* a frame found is not known alone */
  return s->found ? S_FOUND : r;
}

/* Find the first frame in the buffer within BUDGET steps: packets at
 * chunk bounds (and in front) out, then the bytes as they came, within a
 * quarter of it; then, unless they disagreed, packets anywhere, as few as
 * can be. */
static int find(dtu_filter *f, search *s, long budget) {
  s->f = f;
  s->steps = 0;
  int r = round_of(s, W_CHUNKS, 0, budget / 4);
  if (r == S_FOUND || (r == S_BAD && s->ambiguous)) return r;
  int best = r == S_MORE ? S_MORE : S_BAD;
  for (int k = 0; k <= DTU_FILTER_SKIPS; k++) {
    r = round_of(s, W_ANY, k, budget);
    if (r == S_FOUND || r == S_BUDGET || (r == S_BAD && s->ambiguous)) return r;
    if (r == S_MORE) best = S_MORE;
  }
  return best;
}

size_t dtu_filter_next(dtu_filter *f, uint8_t *out, size_t cap) {
  /* The steps are shared by the searches of one call: one for each
   * packet in front dropped. */
  long left = DTU_FILTER_BUDGET;
  while (f->len) {
    search s;
    int r = find(f, &s, left);
    left -= s.steps < left ? s.steps : left;
    if (DTU_FILTER_BUDGET - left > (long)f->work_max)
      f->work_max = (unsigned)(DTU_FILTER_BUDGET - left);
    bool full = f->len == sizeof f->buf;
    if (r == S_FOUND && s.flen <= cap) {
      memcpy(out, s.got, s.flen);
      consume(f, s.used);
      f->packets += (uint64_t)s.skips;
      return s.flen;
    }
    if (r == S_MORE && !full) return 0;
    if (r == S_BAD && s.ambiguous) {
      /* Not one frame but two: neither is handed on, nor the bytes as they
       * came (they may be one of them). */
      consume(f, s.spanned);
      f->ambiguous++;
      continue;
    }
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
