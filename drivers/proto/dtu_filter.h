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
 * heartbeat 0xFE is also a register's byte, a unit id too; 0x00 is common
 * in registers): a frame is taken as it came when its CRC is good, and
 * otherwise with packets in front of it and inside it taken out (at most
 * DTU_FILTER_SKIPS a frame) until one way gives a good CRC. As a CRC-16
 * passes one wrong frame in 65536, the ways are tried from the likeliest,
 * and as few as can be:
 *
 * - A DTU sends its packet as a TCP segment of its own, so one inside an
 *   answer nearly always starts where a received chunk starts (the bytes of
 *   one dtu_filter_feed), or ends where the next one starts. Packets there
 *   (and in front of the frame) are taken out first, before the bytes as
 *   they came.
 * - Only when that gives no frame are packets anywhere tried: fewest
 *   first, and for as many, the earliest first. A way that takes more
 *   packets out needs more bytes, so while the frame is whole as it came
 *   (or with fewer out) no data byte that looks like a packet is taken out.
 * - Two ways of one round (those at chunk bounds with the bytes as they
 *   came; or as many packets anywhere) that give different good frames
 *   mean the CRC cannot tell: neither is taken, nor the bytes as they
 *   came; they are dropped (counted in ambiguous). An answer lost is
 *   better than a wrong one.
 * - When the caller says which answer it awaits (dtu_filter_expect), a way
 *   that takes a packet out of a frame must give that answer: its unit, its
 *   function (or the exception to it) and its length. A frame as it came
 *   with a good CRC is handed on whatever it is, for the exchange to judge.
 * - The work of one dtu_filter_next is bounded (DTU_FILTER_BUDGET steps,
 *   of which a quarter for the ways at chunk bounds); past it the filter
 *   waits for more bytes, or hands bytes on when it cannot wait.
 *
 * A wrong frame still comes out when a likelier way gives one whose CRC is
 * good by chance (one in 65536) before the right way is whole: the bytes as
 * they came while a packet inside came in one chunk with the data around
 * it, or a data byte equal to the heartbeat that starts a chunk taken out
 * while more bytes follow the answer.
 *
 * A whole packet where no frame starts is dropped. Bytes that cannot be
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
/* Steps of the search (a byte taken into a frame, or a packet taken out),
 * at most, per call of dtu_filter_next (some 100 us). */
#define DTU_FILTER_BUDGET 20000

typedef struct {
  uint8_t reg[DTU_PKT_MAX];
  uint8_t hb[DTU_PKT_MAX];
  size_t reglen, hblen; /* hblen 0: no heartbeat */
  bool reg_every;       /* the registration may come before any packet */
  /* Bytes received and not yet handed on: a frame with its packets and
   * what follows. */
  uint8_t buf[2 * MB_RTU_MAX + 4 * DTU_PKT_MAX];
  /* Nonzero where a received chunk began in buf. */
  uint8_t chunk[2 * MB_RTU_MAX + 4 * DTU_PKT_MAX];
  size_t len;
  bool cut; /* the last feed was cut short: the next goes on with its chunk */
  /* The answer awaited (dtu_filter_expect); unit 0: none said. */
  uint8_t exp_unit, exp_fc;
  size_t exp_len;
  uint64_t packets; /* registration and heartbeat packets taken out */
  uint64_t ambiguous; /* times two ways gave two frames: bytes dropped */
  unsigned work_max; /* the most steps one dtu_filter_next took */
} dtu_filter;

/* Parse a packet as configured: "hex:7B01..." ("HEX:" too; pairs of hex digits, spaces
 * allowed between pairs) or text taken byte for byte. Returns its length
 * (1..CAP), or -1 when empty, too long or not hex after "hex:". */
int dtu_packet_parse(const char *s, uint8_t *out, size_t cap);

/* Set F up for a DTU whose registration is REG (REGLEN 1..DTU_PKT_MAX) and
 * heartbeat HB (HBLEN 0..DTU_PKT_MAX; 0 for none); REG_EVERY when it may
 * put the registration in front of any packet. -1 on bad lengths. */
int dtu_filter_init(dtu_filter *f, const uint8_t *reg, size_t reglen,
                    bool reg_every, const uint8_t *hb, size_t hblen);

/* Take received bytes: one chunk as read from the socket (a DTU's packet
 * starts a chunk more often than not; the filter tries that first). Returns
 * how many were taken: fewer than LEN only when the buffer is full, and
 * dtu_filter_next then makes room; the rest, fed then, goes on with the
 * same chunk. */
size_t dtu_filter_feed(dtu_filter *f, const uint8_t *data, size_t len);

/* The answer the request just sent awaits: from UNIT (1..247) to function
 * FC, LEN bytes with its CRC (5 + 2 * count for a register read), or the
 * exception to FC (5 bytes). A frame that only comes out with a packet
 * taken out of it must be that answer. UNIT 0: any frame (as after init).
 * dtu_filter_reset keeps it. */
void dtu_filter_expect(dtu_filter *f, uint8_t unit, uint8_t fc, size_t len);

/* The next bytes for the RTU framer into OUT (CAP >= MB_RTU_MAX): a whole
 * frame with its packets taken out, or bytes that frame nothing. Returns
 * their length, or 0 when more bytes are needed to tell. */
size_t dtu_filter_next(dtu_filter *f, uint8_t *out, size_t cap);

/* Drop what is buffered (after a timeout, as the framer is; before a
 * request). */
void dtu_filter_reset(dtu_filter *f);

#endif
