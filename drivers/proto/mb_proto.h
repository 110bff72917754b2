/* mb_proto: the Modbus protocol core.
 *
 * Pure functions, no I/O: bytes in, values out. Builds and parses request and
 * response PDUs for reading registers, exception responses, MBAP headers
 * (Modbus TCP) and RTU frames (unit id + PDU + CRC16). The rtu-over-tcp
 * transport and intake-sim stand on it, and it is what the fuzzers exercise.
 *
 * Limits come from the specification: a PDU is at most 253 bytes, an RTU
 * frame 256, an MBAP frame 260, and a read asks for 1..125 registers.
 */
#ifndef IC_MB_PROTO_H
#define IC_MB_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MB_PDU_MAX 253
#define MB_RTU_MAX 256
#define MB_MBAP_HDR 7
#define MB_TCP_MAX (MB_MBAP_HDR + MB_PDU_MAX) /* the header, unit id included, and a PDU */
#define MB_READ_MAX 125

#define MB_FC_READ_HOLDING 0x03
#define MB_FC_READ_INPUT 0x04
#define MB_FC_WRITE_SINGLE 0x06
#define MB_FC_WRITE_MULTIPLE 0x10

/* Exception codes. */
#define MB_EX_ILLEGAL_FUNCTION 0x01
#define MB_EX_ILLEGAL_ADDRESS 0x02
#define MB_EX_ILLEGAL_VALUE 0x03
#define MB_EX_DEVICE_FAILURE 0x04
#define MB_EX_BUSY 0x06

/* Return codes: 0 success, negative failure. */
enum {
  MB_OK = 0,
  MB_ENEEDMORE = -1,  /* the frame is not complete yet */
  MB_EMALFORMED = -2, /* length, byte count or function code is wrong */
  MB_ECRC = -3,       /* RTU CRC mismatch */
  MB_EEXCEPTION = -4, /* a well-formed exception response */
  MB_EUNIT = -5,      /* the answer came from another unit id */
  MB_ERANGE = -6,     /* a count or address outside the protocol's limits */
  MB_ESPACE = -7,     /* the output buffer is too small */
  MB_EMISMATCH = -8,  /* function code, transaction id or count differs */
};

const char *mb_proto_strerror(int rc);

/* CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF). On the wire the low
 * byte goes first. */
uint16_t mb_crc16(const uint8_t *buf, size_t len);

/* --- PDUs (function code + data) ---------------------------------------- */

/* Build a read-holding (0x03) or read-input (0x04) request. Returns the PDU
 * length (5) or a negative code. */
int mb_pdu_read_req(uint8_t *pdu, size_t cap, uint8_t fc, uint16_t addr,
                    uint16_t count);

/* A parsed request, as a server sees it. */
typedef struct {
  uint8_t fc;
  uint16_t addr;
  uint16_t count;
} mb_request;

/* Parse a read request PDU. MB_EMALFORMED for a short PDU; for an unknown
 * function code returns MB_OK with req->fc set and addr/count 0, so a server
 * can answer "illegal function". MB_ERANGE for count outside 1..125. */
int mb_pdu_parse_read_req(const uint8_t *pdu, size_t len, mb_request *req);

/* Build a read response carrying COUNT registers. Returns the PDU length. */
int mb_pdu_read_resp(uint8_t *pdu, size_t cap, uint8_t fc,
                     const uint16_t *regs, uint16_t count);

/* Build an exception response (fc | 0x80, code). Returns 2. */
int mb_pdu_exception(uint8_t *pdu, size_t cap, uint8_t fc, uint8_t code);

/* Parse the response to a read of COUNT registers with function code FC.
 * On MB_OK, regs[0..count) hold the values. On MB_EEXCEPTION, *exc holds the
 * exception code. MB_EMISMATCH when the function code or byte count does not
 * answer the request; MB_EMALFORMED when the PDU is inconsistent in itself. */
int mb_pdu_parse_read_resp(const uint8_t *pdu, size_t len, uint8_t fc,
                           uint16_t count, uint16_t *regs, uint8_t *exc);

/* --- RTU frames (unit + PDU + CRC) -------------------------------------- */

/* Wrap PDU into an RTU frame for UNIT. Returns the frame length. */
int mb_rtu_frame(uint8_t *frame, size_t cap, uint8_t unit, const uint8_t *pdu,
                 size_t pdulen);

/* How long the RTU frame starting at BUF is, judged from its function code,
 * given the HAVE bytes seen so far. Returns the total length (CRC included),
 * MB_ENEEDMORE when more bytes are needed to tell, or MB_EMALFORMED for a
 * function code whose length cannot be known. IS_REQUEST picks the request or
 * the response layout (a read request is 8 bytes; its response is 5 + the
 * byte count). */
int mb_rtu_frame_len(const uint8_t *buf, size_t have, bool is_request);

/* Check a complete RTU frame: length and CRC. On MB_OK *unit, *pdu and
 * *pdulen point into FRAME. */
int mb_rtu_parse(const uint8_t *frame, size_t len, uint8_t *unit,
                 const uint8_t **pdu, size_t *pdulen);

/* --- MBAP (Modbus TCP) --------------------------------------------------- */

typedef struct {
  uint16_t tid;   /* transaction id */
  uint16_t proto; /* 0 for Modbus */
  uint16_t len;   /* bytes after this field: unit id + PDU */
  uint8_t unit;
} mb_mbap;

/* Wrap PDU into a Modbus TCP ADU. Returns the ADU length. */
int mb_mbap_frame(uint8_t *adu, size_t cap, uint16_t tid, uint8_t unit,
                  const uint8_t *pdu, size_t pdulen);

/* Parse an MBAP header from the HAVE bytes at BUF. Returns the total ADU
 * length (7 + len - 1), MB_ENEEDMORE for fewer than 7 bytes, or MB_EMALFORMED
 * for a protocol id other than 0 or a length outside 2..254. */
int mb_mbap_parse(const uint8_t *buf, size_t have, mb_mbap *hdr);

/* --- Streaming RTU framer ------------------------------------------------ *
 * Bytes from a stream (a TCP socket carrying RTU, a pty) arrive split and
 * merged arbitrarily. The framer buffers them and hands out whole frames.
 * Frames with a bad CRC are reported and skipped; when the bytes cannot be
 * framed at all (an unknown function code, noise) the buffer is dropped,
 * since RTU has no other way to resynchronise than the silent interval. */

typedef struct {
  uint8_t buf[2 * MB_RTU_MAX];
  size_t len;
  bool is_request;
  uint64_t crc_errors;
  uint64_t dropped_bytes;
} mb_rtu_framer;

void mb_rtu_framer_init(mb_rtu_framer *f, bool is_request);

/* Append bytes. Returns the number taken (less than LEN only when the buffer
 * is full; call mb_rtu_framer_next to make room). */
size_t mb_rtu_framer_feed(mb_rtu_framer *f, const uint8_t *data, size_t len);

/* Take the next complete frame into OUT (cap >= MB_RTU_MAX). Returns its
 * length, MB_ENEEDMORE when none is complete, MB_ECRC when a frame failed
 * its CRC (it is consumed), or MB_EMALFORMED when the buffered bytes could not
 * be framed (they are dropped). */
int mb_rtu_framer_next(mb_rtu_framer *f, uint8_t *out, size_t cap);

/* Drop everything buffered (after a timeout, before the next request). */
void mb_rtu_framer_reset(mb_rtu_framer *f);

/* --- RTU timing ------------------------------------------------------------ */

/* Bits on the wire per character: start + data + parity + stop. */
int mb_rtu_char_bits(int data_bits, bool parity, int stop_bits);

/* Microseconds a frame of NBYTES occupies the wire at BAUD. */
uint64_t mb_rtu_wire_us(size_t nbytes, int baud, int char_bits);

/* The inter-frame silence (3.5 characters; 1750 us fixed above 19200 baud, as
 * the specification recommends). */
uint64_t mb_rtu_silence_us(int baud, int char_bits);

/* --- Checking an RTU answer (client side) -------------------------------- */

/* Check a complete RTU frame as the answer to a read of COUNT registers with
 * function code FC sent to UNIT: length and CRC (MB_EMALFORMED, MB_ECRC), the
 * unit id (MB_EUNIT; the sender is frame[0]), then the PDU exactly as
 * mb_pdu_parse_read_resp. */
int mb_rtu_parse_read_resp(const uint8_t *frame, size_t len, uint8_t unit,
                           uint8_t fc, uint16_t count, uint16_t *regs,
                           uint8_t *exc);

#endif
