/* libFuzzer target: the Modbus protocol core (PDU, MBAP and RTU parsing and
 * the streaming RTU framer used by the rtu-over-tcp transport and
 * intake-sim). The first byte picks the entry point. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mb_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t mode = data[0];
  data++;
  size--;
  uint16_t regs[MB_READ_MAX];
  uint8_t exc;
  switch (mode % 6) {
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
    default: {
      /* The framer, fed in chunks whose sizes come from the data itself. */
      mb_rtu_framer f;
      mb_rtu_framer_init(&f, mode % 6 == 4);
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
