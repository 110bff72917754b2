/* szy206: the water-resources monitoring frame (SZY206-2016, SL/T 427-2021).
 *
 * Pure functions, no I/O: bytes in, values out. The frame is
 *
 *     68 L 68 | C | [DIVS] | A (5) | AFN | data | [Tp] | CS | 16
 *
 * L counts the user data (C to the end of Tp), so a frame is L + 5 bytes and
 * at most 260; CS is CRC-8 (polynomial 0xE5, initial 0, most significant bit
 * first, no final XOR) over the user data. docs/uplink.md has the fields.
 *
 * The frame does not say whether it carries a time label or how long it is:
 * a C0H report's data length does (10 bytes a meter, 4 of alarm and status,
 * then 5 or 7 bytes of Tp), so the report functions take or infer it.
 */
#ifndef IC_SZY206_H
#define IC_SZY206_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SZY_START 0x68
#define SZY_END 0x16
#define SZY_FRAME_MIN 12  /* 68 L 68 C A(5) AFN CS 16 */
#define SZY_FRAME_MAX 260 /* L is one byte */
#define SZY_USER_MIN 7    /* C, A, AFN */
#define SZY_ADDR_LEN 5

/* Control byte C. */
#define SZY_C_DIR 0x80 /* 1: terminal to centre */
#define SZY_C_DIV 0x40 /* a DIVS byte follows C */
#define SZY_C_FCB_SHIFT 4
#define SZY_C_TYPE_MASK 0x0F
#define SZY_C_TYPE_LINK 0x0  /* confirm (uplink) or command (downlink) */
#define SZY_C_TYPE_FLOW 0x3  /* water flow and volume */
#define SZY_C_REPORT 0xB3    /* uplink, FCB 3, flow data */
#define SZY_C_LINK 0xB0      /* uplink, FCB 3, link frames (login, heartbeat) */

/* Function codes (AFN). */
#define SZY_AFN_LINK 0x02   /* link check: data F0 login, F1 logout, F2 heartbeat */
#define SZY_AFN_REPORT 0xC0 /* self-report of real-time data */
#define SZY_AFN_QUERY 0xB0  /* the centre's query of real-time data */
#define SZY_LINK_LOGIN 0xF0
#define SZY_LINK_LOGOUT 0xF1
#define SZY_LINK_HEARTBEAT 0xF2

/* Alarm word bits (little-endian on the wire). */
#define SZY_ALARM_METER_FAULT (1u << 5) /* D5: flow meter fault */

/* Values. */
#define SZY_VALUE_LEN 5
#define SZY_FLOW_MAX 999999999LL     /* thousandths of m3/s: 999 999.999 */
#define SZY_VOLUME_MAX 799999999ULL  /* whole m3 */
/* Meters a C0H report holds: L <= 255 with the 7-byte time label. */
#define SZY_REPORT_METERS_MAX 23

/* Return codes: 0 success, negative failure. */
enum {
  SZY_OK = 0,
  SZY_ENEEDMORE = -1, /* the frame is not complete yet */
  SZY_EMALFORMED = -2, /* start, length or end byte is wrong */
  SZY_ECRC = -3,       /* CS does not match the user data */
  SZY_ESPACE = -4,     /* the output buffer is too small */
  SZY_ERANGE = -5,     /* a value outside what the field holds */
  SZY_EBCD = -6,       /* a nibble that is not a decimal digit */
  SZY_ENONE = -7,      /* AA AA AA AA AA: the terminal has no value */
};

const char *szy_strerror(int rc);

/* CRC-8, polynomial 0xE5, initial 0, MSB first, no final XOR. */
uint8_t szy_crc8(const uint8_t *buf, size_t len);

/* --- Frames ----------------------------------------------------------------- */

typedef struct {
  uint8_t c;                  /* control byte */
  int divs;                   /* the DIVS byte, or -1 when C has no DIV bit */
  uint8_t addr[SZY_ADDR_LEN]; /* A1 (3 bytes) and A2 (2 bytes), as sent */
  uint8_t afn;
  const uint8_t *data; /* after AFN up to CS: data, PW and Tp; points into the frame */
  size_t data_len;
} szy_frame;

/* The length of the frame that starts BUF, from its header: SZY_ENEEDMORE
 * while fewer than 3 bytes have come, SZY_EMALFORMED when the bytes cannot
 * start a frame (the caller drops up to the next 0x68). */
int szy_frame_len(const uint8_t *buf, size_t have);

/* Parse one whole frame of exactly LEN bytes: SZY_OK, SZY_EMALFORMED or
 * SZY_ECRC. F's data points into BUF. */
int szy_parse(const uint8_t *buf, size_t len, szy_frame *f);

/* Build a frame (no DIVS) around DATA (data, PW and Tp as they go on the
 * wire). Returns the frame's length or a negative code. */
int szy_build(uint8_t *out, size_t cap, uint8_t c, const uint8_t addr[SZY_ADDR_LEN],
              uint8_t afn, const uint8_t *data, size_t data_len);

/* The address from a six-digit division code (A1, BCD) and a station number
 * (A2, 1..60000, little-endian). SZY_ERANGE or SZY_EBCD when out of range. */
int szy_addr_make(uint8_t out[SZY_ADDR_LEN], const char *admin6, unsigned station);

/* --- Values ----------------------------------------------------------------- */

/* Flow in thousandths of m3/s, |milli| <= SZY_FLOW_MAX: packed BCD, low byte
 * first; byte 5's high nibble is 0 for a positive flow and 8 (its top bit,
 * the sign) for a negative one. */
int szy_flow_encode(uint8_t out[SZY_VALUE_LEN], int64_t milli);
/* SZY_OK, SZY_ENONE for AA AA AA AA AA, SZY_EBCD (a nibble over 9, or a unit
 * other than m3/s in byte 5's bits 6..4). */
int szy_flow_decode(const uint8_t in[SZY_VALUE_LEN], int64_t *milli);

/* Cumulative volume in whole m3, 0..SZY_VOLUME_MAX, packed BCD low byte first. */
int szy_volume_encode(uint8_t out[SZY_VALUE_LEN], uint64_t m3);
/* SZY_OK, SZY_ENONE, SZY_EBCD, or SZY_ERANGE over SZY_VOLUME_MAX. */
int szy_volume_decode(const uint8_t in[SZY_VALUE_LEN], uint64_t *m3);

/* AA AA AA AA AA: no value. */
void szy_value_none(uint8_t out[SZY_VALUE_LEN]);

/* --- Time label ----------------------------------------------------------- */

typedef struct {
  uint8_t sec, min, hour, day; /* both editions */
  uint8_t month, year;         /* 7-byte label only; year 0..99 */
  uint8_t delay;               /* allowed delay in minutes, binary; 0 = not checked */
} szy_tp;

/* LEN is 5 (SZY206) or 7 (SL/T 427). Returns LEN or a negative code. */
int szy_tp_encode(uint8_t *out, size_t cap, int len, const szy_tp *tp);
int szy_tp_decode(const uint8_t *in, size_t have, int len, szy_tp *tp);

/* --- C0H / B0H report data -------------------------------------------------- */

typedef struct {
  size_t n; /* meters, 0..SZY_REPORT_METERS_MAX */
  uint8_t flow[SZY_REPORT_METERS_MAX][SZY_VALUE_LEN];   /* encoded, as on the wire */
  uint8_t volume[SZY_REPORT_METERS_MAX][SZY_VALUE_LEN];
  uint16_t alarm, status;
  int tp_len; /* 0 (none), 5 or 7 */
  szy_tp tp;
} szy_report;

/* The report's data (pairs, alarm, status, Tp). Returns its length. */
int szy_report_encode(uint8_t *out, size_t cap, const szy_report *r);

/* Split DATA into a report. TP_LEN 5 or 7, or -1 to take it from the length
 * (10 n + 4 + 5 or 7: the two never agree on the last digit). */
int szy_report_decode(const uint8_t *data, size_t len, int tp_len, szy_report *r);

/* --- Describing any frame --------------------------------------------------- */

/* One JSON object (one line, no newline) describing the frame in BUF: its
 * parts and, for the function codes above, their decoded fields; a frame that
 * does not parse gives {"error": ...} with what is wrong. Returns the text's
 * length (truncated to CAP - 1, always terminated) or SZY_ESPACE when CAP is 0. */
int szy_describe(const uint8_t *buf, size_t len, char *out, size_t cap);

#endif
