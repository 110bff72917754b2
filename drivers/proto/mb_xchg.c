#include "proto/mb_xchg.h"

#include <stdio.h>
#include <string.h>

/* The longest frame an MBAP header can announce fits (its length field
 * counts the unit id and up to MB_PDU_MAX bytes of PDU). */
_Static_assert(sizeof(((mb_xchg *)0)->u.mbap.buf) >= MB_MBAP_HDR - 1 + 1 + MB_PDU_MAX,
               "an MBAP frame of the longest length fits");

int mb_xchg_begin(mb_xchg *x, bool rtu, uint16_t tid, uint8_t unit, uint8_t fc,
                  uint16_t addr, uint16_t count, uint16_t *out, uint8_t *req,
                  size_t cap, tr_error *e) {
  memset(x, 0, sizeof *x);
  x->rtu = rtu;
  x->tid = tid;
  x->unit = unit;
  x->fc = fc;
  x->count = count;
  x->out = out;
  /* The framer reads answers: response layouts. */
  if (rtu) mb_rtu_framer_init(&x->u.fr, false);
  uint8_t pdu[8];
  int plen = mb_pdu_read_req(pdu, sizeof pdu, fc, addr, count);
  if (plen < 0)
    return tr_fail(e, TR_EIO, "cannot build the request: %s",
                   mb_proto_strerror(plen));
  int flen = rtu ? mb_rtu_frame(req, cap, unit, pdu, (size_t)plen)
                 : mb_mbap_frame(req, cap, tid, unit, pdu, (size_t)plen);
  if (flen < 0)
    return tr_fail(e, TR_EIO, "cannot build the request: %s",
                   mb_proto_strerror(flen));
  return flen;
}

/* The verdict on a PDU that answers this request (its framing, CRC or
 * transaction id already checked). */
static int judge_pdu(mb_xchg *x, const uint8_t *pdu, size_t len, tr_error *e) {
  uint8_t exc = 0;
  int rc = mb_pdu_parse_read_resp(pdu, len, x->fc, x->count, x->out, &exc);
  switch (rc) {
  case MB_OK:
    return TR_OK;
  case MB_EEXCEPTION:
    return tr_fail_exception(e, exc);
  case MB_EMISMATCH:
    return tr_fail(e, TR_EMALFORMED,
                   "answer from unit %u does not match the request "
                   "(function 0x%02X, %zu bytes for %u registers)",
                   (unsigned)x->unit, len ? (unsigned)pdu[0] : 0u, len,
                   (unsigned)x->count);
  default:
    return tr_fail(e, TR_EMALFORMED, "malformed answer from unit %u (%s)",
                   (unsigned)x->unit, mb_proto_strerror(rc));
  }
}

static void pass_over(mb_xchg *x, uint8_t unit, uint8_t fc) {
  if (x->foreign++ == 0) {
    x->foreign_unit = unit;
    x->foreign_fc = fc;
  }
}

/* RTU: judge every whole frame the framer holds. */
static int rtu_frames(mb_xchg *x, tr_error *e) {
  uint8_t got[MB_RTU_MAX];
  int glen;
  while ((glen = mb_rtu_framer_next(&x->u.fr, got, sizeof got)) != MB_ENEEDMORE) {
    if (glen > 0 && (got[0] != x->unit ||
                     (got[1] != x->fc && got[1] != (uint8_t)(x->fc | 0x80)))) {
      /* Another meter's late answer (or one to an earlier request of
       * another kind) on the shared line: not ours, and not a fault of the
       * unit asked. */
      pass_over(x, got[0], got[1]);
      continue;
    }
    /* One answer per request: whatever follows it is not ours. */
    mb_rtu_framer_reset(&x->u.fr);
    if (glen == MB_ECRC)
      return tr_fail(e, TR_ECRC, "bad CRC in the answer from unit %u",
                     (unsigned)x->unit);
    if (glen < 0)
      return tr_fail(e, TR_EMALFORMED, "unframeable answer from unit %u (%s)",
                     (unsigned)x->unit, mb_proto_strerror(glen));
    /* The framer checked length and CRC; the PDU sits between the unit id
     * and the CRC. */
    return judge_pdu(x, got + 1, (size_t)glen - 3, e);
  }
  return MB_XCHG_MORE;
}

static int rtu_feed(mb_xchg *x, const uint8_t *data, size_t len, tr_error *e) {
  size_t off = 0;
  do {
    off += mb_rtu_framer_feed(&x->u.fr, data + off, len - off);
    int rc = rtu_frames(x, e);
    if (rc != MB_XCHG_MORE) return rc;
    /* The framer holds less than a whole frame now (half its room), so the
     * next round takes more. */
  } while (off < len);
  return MB_XCHG_MORE;
}

static int mbap_feed(mb_xchg *x, const uint8_t *data, size_t len, tr_error *e) {
  size_t off = 0;
  while (off < len) {
    /* The header first, then as much as it announces. */
    size_t want = MB_MBAP_HDR;
    mb_mbap h;
    int total = MB_ENEEDMORE;
    if (x->u.mbap.len >= MB_MBAP_HDR) {
      total = mb_mbap_parse(x->u.mbap.buf, x->u.mbap.len, &h);
      if (total < 0) break; /* refused below, when it came in */
      want = (size_t)total;
    }
    size_t take = want - x->u.mbap.len;
    if (take > len - off) take = len - off;
    memcpy(x->u.mbap.buf + x->u.mbap.len, data + off, take);
    x->u.mbap.len += take;
    off += take;
    if (x->u.mbap.len < MB_MBAP_HDR) break;
    total = mb_mbap_parse(x->u.mbap.buf, x->u.mbap.len, &h);
    if (total < 0) {
      x->desync = true;
      return tr_fail(e, TR_EMALFORMED,
                     "unframeable answer from unit %u (protocol id %u, "
                     "length %u)",
                     (unsigned)x->unit, (unsigned)h.proto, (unsigned)h.len);
    }
    if (x->u.mbap.len < (size_t)total) continue;
    /* A whole frame. */
    x->u.mbap.len = 0;
    if (h.tid != x->tid) {
      /* The late answer to an earlier request. */
      pass_over(x, h.unit, x->u.mbap.buf[MB_MBAP_HDR]);
      continue;
    }
    if (h.unit != x->unit)
      return tr_fail(e, TR_EMALFORMED, "answer from unit %u, expected %u",
                     (unsigned)h.unit, (unsigned)x->unit);
    return judge_pdu(x, x->u.mbap.buf + MB_MBAP_HDR, (size_t)total - MB_MBAP_HDR, e);
  }
  return MB_XCHG_MORE;
}

int mb_xchg_feed(mb_xchg *x, const uint8_t *data, size_t len, tr_error *e) {
  if (x->desync)
    return tr_fail(e, TR_EMALFORMED, "unframeable answer from unit %u",
                   (unsigned)x->unit);
  if (len == 0) return MB_XCHG_MORE;
  return x->rtu ? rtu_feed(x, data, len, e) : mbap_feed(x, data, len, e);
}

int mb_xchg_timeout(mb_xchg *x, int64_t timeout_ms, tr_error *e) {
  size_t partial = x->rtu ? x->u.fr.len : x->u.mbap.len;
  char why[96] = "";
  if (x->foreign)
    snprintf(why, sizeof why,
             "; discarded %u frame%s not for it (first: unit %u, function "
             "0x%02X)",
             x->foreign, x->foreign == 1 ? "" : "s", (unsigned)x->foreign_unit,
             (unsigned)x->foreign_fc);
  if (partial)
    return tr_fail(e, TR_ETIMEOUT,
                   "incomplete answer from unit %u within %lld ms (%zu "
                   "bytes)%s",
                   (unsigned)x->unit, (long long)timeout_ms, partial, why);
  return tr_fail(e, TR_ETIMEOUT, "no answer from unit %u within %lld ms%s",
                 (unsigned)x->unit, (long long)timeout_ms, why);
}
