/* dtu_filter: a 4G DTU's registration and heartbeat packets taken out of the
 * RTU answers it carries, without I/O.
 *
 * A DTU that dials in passes its serial line's bytes through unchanged, but
 * mixes in packets of its own: a heartbeat (a few bytes, every so many
 * seconds, whenever its timer fires: between answers and, when the DTU cut
 * an answer into two packets, in the middle of one) and, on some models, its
 * registration in front of every packet. The RTU framer knows nothing of
 * them; this filter stands before it and hands on frames only.
 *
 * A packet cannot be told from data by its bytes alone (a one-byte
 * heartbeat 0xFE is also a register's byte, a unit id too): a frame is taken
 * as it came when its CRC is good, and otherwise with the packets in front
 * of it and inside it taken out, trying each way (at most DTU_FILTER_SKIPS
 * packets a frame, within a bounded amount of work) until one gives a good
 * CRC. A whole packet where no frame starts is dropped. Bytes that cannot be
 * made into a frame are handed on as they are, for the framer to judge and
 * count.
 */
#ifndef IC_DTU_FILTER_H
#define IC_DTU_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/mb_proto.h"

/* The longest registration or heartbeat packet (makers allow up to 40
 * bytes). */
#define DTU_PKT_MAX 40
/* Packets taken out of one frame, at most. */
#define DTU_FILTER_SKIPS 3
/* Ways of taking packets out of a frame tried, at most, per decision. */
#define DTU_FILTER_BUDGET 20000

typedef struct {
  uint8_t reg[DTU_PKT_MAX];
  uint8_t hb[DTU_PKT_MAX];
  size_t reglen, hblen; /* hblen 0: no heartbeat */
  bool reg_every;       /* the registration may come before any packet */
  /* Bytes received and not yet handed on: a frame with its packets and
   * what follows. */
  uint8_t buf[2 * MB_RTU_MAX + 4 * DTU_PKT_MAX];
  size_t len;
  uint64_t packets; /* registration and heartbeat packets taken out */
} dtu_filter;

/* Parse a packet as configured: "hex:7B01..." (pairs of hex digits, spaces
 * allowed between pairs) or text taken byte for byte. Returns its length
 * (1..CAP), or -1 when empty, too long or not hex after "hex:". */
int dtu_packet_parse(const char *s, uint8_t *out, size_t cap);

/* Set F up for a DTU whose registration is REG (REGLEN 1..DTU_PKT_MAX) and
 * heartbeat HB (HBLEN 0..DTU_PKT_MAX; 0 for none); REG_EVERY when it may
 * put the registration in front of any packet. -1 on bad lengths. */
int dtu_filter_init(dtu_filter *f, const uint8_t *reg, size_t reglen,
                    bool reg_every, const uint8_t *hb, size_t hblen);

/* Take received bytes. Returns how many were taken: fewer than LEN only when
 * the buffer is full, and dtu_filter_next then makes room. */
size_t dtu_filter_feed(dtu_filter *f, const uint8_t *data, size_t len);

/* The next bytes for the RTU framer into OUT (CAP >= MB_RTU_MAX): a whole
 * frame with its packets taken out, or bytes that frame nothing. Returns
 * their length, or 0 when more bytes are needed to tell. */
size_t dtu_filter_next(dtu_filter *f, uint8_t *out, size_t cap);

/* Drop what is buffered (after a timeout, as the framer is). */
void dtu_filter_reset(dtu_filter *f);

#endif
