/* szy206: the water-resources monitoring frame. See szy206.h.
 *
 * Every function here takes untrusted bytes (a centre's answer, a frame an
 * engineer pasted, fuzzer input): lengths are checked before any byte is
 * read, and nothing is written past the capacity the caller gives.
 */
#include "proto/szy206.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *szy_strerror(int rc) {
  switch (rc) {
  case SZY_OK: return "success";
  case SZY_ENEEDMORE: return "incomplete frame";
  case SZY_EMALFORMED: return "malformed frame";
  case SZY_ECRC: return "CS (CRC-8) mismatch";
  case SZY_ESPACE: return "buffer too small";
  case SZY_ERANGE: return "value out of range";
  case SZY_EBCD: return "not a BCD value";
  case SZY_ENONE: return "no value (AA)";
  default: return "unknown error";
  }
}

uint8_t szy_crc8(const uint8_t *buf, size_t len) {
  uint8_t crc = 0;
  if (!buf) return crc;
  for (size_t i = 0; i < len; i++) {
    crc ^= buf[i];
    for (int b = 0; b < 8; b++)
      crc = (crc & 0x80u) ? (uint8_t)((crc << 1) ^ 0xE5u) : (uint8_t)(crc << 1);
  }
  return crc;
}

/* --- Frames ----------------------------------------------------------------- */

int szy_frame_len(const uint8_t *buf, size_t have) {
  if (have >= 1 && buf[0] != SZY_START) return SZY_EMALFORMED;
  if (have < 3) return SZY_ENEEDMORE;
  if (buf[2] != SZY_START || buf[1] < SZY_USER_MIN) return SZY_EMALFORMED;
  return buf[1] + 5;
}

int szy_parse(const uint8_t *buf, size_t len, szy_frame *f) {
  if (!buf || len < SZY_FRAME_MIN || len > SZY_FRAME_MAX) return SZY_EMALFORMED;
  if (szy_frame_len(buf, len) != (int)len || buf[len - 1] != SZY_END)
    return SZY_EMALFORMED;
  const uint8_t *u = buf + 3;
  size_t ulen = buf[1];
  if (szy_crc8(u, ulen) != buf[len - 2]) return SZY_ECRC;
  size_t at = 1;
  int divs = -1;
  if (u[0] & SZY_C_DIV) {
    if (ulen < SZY_USER_MIN + 1) return SZY_EMALFORMED;
    divs = u[1];
    at = 2;
  }
  if (f) {
    f->c = u[0];
    f->divs = divs;
    memcpy(f->addr, u + at, SZY_ADDR_LEN);
    f->afn = u[at + SZY_ADDR_LEN];
    f->data = u + at + SZY_ADDR_LEN + 1;
    f->data_len = ulen - (at + SZY_ADDR_LEN + 1);
  }
  return SZY_OK;
}

int szy_build(uint8_t *out, size_t cap, uint8_t c, const uint8_t addr[SZY_ADDR_LEN],
              uint8_t afn, const uint8_t *data, size_t data_len) {
  if (c & SZY_C_DIV) return SZY_ERANGE; /* split frames are not built here */
  size_t ulen = SZY_USER_MIN + data_len;
  if (ulen > 255) return SZY_ERANGE;
  if (!out || cap < ulen + 5) return SZY_ESPACE;
  out[0] = SZY_START;
  out[1] = (uint8_t)ulen;
  out[2] = SZY_START;
  out[3] = c;
  memcpy(out + 4, addr, SZY_ADDR_LEN);
  out[9] = afn;
  if (data_len) memcpy(out + 10, data, data_len);
  out[3 + ulen] = szy_crc8(out + 3, ulen);
  out[4 + ulen] = SZY_END;
  return (int)(ulen + 5);
}

int szy_addr_make(uint8_t out[SZY_ADDR_LEN], const char *admin6, unsigned station) {
  if (!admin6 || strlen(admin6) != 6) return SZY_EBCD;
  for (int i = 0; i < 6; i++)
    if (admin6[i] < '0' || admin6[i] > '9') return SZY_EBCD;
  if (station < 1 || station > 60000) return SZY_ERANGE;
  for (int i = 0; i < 3; i++)
    out[i] = (uint8_t)((admin6[2 * i] - '0') << 4 | (admin6[2 * i + 1] - '0'));
  out[3] = (uint8_t)(station & 0xFF);
  out[4] = (uint8_t)(station >> 8);
  return SZY_OK;
}

/* --- Values ----------------------------------------------------------------- */

/* The low NDIGITS decimal digits of V as packed BCD, low byte first. */
static void bcd_put(uint8_t *out, int nbytes, uint64_t v) {
  for (int i = 0; i < nbytes; i++) {
    unsigned lo = (unsigned)(v % 10);
    v /= 10;
    unsigned hi = (unsigned)(v % 10);
    v /= 10;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
}

/* Packed BCD, low byte first, of NNIB nibbles (from the lowest). */
static int bcd_get(const uint8_t *in, int nnib, uint64_t *v) {
  uint64_t x = 0;
  for (int k = nnib - 1; k >= 0; k--) {
    unsigned d = (k & 1) ? in[k / 2] >> 4 : in[k / 2] & 0x0Fu;
    if (d > 9) return SZY_EBCD;
    x = x * 10 + d;
  }
  *v = x;
  return SZY_OK;
}

static bool is_none(const uint8_t in[SZY_VALUE_LEN]) {
  for (int i = 0; i < SZY_VALUE_LEN; i++)
    if (in[i] != 0xAA) return false;
  return true;
}

void szy_value_none(uint8_t out[SZY_VALUE_LEN]) { memset(out, 0xAA, SZY_VALUE_LEN); }

int szy_flow_encode(uint8_t out[SZY_VALUE_LEN], int64_t milli) {
  if (milli < -SZY_FLOW_MAX || milli > SZY_FLOW_MAX) return SZY_ERANGE;
  uint64_t mag = (uint64_t)(milli < 0 ? -milli : milli);
  bcd_put(out, SZY_VALUE_LEN, mag); /* nine digits: byte 5's high nibble is 0 */
  if (milli < 0) out[4] |= 0x80;
  return SZY_OK;
}

int szy_flow_decode(const uint8_t in[SZY_VALUE_LEN], int64_t *milli) {
  if (is_none(in)) return SZY_ENONE;
  if (in[4] & 0x70) return SZY_EBCD; /* a unit other than m3/s */
  uint64_t v;
  if (bcd_get(in, 9, &v) != SZY_OK) return SZY_EBCD;
  if (milli) *milli = (in[4] & 0x80) ? -(int64_t)v : (int64_t)v;
  return SZY_OK;
}

int szy_volume_encode(uint8_t out[SZY_VALUE_LEN], uint64_t m3) {
  if (m3 > SZY_VOLUME_MAX) return SZY_ERANGE;
  bcd_put(out, SZY_VALUE_LEN, m3);
  return SZY_OK;
}

int szy_volume_decode(const uint8_t in[SZY_VALUE_LEN], uint64_t *m3) {
  if (is_none(in)) return SZY_ENONE;
  uint64_t v;
  if (bcd_get(in, 10, &v) != SZY_OK) return SZY_EBCD;
  if (v > SZY_VOLUME_MAX) return SZY_ERANGE;
  if (m3) *m3 = v;
  return SZY_OK;
}

/* --- Time label ----------------------------------------------------------- */

static uint8_t to_bcd(unsigned v) { return (uint8_t)((v / 10) << 4 | (v % 10)); }

static int from_bcd(uint8_t b, unsigned max, uint8_t *v) {
  unsigned hi = b >> 4, lo = b & 0x0Fu;
  if (hi > 9 || lo > 9 || hi * 10 + lo > max) return SZY_EBCD;
  *v = (uint8_t)(hi * 10 + lo);
  return SZY_OK;
}

int szy_tp_encode(uint8_t *out, size_t cap, int len, const szy_tp *tp) {
  if (len != 5 && len != 7) return SZY_ERANGE;
  if (!out || cap < (size_t)len) return SZY_ESPACE;
  if (tp->sec > 59 || tp->min > 59 || tp->hour > 23 || tp->day < 1 || tp->day > 31)
    return SZY_ERANGE;
  if (len == 7 && (tp->month < 1 || tp->month > 12 || tp->year > 99)) return SZY_ERANGE;
  out[0] = to_bcd(tp->sec);
  out[1] = to_bcd(tp->min);
  out[2] = to_bcd(tp->hour);
  out[3] = to_bcd(tp->day);
  if (len == 7) {
    out[4] = to_bcd(tp->month);
    out[5] = to_bcd(tp->year);
  }
  out[len - 1] = tp->delay;
  return len;
}

int szy_tp_decode(const uint8_t *in, size_t have, int len, szy_tp *tp) {
  if (len != 5 && len != 7) return SZY_ERANGE;
  if (!in || have < (size_t)len) return SZY_EMALFORMED;
  szy_tp t = {0};
  if (from_bcd(in[0], 59, &t.sec) || from_bcd(in[1], 59, &t.min) ||
      from_bcd(in[2], 23, &t.hour) || from_bcd(in[3], 31, &t.day) || t.day == 0)
    return SZY_EBCD;
  if (len == 7 && (from_bcd(in[4], 12, &t.month) || t.month == 0 ||
                   from_bcd(in[5], 99, &t.year)))
    return SZY_EBCD;
  t.delay = in[len - 1];
  if (tp) *tp = t;
  return len;
}

/* --- Reports ---------------------------------------------------------------- */

int szy_report_encode(uint8_t *out, size_t cap, const szy_report *r) {
  if (r->n > SZY_REPORT_METERS_MAX) return SZY_ERANGE;
  if (r->tp_len != 0 && r->tp_len != 5 && r->tp_len != 7) return SZY_ERANGE;
  size_t len = r->n * 2 * SZY_VALUE_LEN + 4 + (size_t)r->tp_len;
  if (!out || cap < len) return SZY_ESPACE;
  size_t at = 0;
  for (size_t i = 0; i < r->n; i++) {
    memcpy(out + at, r->flow[i], SZY_VALUE_LEN);
    memcpy(out + at + SZY_VALUE_LEN, r->volume[i], SZY_VALUE_LEN);
    at += 2 * SZY_VALUE_LEN;
  }
  out[at++] = (uint8_t)(r->alarm & 0xFF);
  out[at++] = (uint8_t)(r->alarm >> 8);
  out[at++] = (uint8_t)(r->status & 0xFF);
  out[at++] = (uint8_t)(r->status >> 8);
  if (r->tp_len) {
    int n = szy_tp_encode(out + at, cap - at, r->tp_len, &r->tp);
    if (n < 0) return n;
    at += (size_t)n;
  }
  return (int)at;
}

int szy_report_decode(const uint8_t *data, size_t len, int tp_len, szy_report *r) {
  if (tp_len < 0) {
    if (len % 10 == 9) tp_len = 5;
    else if (len % 10 == 1) tp_len = 7;
    else return SZY_EMALFORMED;
  }
  if (tp_len != 0 && tp_len != 5 && tp_len != 7) return SZY_ERANGE;
  if (!data || len < 4 + (size_t)tp_len) return SZY_EMALFORMED;
  size_t pairs = len - 4 - (size_t)tp_len;
  if (pairs % (2 * SZY_VALUE_LEN) != 0) return SZY_EMALFORMED;
  size_t n = pairs / (2 * SZY_VALUE_LEN);
  if (n > SZY_REPORT_METERS_MAX) return SZY_EMALFORMED;
  r->n = n;
  for (size_t i = 0; i < n; i++) {
    memcpy(r->flow[i], data + i * 10, SZY_VALUE_LEN);
    memcpy(r->volume[i], data + i * 10 + SZY_VALUE_LEN, SZY_VALUE_LEN);
  }
  const uint8_t *w = data + pairs;
  r->alarm = (uint16_t)(w[0] | w[1] << 8);
  r->status = (uint16_t)(w[2] | w[3] << 8);
  r->tp_len = tp_len;
  memset(&r->tp, 0, sizeof r->tp);
  if (tp_len) {
    int rc = szy_tp_decode(w + 4, (size_t)tp_len, tp_len, &r->tp);
    if (rc < 0) return rc;
  }
  return SZY_OK;
}

/* --- Describing ------------------------------------------------------------- */

typedef struct {
  char *p;
  size_t cap, len; /* len may pass cap: what would have been written */
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t room = t->len < t->cap ? t->cap - t->len : 0;
  int n = vsnprintf(room ? t->p + t->len : NULL, room, fmt, ap);
  va_end(ap);
  if (n > 0) t->len += (size_t)n;
}

static void put_hex(text *t, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) put(t, "%02X", p[i]);
}

static void put_tp(text *t, const szy_tp *tp, int len) {
  put(t, ",\"tp\":{\"day\":%u,\"time\":\"%02u:%02u:%02u\"", tp->day, tp->hour, tp->min,
      tp->sec);
  if (len == 7) put(t, ",\"month\":%u,\"year\":%u", tp->month, 2000u + tp->year);
  put(t, ",\"delay_min\":%u}", tp->delay);
}

static void put_report(text *t, const uint8_t *data, size_t len) {
  static szy_report r; /* 240 bytes of values: not on a small stack */
  int rc = szy_report_decode(data, len, -1, &r);
  if (rc != SZY_OK) {
    put(t, ",\"data\":\"");
    put_hex(t, data, len);
    put(t, "\",\"data_error\":\"%s\"", szy_strerror(rc));
    return;
  }
  put(t, ",\"meters\":[");
  for (size_t i = 0; i < r.n; i++) {
    int64_t f;
    uint64_t v;
    put(t, "%s{\"flow_m3s\":", i ? "," : "");
    rc = szy_flow_decode(r.flow[i], &f);
    if (rc == SZY_OK)
      put(t, "%s%lld.%03lld", f < 0 ? "-" : "", (long long)((f < 0 ? -f : f) / 1000),
          (long long)((f < 0 ? -f : f) % 1000));
    else
      put(t, "null");
    rc = szy_volume_decode(r.volume[i], &v);
    put(t, ",\"volume_m3\":");
    if (rc == SZY_OK) put(t, "%llu", (unsigned long long)v);
    else put(t, "null");
    put(t, ",\"raw\":\"");
    put_hex(t, r.flow[i], SZY_VALUE_LEN);
    put(t, " ");
    put_hex(t, r.volume[i], SZY_VALUE_LEN);
    put(t, "\"}");
  }
  put(t, "],\"alarm\":\"%04X\",\"status\":\"%04X\"", r.alarm, r.status);
  if (r.tp_len) put_tp(t, &r.tp, r.tp_len);
}

/* Link frames and confirms: one data byte, then perhaps a time label. */
static void put_short(text *t, const szy_frame *f) {
  if (f->data_len >= 1) {
    if (f->afn == SZY_AFN_LINK) {
      uint8_t k = f->data[0];
      put(t, ",\"link\":\"%s\"", k == SZY_LINK_LOGIN ? "login"
                                 : k == SZY_LINK_LOGOUT ? "logout"
                                 : k == SZY_LINK_HEARTBEAT ? "heartbeat"
                                                           : "other");
    }
    put(t, ",\"data\":\"%02X\"", f->data[0]);
  }
  size_t rest = f->data_len ? f->data_len - 1 : 0;
  szy_tp tp;
  if ((rest == 5 || rest == 7) && szy_tp_decode(f->data + 1, rest, (int)rest, &tp) > 0)
    put_tp(t, &tp, (int)rest);
  else if (rest) {
    put(t, ",\"rest\":\"");
    put_hex(t, f->data + 1, rest);
    put(t, "\"");
  }
}

static const char *afn_name(uint8_t afn) {
  switch (afn) {
  case SZY_AFN_LINK: return "link";
  case SZY_AFN_REPORT: return "report";
  case SZY_AFN_QUERY: return "query";
  case 0x81: return "alarm";
  case 0x11: return "set clock";
  case 0x51: return "query clock";
  case 0x10: return "set address";
  case 0x50: return "query address";
  default: return "other";
  }
}

int szy_describe(const uint8_t *buf, size_t len, char *out, size_t cap) {
  if (!out || cap == 0) return SZY_ESPACE;
  text t = {out, cap, 0};
  out[0] = '\0';
  szy_frame f;
  int rc = szy_parse(buf, len, &f);
  if (rc != SZY_OK) {
    put(&t, "{\"error\":\"%s\",\"len\":%zu", szy_strerror(rc), len);
    if (rc == SZY_ECRC)
      put(&t, ",\"cs\":\"%02X\",\"expected\":\"%02X\"", buf[len - 2],
          szy_crc8(buf + 3, buf[1]));
    else if (len >= 2 && buf[0] == SZY_START && len != (size_t)buf[1] + 5)
      put(&t, ",\"expected_len\":%u", buf[1] + 5u);
    else if (len >= 1 && buf[0] != SZY_START)
      put(&t, ",\"byte\":0,\"found\":\"%02X\",\"expected\":\"%02X\"", buf[0], SZY_START);
    else if (len >= 3 && buf[2] != SZY_START)
      put(&t, ",\"byte\":2,\"found\":\"%02X\",\"expected\":\"%02X\"", buf[2], SZY_START);
    else if (len >= 5 && buf[len - 1] != SZY_END)
      put(&t, ",\"byte\":%zu,\"found\":\"%02X\",\"expected\":\"%02X\"", len - 1,
          buf[len - 1], SZY_END);
    put(&t, "}");
  } else {
    bool up = f.c & SZY_C_DIR;
    put(&t, "{\"len\":%zu,\"c\":\"%02X\",\"dir\":\"%s\",\"fcb\":%u,\"type\":%u", len, f.c,
        up ? "up" : "down", (f.c >> SZY_C_FCB_SHIFT) & 3u, f.c & SZY_C_TYPE_MASK);
    if (f.divs >= 0) put(&t, ",\"divs\":%d", f.divs);
    put(&t, ",\"address\":\"");
    put_hex(&t, f.addr, SZY_ADDR_LEN);
    put(&t, "\"");
    uint64_t admin;
    if (bcd_get(f.addr, 6, &admin) == SZY_OK) {
      /* A1 is packed BCD high digits first, so its hex is its digits. */
      put(&t, ",\"admin\":\"%02X%02X%02X\"", f.addr[0], f.addr[1], f.addr[2]);
    }
    put(&t, ",\"station\":%u,\"afn\":\"%02X\",\"function\":\"%s\"",
        (unsigned)(f.addr[3] | f.addr[4] << 8), f.afn, afn_name(f.afn));
    if (up && (f.afn == SZY_AFN_REPORT || f.afn == SZY_AFN_QUERY))
      put_report(&t, f.data, f.data_len);
    else if (f.data_len <= 8)
      put_short(&t, &f);
    else {
      put(&t, ",\"data\":\"");
      put_hex(&t, f.data, f.data_len);
      put(&t, "\"");
    }
    put(&t, "}");
  }
  if (t.len >= cap) {
    out[cap - 1] = '\0';
    return (int)(cap - 1);
  }
  return (int)t.len;
}
