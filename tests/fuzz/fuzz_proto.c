/* libFuzzer target: the Modbus protocol core (PDU, MBAP and RTU parsing,
 * the streaming RTU framer used by the rtu-over-tcp transport and
 * intake-sim, and the judging of answers that both network transports use).
 * The first byte picks the entry point. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mb_proto.h"
#include "mb_xchg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t mode = data[0];
  data++;
  size--;
  uint16_t regs[MB_READ_MAX];
  uint8_t exc;
  switch (mode % 8) {
    case 0: {
      mb_request req;
      mb_pdu_parse_read_req(data, size, &req);
      break;
    }
    case 1: {
      uint16_t count = size >= 1 ? (uint16_t)(data[0] % 130) : 1;
      mb_pdu_parse_read_resp(size ? data + 1 : data, size ? size - 1 : 0,
                             MB_FC_READ_HOLDING, count, regs, &exc);
      break;
    }
    case 2: {
      mb_mbap hdr;
      mb_mbap_parse(data, size, &hdr);
      break;
    }
    case 3: {
      uint8_t unit;
      const uint8_t *pdu;
      size_t pdulen;
      mb_rtu_parse(data, size, &unit, &pdu, &pdulen);
      mb_rtu_frame_len(data, size, true);
      mb_rtu_frame_len(data, size, false);
      break;
    }
    case 6:
    case 7: {
      /* An exchange (MBAP or RTU) fed what a broken peer might send, in
       * chunks whose sizes come from the data itself. */
      mb_xchg x;
      tr_error e;
      uint8_t req[MB_TCP_MAX];
      uint16_t count = size >= 1 ? (uint16_t)(1 + data[0] % MB_READ_MAX) : 1;
      mb_xchg_begin(&x, mode % 8 == 7, 1, 1, MB_FC_READ_HOLDING, 0, count, regs,
                    req, sizeof req, &e);
      size_t off = 0;
      while (off < size) {
        size_t chunk = 1 + data[off] % 61;
        if (chunk > size - off) chunk = size - off;
        int rc = mb_xchg_feed(&x, data + off, chunk, &e);
        off += chunk;
        if (rc != MB_XCHG_MORE) break;
      }
      mb_xchg_timeout(&x, 1000, &e);
      break;
    }
    default: {
      /* The framer, fed in chunks whose sizes come from the data itself. */
      mb_rtu_framer f;
      mb_rtu_framer_init(&f, mode % 8 == 4);
      uint8_t out[MB_RTU_MAX];
      size_t off = 0;
      while (off < size) {
        size_t chunk = 1 + data[off] % 37;
        if (chunk > size - off) chunk = size - off;
        size_t took = mb_rtu_framer_feed(&f, data + off, chunk);
        off += took ? took : chunk;
        int n;
        while ((n = mb_rtu_framer_next(&f, out, sizeof out)) != MB_ENEEDMORE) {
          if (n > 0) {
            uint8_t unit;
            const uint8_t *pdu;
            size_t pdulen;
            if (mb_rtu_parse(out, (size_t)n, &unit, &pdu, &pdulen) == MB_OK)
              mb_pdu_parse_read_resp(pdu, pdulen, MB_FC_READ_INPUT, 2, regs, &exc);
          }
        }
      }
      break;
    }
  }
  return 0;
}
