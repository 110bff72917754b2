/* libFuzzer target: the Modbus protocol core (PDU, MBAP and RTU parsing,
 * the streaming RTU framer used by the rtu-over-tcp transport and
 * intake-sim, and the judging of answers that both network transports use).
 * The first byte picks the entry point.
 *
 * Beyond not crashing, every entry point is held to what it promises, checked
 * against references written here from the specification rather than with
 * the code under test: what a parser accepts, the builder gives back byte for
 * byte; a frame the framer hands out has a good CRC, the length its function
 * code implies, and is the next run of the bytes it was fed; an answer an
 * exchange accepts is one that is in the stream, with the request's
 * transaction id, unit and function. A broken promise aborts, so libFuzzer
 * and a replay of the corpus report it as a crash. */
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/mb_proto.h"
#include "proto/mb_xchg.h"

#define FUZZ_TARGET "fuzz_proto"
#include "fuzz_check.h"

/* --- References ------------------------------------------------------------ */

/* CRC-16/MODBUS bit by bit, as the specification gives it. */
static uint16_t ref_crc(const uint8_t *p, size_t n) {
  uint16_t crc = 0xFFFF;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int b = 0; b < 8; b++)
      crc = (crc & 1) ? (uint16_t)((crc >> 1) ^ 0xA001) : (uint16_t)(crc >> 1);
  }
  return crc;
}

/* A frame of LEN bytes ends in the CRC of what precedes it, low byte first. */
static int ref_crc_ok(const uint8_t *f, size_t len) {
  if (len < 4) return 0;
  uint16_t c = ref_crc(f, len - 2);
  return f[len - 2] == (uint8_t)(c & 0xFF) && f[len - 1] == (uint8_t)(c >> 8);
}

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

/* The length of a whole RTU frame from its function code (and byte count),
 * for the function codes a framer may frame: -1 while too few bytes have
 * come to tell, 0 when the bytes cannot start a frame. Byte counts are the
 * specification's: whole registers for register functions, at most 125
 * registers (250 bytes) read, 123 (246) or 121 (242) written, 1968 coils in
 * 246 bytes. */
static long ref_frame_len(const uint8_t *f, size_t have, int is_request) {
  if (have < 2) return -1;
  uint8_t fc = f[1];
  if (is_request) {
    if (fc >= 0x01 && fc <= 0x06) return 8;
    if (fc == 0x0F || fc == 0x10) {
      if (have < 7) return -1;
      uint8_t bc = f[6];
      if (bc == 0 || bc > 246 || (fc == 0x10 && (bc & 1))) return 0;
      return 9L + bc;
    }
    if (fc == 0x17) {
      if (have < 11) return -1;
      uint8_t bc = f[10];
      if (bc == 0 || bc > 242 || (bc & 1)) return 0;
      return 13L + bc;
    }
    return 0;
  }
  if (fc & 0x80) return 5;
  if (fc >= 0x01 && fc <= 0x04) {
    if (have < 3) return -1;
    uint8_t bc = f[2];
    if (bc == 0 || bc > 250 || (fc >= 0x03 && (bc & 1))) return 0;
    return 5L + bc;
  }
  if (fc == 0x06 || fc == 0x10) return 8;
  return 0;
}

/* mb_rtu_frame_len's answer in ref_frame_len's terms. */
static long frame_len_of(int n) {
  return n == MB_ENEEDMORE ? -1 : n == MB_EMALFORMED ? 0 : n;
}

/* --- Entry points ------------------------------------------------------------ */

static void pdu_read_req(const uint8_t *data, size_t size) {
  mb_request req;
  memset(&req, 0xA5, sizeof req);
  int rc = mb_pdu_parse_read_req(data, size, &req);
  CHECK(rc == MB_OK || rc == MB_EMALFORMED || rc == MB_ERANGE, "rc %d", rc);
  if (size == 0) {
    CHECK(rc == MB_EMALFORMED, "an empty PDU gave %d", rc);
    return;
  }
  CHECK(req.fc == data[0], "fc %u for %u", req.fc, data[0]);
  int is_read = data[0] == MB_FC_READ_HOLDING || data[0] == MB_FC_READ_INPUT;
  if (!is_read) {
    /* Left for the server to refuse as an illegal function. */
    CHECK(rc == MB_OK && req.addr == 0 && req.count == 0,
          "fc 0x%02X: rc %d addr %u count %u", data[0], rc, req.addr, req.count);
    return;
  }
  if (size != 5) {
    CHECK(rc == MB_EMALFORMED, "a read request of %zu bytes gave %d", size, rc);
    return;
  }
  uint16_t addr = be16(data + 1), count = be16(data + 3);
  CHECK(req.addr == addr && req.count == count, "addr %u count %u, sent %u %u",
        req.addr, req.count, addr, count);
  CHECK((rc == MB_OK) == (count >= 1 && count <= MB_READ_MAX), "count %u rc %d",
        count, rc);
  if (rc == MB_OK && (uint32_t)addr + count <= 0x10000u) {
    uint8_t back[8];
    int n = mb_pdu_read_req(back, sizeof back, req.fc, req.addr, req.count);
    CHECK(n == 5 && memcmp(back, data, 5) == 0, "rebuilt request differs (%d)", n);
  }
}

static void pdu_read_resp(const uint8_t *data, size_t size) {
  uint16_t count = size >= 1 ? (uint16_t)(data[0] % 130) : 1;
  const uint8_t *pdu = size ? data + 1 : data;
  size_t len = size ? size - 1 : 0;
  uint16_t regs[MB_READ_MAX + 5];
  uint8_t exc = 0xEE;
  int rc = mb_pdu_parse_read_resp(pdu, len, MB_FC_READ_HOLDING, count, regs, &exc);
  if (count < 1 || count > MB_READ_MAX) {
    CHECK(rc == MB_ERANGE, "count %u gave %d", count, rc);
    return;
  }
  if (rc == MB_OK) {
    CHECK(len == 2u + 2u * count && pdu[0] == MB_FC_READ_HOLDING &&
              pdu[1] == 2u * count,
          "accepted %zu bytes, fc 0x%02X, byte count %u for %u registers", len,
          len ? pdu[0] : 0, len > 1 ? pdu[1] : 0, count);
    for (uint16_t i = 0; i < count; i++)
      CHECK(regs[i] == be16(pdu + 2 + 2 * i), "register %u", i);
    uint8_t back[MB_PDU_MAX];
    int n = mb_pdu_read_resp(back, sizeof back, MB_FC_READ_HOLDING, regs, count);
    CHECK(n == (int)len && memcmp(back, pdu, len) == 0, "rebuilt answer differs");
  } else if (rc == MB_EEXCEPTION) {
    CHECK(len == 2 && pdu[0] == (MB_FC_READ_HOLDING | 0x80) && exc == pdu[1],
          "exception from %zu bytes, fc 0x%02X", len, len ? pdu[0] : 0);
  } else {
    CHECK(rc == MB_EMALFORMED || rc == MB_EMISMATCH, "rc %d", rc);
  }
  /* And what answers the request is taken. */
  if (len == 2u + 2u * count && pdu[0] == MB_FC_READ_HOLDING && pdu[1] == 2u * count)
    CHECK(rc == MB_OK, "a well-formed answer for %u registers gave %d", count, rc);
  if (len == 2 && pdu[0] == (MB_FC_READ_HOLDING | 0x80))
    CHECK(rc == MB_EEXCEPTION, "a well-formed exception gave %d", rc);
}

static void mbap_header(const uint8_t *data, size_t size) {
  mb_mbap hdr;
  int rc = mb_mbap_parse(data, size, &hdr);
  if (size < MB_MBAP_HDR) {
    CHECK(rc == MB_ENEEDMORE, "%zu bytes gave %d", size, rc);
    return;
  }
  CHECK(hdr.tid == be16(data) && hdr.proto == be16(data + 2) &&
            hdr.len == be16(data + 4) && hdr.unit == data[6],
        "header fields differ from the bytes");
  int valid = hdr.proto == 0 && hdr.len >= 2 && hdr.len <= MB_PDU_MAX + 1;
  CHECK(valid ? rc == MB_MBAP_HDR - 1 + hdr.len : rc == MB_EMALFORMED,
        "proto %u len %u gave %d", hdr.proto, hdr.len, rc);
  if (rc > 0 && (size_t)rc <= size) {
    uint8_t back[MB_TCP_MAX];
    int n = mb_mbap_frame(back, sizeof back, hdr.tid, hdr.unit, data + MB_MBAP_HDR,
                          (size_t)rc - MB_MBAP_HDR);
    CHECK(n == rc && memcmp(back, data, (size_t)n) == 0, "rebuilt frame differs");
  }
}

static void rtu_frame(const uint8_t *data, size_t size) {
  uint8_t unit = 0;
  const uint8_t *pdu = NULL;
  size_t pdulen = 0;
  int rc = mb_rtu_parse(data, size, &unit, &pdu, &pdulen);
  if (size < 4 || size > MB_RTU_MAX) {
    CHECK(rc == MB_EMALFORMED, "%zu bytes gave %d", size, rc);
  } else {
    CHECK(rc == (ref_crc_ok(data, size) ? MB_OK : MB_ECRC),
          "%zu bytes, CRC %s, gave %d", size, ref_crc_ok(data, size) ? "good" : "bad", rc);
  }
  if (rc == MB_OK) {
    CHECK(unit == data[0] && pdu == data + 1 && pdulen == size - 3, "parts differ");
    uint8_t back[MB_RTU_MAX];
    int n = mb_rtu_frame(back, sizeof back, unit, pdu, pdulen);
    CHECK(n == (int)size && memcmp(back, data, size) == 0, "rebuilt frame differs");
  }
  /* The length a frame's start announces does not change as more of it
   * comes, and is a frame's. */
  for (int req = 0; req < 2; req++) {
    int first = MB_ENEEDMORE;
    for (size_t have = 0; have <= size && have <= 16; have++) {
      int n = mb_rtu_frame_len(data, have, req);
      if (first == MB_ENEEDMORE) {
        first = n;
      } else {
        CHECK(n == first, "%s length %d with %zu bytes, %d before",
              req ? "request" : "answer", n, have, first);
      }
      CHECK(n == MB_ENEEDMORE || n == MB_EMALFORMED || (n >= 4 && n <= MB_RTU_MAX),
            "length %d", n);
      CHECK(frame_len_of(n) == ref_frame_len(data, have, req),
            "%s of %zu bytes: length %d, the specification's %ld",
            req ? "request" : "answer", have, n, ref_frame_len(data, have, req));
    }
  }
}

/* The framer fed in chunks whose sizes come from the data itself, checked
 * against a shadow copy of everything it was fed. */
static void framer(const uint8_t *data, size_t size, int is_request) {
  static mb_rtu_framer f;
  static uint8_t shadow[1 << 17];
  size_t fed = 0, pos = 0; /* shadow[pos..fed) is what the framer still holds */
  mb_rtu_framer_init(&f, is_request);
  uint8_t out[MB_RTU_MAX];
  size_t off = 0;
  while (off < size) {
    size_t chunk = 1 + data[off] % 37;
    if (chunk > size - off) chunk = size - off;
    size_t took = mb_rtu_framer_feed(&f, data + off, chunk);
    CHECK(took <= chunk, "took %zu of %zu", took, chunk);
    if (fed + took > sizeof shadow) return;
    memcpy(shadow + fed, data + off, took);
    fed += took;
    off += took ? took : chunk;
    for (;;) {
      size_t before = f.len;
      uint64_t dropped = f.dropped_bytes, crc_errors = f.crc_errors;
      CHECK(before == fed - pos, "framer holds %zu bytes, %zu fed and not taken",
            before, fed - pos);
      int n = mb_rtu_framer_next(&f, out, sizeof out);
      if (n == MB_ENEEDMORE) {
        CHECK(f.len == before, "waiting, yet the buffer changed");
        break;
      }
      if (n > 0) {
        /* A whole frame: the next bytes of the stream, with a good CRC and
         * the length its function code announces. */
        CHECK((size_t)n <= before && memcmp(out, shadow + pos, (size_t)n) == 0,
              "a %d-byte frame that is not the next bytes fed", n);
        CHECK(ref_crc_ok(out, (size_t)n), "a %d-byte frame with a bad CRC", n);
        CHECK(n == ref_frame_len(out, (size_t)n, is_request),
              "a %d-byte frame whose function 0x%02X says %ld", n, out[1],
              ref_frame_len(out, (size_t)n, is_request));
        CHECK(f.len == before - (size_t)n, "took %zu bytes for a %d-byte frame",
              before - f.len, n);
        uint8_t unit;
        const uint8_t *pdu;
        size_t pdulen;
        CHECK(mb_rtu_parse(out, (size_t)n, &unit, &pdu, &pdulen) == MB_OK,
              "the framer's frame fails mb_rtu_parse");
        if (!is_request) {
          uint16_t regs[MB_READ_MAX];
          uint8_t exc;
          mb_pdu_parse_read_resp(pdu, pdulen, MB_FC_READ_INPUT, 2, regs, &exc);
        }
        pos += (size_t)n;
      } else if (n == MB_ECRC) {
        size_t k = before - f.len;
        CHECK(k >= 4 && k <= MB_RTU_MAX &&
                  (long)k == ref_frame_len(shadow + pos, k, is_request),
              "a CRC failure took %zu bytes", k);
        CHECK(!ref_crc_ok(shadow + pos, k), "a frame with a good CRC was refused");
        CHECK(f.crc_errors == crc_errors + 1, "CRC errors not counted");
        pos += k;
      } else {
        CHECK(n == MB_EMALFORMED, "rc %d", n);
        CHECK(ref_frame_len(shadow + pos, before, is_request) == 0,
              "framable bytes (fc 0x%02X) were dropped", shadow[pos + 1]);
        CHECK(f.len == 0 && f.dropped_bytes == dropped + before,
              "dropped %llu of %zu bytes, %zu left",
              (unsigned long long)(f.dropped_bytes - dropped), before, f.len);
        pos += before;
      }
    }
  }
  CHECK(pos + f.len == fed, "bytes lost: %zu fed, %zu taken, %zu held", fed, pos, f.len);
}

/* Where in the stream an MBAP exchange must find its verdict: the first
 * frame with the request's transaction id, unless a header that is not one
 * comes first. */
typedef struct {
  int found;      /* 1: a frame with the request's tid; 2: a bad header */
  size_t at, len; /* the frame */
} mbap_verdict;

static mbap_verdict ref_mbap_walk(const uint8_t *s, size_t n, uint16_t tid) {
  mbap_verdict v = {0, 0, 0};
  size_t pos = 0;
  while (pos + MB_MBAP_HDR <= n) {
    uint16_t proto = be16(s + pos + 2), len = be16(s + pos + 4);
    if (proto != 0 || len < 2 || len > MB_PDU_MAX + 1) {
      v.found = 2;
      v.at = pos;
      return v;
    }
    size_t total = MB_MBAP_HDR - 1u + len;
    if (pos + total > n) break;
    if (be16(s + pos) == tid) {
      v.found = 1;
      v.at = pos;
      v.len = total;
      return v;
    }
    pos += total;
  }
  return v;
}

/* Is there, anywhere in S, an RTU frame from UNIT answering FC with exactly
 * these registers (or this exception), with a good CRC? */
static int ref_rtu_answer_in(const uint8_t *s, size_t n, uint8_t unit, uint8_t fc,
                             const uint16_t *regs, uint16_t count, int exc) {
  uint8_t want[MB_RTU_MAX];
  size_t len;
  want[0] = unit;
  if (exc >= 0) {
    want[1] = (uint8_t)(fc | 0x80);
    want[2] = (uint8_t)exc;
    len = 3;
  } else {
    want[1] = fc;
    want[2] = (uint8_t)(2 * count);
    for (uint16_t i = 0; i < count; i++) {
      want[3 + 2 * i] = (uint8_t)(regs[i] >> 8);
      want[4 + 2 * i] = (uint8_t)regs[i];
    }
    len = 3u + 2u * count;
  }
  uint16_t c = ref_crc(want, len);
  want[len++] = (uint8_t)(c & 0xFF);
  want[len++] = (uint8_t)(c >> 8);
  for (size_t i = 0; i + len <= n; i++)
    if (memcmp(s + i, want, len) == 0) return 1;
  return 0;
}

static void exchange(const uint8_t *data, size_t size, int rtu) {
  mb_xchg x;
  tr_error e;
  uint8_t req[MB_TCP_MAX];
  uint16_t regs[MB_READ_MAX];
  const uint16_t tid = 1;
  const uint8_t unit = 1, fc = MB_FC_READ_HOLDING;
  uint16_t count = size >= 1 ? (uint16_t)(1 + data[0] % MB_READ_MAX) : 1;
  memset(regs, 0xA5, sizeof regs);
  int rlen = mb_xchg_begin(&x, rtu, tid, unit, fc, 0, count, regs, req, sizeof req, &e);
  CHECK(rlen > 0 && rlen <= MB_XCHG_REQ_MAX, "request of %d bytes", rlen);

  /* The request says what was asked. */
  mb_request r;
  if (rtu) {
    CHECK(rlen == 8 && ref_crc_ok(req, 8) && req[0] == unit, "RTU request");
    CHECK(mb_pdu_parse_read_req(req + 1, 5, &r) == MB_OK, "RTU request's PDU");
  } else {
    CHECK(rlen == 12 && be16(req) == tid && be16(req + 2) == 0 &&
              be16(req + 4) == 6 && req[6] == unit,
          "MBAP request header");
    CHECK(mb_pdu_parse_read_req(req + 7, 5, &r) == MB_OK, "MBAP request's PDU");
  }
  CHECK(r.fc == fc && r.addr == 0 && r.count == count, "request fc %u addr %u count %u",
        r.fc, r.addr, r.count);

  size_t off = 0;
  int rc = MB_XCHG_MORE;
  while (off < size) {
    size_t chunk = 1 + data[off] % 61;
    if (chunk > size - off) chunk = size - off;
    rc = mb_xchg_feed(&x, data + off, chunk, &e);
    off += chunk;
    if (rc != MB_XCHG_MORE) break;
  }
  CHECK(rc == MB_XCHG_MORE || rc == TR_OK || rc == TR_ECRC || rc == TR_EEXCEPTION ||
            rc == TR_EMALFORMED,
        "verdict %d", rc);

  if (!rtu) {
    /* Only the frame with the request's transaction id is the answer. */
    mbap_verdict v = ref_mbap_walk(data, off, tid);
    if (rc == TR_OK || rc == TR_EEXCEPTION) {
      CHECK(v.found == 1, "verdict %d without a frame of transaction id %u", rc, tid);
      const uint8_t *a = data + v.at;
      CHECK(a[6] == unit, "answer of unit %u taken for unit %u", a[6], unit);
      if (rc == TR_OK) {
        CHECK(v.len == 9u + 2u * count && a[7] == fc && a[8] == 2 * count,
              "accepted frame of %zu bytes", v.len);
        for (uint16_t i = 0; i < count; i++)
          CHECK(regs[i] == be16(a + 9 + 2 * i),
                "register %u is %04x; the answer with transaction id %u says %04x", i,
                regs[i], tid, be16(a + 9 + 2 * i));
      } else {
        CHECK(v.len == 9 && a[7] == (fc | 0x80) && e.exception == a[8],
              "exception %d from a frame of %zu bytes", e.exception, v.len);
      }
    } else if (rc == TR_EMALFORMED) {
      CHECK(v.found != 0, "malformed with neither a frame for it nor a bad header");
      CHECK((v.found == 2) == x.desync, "desync %d, reference %d", x.desync, v.found);
    } else if (rc == MB_XCHG_MORE) {
      CHECK(v.found == 0, "still waiting after its answer (reference %d at %zu)",
            v.found, v.at);
    } else {
      CHECK(0, "verdict %d on Modbus TCP", rc);
    }
  } else if (rc == TR_OK || rc == TR_EEXCEPTION) {
    CHECK(ref_rtu_answer_in(data, off, unit, fc, regs, count,
                            rc == TR_EEXCEPTION ? e.exception : -1),
          "verdict %d, yet no such answer from unit %u is in the stream", rc, unit);
  }
  rc = mb_xchg_timeout(&x, 1000, &e);
  CHECK(rc == TR_ETIMEOUT, "timeout gave %d", rc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t mode = data[0];
  data++;
  size--;
  switch (mode % 8) {
    case 0: pdu_read_req(data, size); break;
    case 1: pdu_read_resp(data, size); break;
    case 2: mbap_header(data, size); break;
    case 3: rtu_frame(data, size); break;
    case 4: framer(data, size, 1); break;
    case 5: framer(data, size, 0); break;
    case 6: exchange(data, size, 0); break;
    case 7: exchange(data, size, 1); break;
  }
  return 0;
}
