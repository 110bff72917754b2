/* mb_proto: the Modbus protocol core. See mb_proto.h.
 *
 * Every function here takes untrusted bytes (a meter's answer, a client's
 * request, fuzzer input): lengths are checked before any byte is read, and
 * nothing is written past the capacity the caller gives.
 */
#include "proto/mb_proto.h"

#include <string.h>

const char *mb_proto_strerror(int rc) {
  switch (rc) {
  case MB_OK: return "success";
  case MB_ENEEDMORE: return "incomplete frame";
  case MB_EMALFORMED: return "malformed frame";
  case MB_ECRC: return "CRC mismatch";
  case MB_EEXCEPTION: return "exception response";
  case MB_EUNIT: return "answer from another unit id";
  case MB_ERANGE: return "count or address out of range";
  case MB_ESPACE: return "buffer too small";
  case MB_EMISMATCH: return "answer does not match the request";
  default: return "unknown error";
  }
}

uint16_t mb_crc16(const uint8_t *buf, size_t len) {
  uint16_t crc = 0xFFFF;
  if (!buf) return crc;
  for (size_t i = 0; i < len; i++) {
    crc ^= buf[i];
    for (int b = 0; b < 8; b++) {
      if (crc & 1u)
        crc = (uint16_t)((crc >> 1) ^ 0xA001u);
      else
        crc = (uint16_t)(crc >> 1);
    }
  }
  return crc;
}

static uint16_t get16(const uint8_t *p) {
  return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)(v & 0xFF);
}

static bool is_read_fc(uint8_t fc) {
  return fc == MB_FC_READ_HOLDING || fc == MB_FC_READ_INPUT;
}

/* --- PDUs ----------------------------------------------------------------- */

int mb_pdu_read_req(uint8_t *pdu, size_t cap, uint8_t fc, uint16_t addr,
                    uint16_t count) {
  if (!is_read_fc(fc)) return MB_EMALFORMED;
  if (count < 1 || count > MB_READ_MAX) return MB_ERANGE;
  /* The last register read must still have an address. */
  if ((uint32_t)addr + count > 0x10000u) return MB_ERANGE;
  if (!pdu || cap < 5) return MB_ESPACE;
  pdu[0] = fc;
  put16(pdu + 1, addr);
  put16(pdu + 3, count);
  return 5;
}

int mb_pdu_parse_read_req(const uint8_t *pdu, size_t len, mb_request *req) {
  if (!pdu || !req || len < 1) return MB_EMALFORMED;
  req->fc = pdu[0];
  req->addr = 0;
  req->count = 0;
  /* Anything but a read is left to the server to refuse as "illegal
   * function", which it can only do knowing the function code. */
  if (!is_read_fc(pdu[0])) return MB_OK;
  if (len != 5) return MB_EMALFORMED;
  req->addr = get16(pdu + 1);
  req->count = get16(pdu + 3);
  if (req->count < 1 || req->count > MB_READ_MAX) return MB_ERANGE;
  return MB_OK;
}

int mb_pdu_read_resp(uint8_t *pdu, size_t cap, uint8_t fc,
                     const uint16_t *regs, uint16_t count) {
  if (!is_read_fc(fc)) return MB_EMALFORMED;
  if (count < 1 || count > MB_READ_MAX) return MB_ERANGE;
  if (!regs) return MB_EMALFORMED;
  size_t n = 2u + 2u * count;
  if (!pdu || cap < n) return MB_ESPACE;
  pdu[0] = fc;
  pdu[1] = (uint8_t)(2u * count);
  for (uint16_t i = 0; i < count; i++) put16(pdu + 2 + 2 * i, regs[i]);
  return (int)n;
}

int mb_pdu_exception(uint8_t *pdu, size_t cap, uint8_t fc, uint8_t code) {
  /* Function code 0 does not exist and 0x80.. are the exception codes
   * themselves: neither can be answered with an exception. */
  if (fc == 0 || (fc & 0x80)) return MB_EMALFORMED;
  if (code == 0) return MB_ERANGE;
  if (!pdu || cap < 2) return MB_ESPACE;
  pdu[0] = (uint8_t)(fc | 0x80);
  pdu[1] = code;
  return 2;
}

int mb_pdu_parse_read_resp(const uint8_t *pdu, size_t len, uint8_t fc,
                           uint16_t count, uint16_t *regs, uint8_t *exc) {
  if (!is_read_fc(fc)) return MB_EMALFORMED;
  if (count < 1 || count > MB_READ_MAX) return MB_ERANGE;
  if (!pdu || len < 2 || len > MB_PDU_MAX) return MB_EMALFORMED;
  if (pdu[0] == (uint8_t)(fc | 0x80)) {
    if (len != 2) return MB_EMALFORMED;
    if (exc) *exc = pdu[1];
    return MB_EEXCEPTION;
  }
  if (pdu[0] != fc) return MB_EMISMATCH;
  uint8_t bc = pdu[1];
  /* Inconsistent in itself first: the byte count must describe what follows
   * and hold whole registers. Only then does it matter whether it answers our
   * question. */
  if ((size_t)bc + 2u != len || bc == 0 || (bc & 1u)) return MB_EMALFORMED;
  if (bc != 2u * count) return MB_EMISMATCH;
  if (regs) {
    for (uint16_t i = 0; i < count; i++) regs[i] = get16(pdu + 2 + 2 * i);
  }
  return MB_OK;
}

/* --- RTU frames ----------------------------------------------------------- */

int mb_rtu_frame(uint8_t *frame, size_t cap, uint8_t unit, const uint8_t *pdu,
                 size_t pdulen) {
  if (!pdu || pdulen < 1 || pdulen > MB_PDU_MAX) return MB_EMALFORMED;
  if (!frame || cap < pdulen + 3) return MB_ESPACE;
  frame[0] = unit;
  memmove(frame + 1, pdu, pdulen);
  uint16_t crc = mb_crc16(frame, pdulen + 1);
  frame[pdulen + 1] = (uint8_t)(crc & 0xFF);
  frame[pdulen + 2] = (uint8_t)(crc >> 8);
  return (int)(pdulen + 3);
}

int mb_rtu_frame_len(const uint8_t *buf, size_t have, bool is_request) {
  if (!buf || have < 2) return MB_ENEEDMORE;
  uint8_t fc = buf[1];
  if (is_request) {
    /* Every request a client may send a server has to be framed, even one
     * the server does not serve: only then can it answer "illegal
     * function" instead of dropping the line's bytes and timing out. */
    switch (fc) {
    case 0x01: /* read coils: unit fc addr(2) qty(2) crc(2) */
    case 0x02: /* read discrete inputs */
    case 0x03:
    case 0x04:
    case 0x05: /* write single coil: unit fc addr(2) value(2) crc(2) */
    case 0x06:
      return 8;
    case 0x0F: {
      /* write multiple coils: unit fc addr(2) qty(2) bc data crc(2), at
       * most 1968 coils in 246 bytes. */
      if (have < 7) return MB_ENEEDMORE;
      uint8_t bc = buf[6];
      if (bc == 0 || bc > 246) return MB_EMALFORMED;
      return 9 + bc;
    }
    case 0x10: {
      /* unit fc addr(2) qty(2) bc data crc(2) */
      if (have < 7) return MB_ENEEDMORE;
      uint8_t bc = buf[6];
      /* At most 123 registers per write, whole registers only. */
      if (bc == 0 || (bc & 1u) || bc > 246) return MB_EMALFORMED;
      return 9 + bc;
    }
    case 0x17: {
      /* read/write multiple registers: unit fc raddr(2) rqty(2) waddr(2)
       * wqty(2) bc data crc(2); at most 121 registers written. */
      if (have < 11) return MB_ENEEDMORE;
      uint8_t bc = buf[10];
      if (bc == 0 || (bc & 1u) || bc > 242) return MB_EMALFORMED;
      return 13 + bc;
    }
    default:
      return MB_EMALFORMED;
    }
  }
  if (fc & 0x80) return 5; /* unit fc code crc(2) */
  switch (fc) {
  case 0x01:
  case 0x02:
  case 0x03:
  case 0x04: {
    if (have < 3) return MB_ENEEDMORE;
    uint8_t bc = buf[2];
    /* Registers come in pairs of bytes, at most 125 of them; bits in at most
     * 250 bytes. Anything else is noise that would only make us wait. */
    if (bc == 0 || bc > 2 * MB_READ_MAX) return MB_EMALFORMED;
    if ((fc == 0x03 || fc == 0x04) && (bc & 1u)) return MB_EMALFORMED;
    return 5 + bc;
  }
  case 0x06:
  case 0x10:
    return 8;
  default:
    return MB_EMALFORMED;
  }
}

int mb_rtu_parse(const uint8_t *frame, size_t len, uint8_t *unit,
                 const uint8_t **pdu, size_t *pdulen) {
  /* The shortest frame is unit + function code + CRC. */
  if (!frame || len < 4 || len > MB_RTU_MAX) return MB_EMALFORMED;
  uint16_t want = mb_crc16(frame, len - 2);
  uint16_t got = (uint16_t)(frame[len - 2] | ((unsigned)frame[len - 1] << 8));
  if (want != got) return MB_ECRC;
  if (unit) *unit = frame[0];
  if (pdu) *pdu = frame + 1;
  if (pdulen) *pdulen = len - 3;
  return MB_OK;
}

int mb_rtu_parse_read_resp(const uint8_t *frame, size_t len, uint8_t unit,
                           uint8_t fc, uint16_t count, uint16_t *regs,
                           uint8_t *exc) {
  uint8_t from = 0;
  const uint8_t *pdu = NULL;
  size_t pdulen = 0;
  int rc = mb_rtu_parse(frame, len, &from, &pdu, &pdulen);
  if (rc != MB_OK) return rc;
  if (from != unit) return MB_EUNIT;
  return mb_pdu_parse_read_resp(pdu, pdulen, fc, count, regs, exc);
}

/* --- MBAP ----------------------------------------------------------------- */

int mb_mbap_frame(uint8_t *adu, size_t cap, uint16_t tid, uint8_t unit,
                  const uint8_t *pdu, size_t pdulen) {
  if (!pdu || pdulen < 1 || pdulen > MB_PDU_MAX) return MB_EMALFORMED;
  if (!adu || cap < MB_MBAP_HDR + pdulen) return MB_ESPACE;
  memmove(adu + MB_MBAP_HDR, pdu, pdulen);
  put16(adu, tid);
  put16(adu + 2, 0);
  put16(adu + 4, (uint16_t)(pdulen + 1));
  adu[6] = unit;
  return (int)(MB_MBAP_HDR + pdulen);
}

int mb_mbap_parse(const uint8_t *buf, size_t have, mb_mbap *hdr) {
  if (!buf || have < MB_MBAP_HDR) return MB_ENEEDMORE;
  mb_mbap h;
  h.tid = get16(buf);
  h.proto = get16(buf + 2);
  h.len = get16(buf + 4);
  h.unit = buf[6];
  /* Filled even when refused, so a server can log or echo the transaction
   * id of what it drops. */
  if (hdr) *hdr = h;
  if (h.proto != 0) return MB_EMALFORMED;
  /* unit id + at least a function code + data, at most unit id + 253. */
  if (h.len < 2 || h.len > MB_PDU_MAX + 1) return MB_EMALFORMED;
  return (int)(MB_MBAP_HDR - 1 + h.len);
}

/* --- Streaming RTU framer ------------------------------------------------- */

void mb_rtu_framer_init(mb_rtu_framer *f, bool is_request) {
  if (!f) return;
  memset(f, 0, sizeof *f);
  f->is_request = is_request;
}

size_t mb_rtu_framer_feed(mb_rtu_framer *f, const uint8_t *data, size_t len) {
  if (!f || !data || f->len >= sizeof f->buf) return 0;
  size_t room = sizeof f->buf - f->len;
  size_t n = len < room ? len : room;
  memcpy(f->buf + f->len, data, n);
  f->len += n;
  return n;
}

static void framer_consume(mb_rtu_framer *f, size_t n) {
  if (n >= f->len) {
    f->len = 0;
    return;
  }
  memmove(f->buf, f->buf + n, f->len - n);
  f->len -= n;
}

int mb_rtu_framer_next(mb_rtu_framer *f, uint8_t *out, size_t cap) {
  if (!f) return MB_EMALFORMED;
  if (f->len == 0) return MB_ENEEDMORE;
  int n = mb_rtu_frame_len(f->buf, f->len, f->is_request);
  if (n == MB_ENEEDMORE) return MB_ENEEDMORE;
  if (n < 0) {
    /* RTU has no start marker: once the function code makes no sense there
     * is no way to find the next frame in these bytes, so they all go. */
    f->dropped_bytes += f->len;
    f->len = 0;
    return MB_EMALFORMED;
  }
  if (f->len < (size_t)n) return MB_ENEEDMORE;
  if (!out || cap < (size_t)n) return MB_ESPACE;
  int rc = mb_rtu_parse(f->buf, (size_t)n, NULL, NULL, NULL);
  if (rc != MB_OK) {
    f->crc_errors++;
    framer_consume(f, (size_t)n);
    return MB_ECRC;
  }
  memcpy(out, f->buf, (size_t)n);
  framer_consume(f, (size_t)n);
  return n;
}

void mb_rtu_framer_reset(mb_rtu_framer *f) {
  if (f) f->len = 0;
}

/* --- RTU timing ----------------------------------------------------------- */

int mb_rtu_char_bits(int data_bits, bool parity, int stop_bits) {
  if (data_bits < 5 || data_bits > 8 || stop_bits < 1 || stop_bits > 2)
    return MB_ERANGE;
  return 1 + data_bits + (parity ? 1 : 0) + stop_bits;
}

/* ceil(bits * 1e6 / baud) without overflow; saturates for absurd sizes. */
static uint64_t bits_to_us(uint64_t bits, uint64_t baud) {
  uint64_t q = bits / baud, r = bits % baud;
  if (q > UINT64_MAX / 1000000u - 1) return UINT64_MAX;
  /* r < baud <= INT_MAX, so r * 1e6 fits comfortably. */
  return q * 1000000u + (r * 1000000u + baud - 1) / baud;
}

uint64_t mb_rtu_wire_us(size_t nbytes, int baud, int char_bits) {
  if (baud <= 0 || char_bits <= 0) return 0;
  uint64_t n = (uint64_t)nbytes;
  if (n > UINT64_MAX / (uint64_t)char_bits) return UINT64_MAX;
  return bits_to_us(n * (uint64_t)char_bits, (uint64_t)baud);
}

uint64_t mb_rtu_silence_us(int baud, int char_bits) {
  if (baud <= 0 || char_bits <= 0) return 0;
  /* Above 19200 baud the 3.5 characters would be shorter than a UART and
   * its driver can time, so the specification fixes 1.75 ms. */
  if (baud > 19200) return 1750;
  /* 3.5 characters = 7 half characters, rounded up: never shorter. */
  return bits_to_us(7u * (uint64_t)char_bits, 2u * (uint64_t)baud);
}
