/* mb_xchg: one read request and the judging of its answer, without I/O.
 *
 * Builds the request frame for a stream transport (an MBAP frame for Modbus
 * TCP, an RTU frame with CRC for RTU carried over TCP), then takes the bytes
 * that come back in whatever pieces the network delivers them and says when
 * the answer is whole and what it is worth: the registers, a Modbus exception,
 * or which way it is wrong. Whoever owns the socket does the waiting: the
 * blocking tcp and rtu-over-tcp transport with poll(2), the daemon's event loop with
 * epoll. Both judge answers here, so they judge them the same way.
 *
 * A frame that is plainly not an answer to this request is passed over and
 * the wait goes on: on Modbus TCP one with another transaction id (the late
 * answer to a request that timed out), on an RTU line one from another unit
 * or for another function (another meter's late answer behind the same DTU).
 */
#ifndef IC_MB_XCHG_H
#define IC_MB_XCHG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/mb_proto.h"
#include "transport/transport.h"

/* The longest request frame: a read over MBAP (7 + 5 bytes). */
#define MB_XCHG_REQ_MAX 12

/* mb_xchg_feed's answer while the answer is not whole yet. */
#define MB_XCHG_MORE 1

typedef struct {
  bool rtu;         /* RTU framing; else MBAP */
  uint8_t unit, fc;
  uint16_t count;
  uint16_t tid;     /* MBAP transaction id of the request */
  uint16_t *out;    /* count registers on success */
  union {
    mb_rtu_framer fr; /* RTU: the answer being reassembled */
    struct {
      uint8_t buf[MB_TCP_MAX]; /* MBAP: the frame being reassembled */
      size_t len;
    } mbap;
  } u;
  /* Frames passed over, for a timeout's detail. */
  unsigned foreign;
  uint8_t foreign_unit, foreign_fc;
  /* The bytes can no longer be framed (an MBAP header that is not one):
   * nothing later on this connection can be trusted; close it. */
  bool desync;
} mb_xchg;

/* Start an exchange: read COUNT registers with FC (0x03 or 0x04) from UNIT
 * at ADDR into OUT. The request frame goes into REQ (CAP >= MB_XCHG_REQ_MAX).
 * Returns its length, or a tr_code (TR_EIO) with E filled when the request
 * cannot be built. */
int mb_xchg_begin(mb_xchg *x, bool rtu, uint16_t tid, uint8_t unit, uint8_t fc,
                  uint16_t addr, uint16_t count, uint16_t *out, uint8_t *req,
                  size_t cap, tr_error *e);

/* Take LEN received bytes. MB_XCHG_MORE while the answer is not whole;
 * otherwise the verdict, TR_OK (the registers are in OUT) or a tr_code with
 * E filled. Bytes after the answer are not part of it and are dropped. */
int mb_xchg_feed(mb_xchg *x, const uint8_t *data, size_t len, tr_error *e);

/* The bus timeout ran out: TR_ETIMEOUT with E saying what had come (nothing,
 * part of a frame, frames that were not for this request). */
int mb_xchg_timeout(mb_xchg *x, int64_t timeout_ms, tr_error *e);

#endif
