/* transport: one bus's way of carrying Modbus requests, blocking.
 *
 * One interface over three kinds: `rtu` (a serial line, libmodbus), `tcp`
 * (Modbus TCP) and `rtu-over-tcp` (RTU frames with CRC over a TCP socket, as
 * serial device servers and 4G DTUs carry them). The two network kinds frame
 * and judge their exchanges with mb_xchg and connect with tr_net, as the
 * daemon's event loop does for the same buses (poll/netbus.c): `intake-
 * collector read` and the daemon call the same answer the same thing. A
 * transport is owned by one thread (a serial bus worker, the `read`
 * command): none of this is thread-safe, by design, as a line carries one
 * frame at a time. Calls block for at most the bus timeout.
 */
#ifndef IC_TRANSPORT_H
#define IC_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "profile/profile.h"

/* Failure kinds, as reported to operators. */
typedef enum {
  TR_OK = 0,
  TR_ETIMEOUT = -1,     /* no (complete) answer within the bus timeout */
  TR_ECRC = -2,         /* RTU CRC mismatch */
  TR_EEXCEPTION = -3,   /* the meter answered with a Modbus exception */
  TR_ECONNREFUSED = -4, /* the endpoint refused the connection */
  TR_ECONNRESET = -5,   /* the connection broke (reset, closed, pipe) */
  TR_EMALFORMED = -6,   /* an answer that is not a valid reply to the request */
  TR_EIO = -7,          /* another system error (open, termios, resolve) */
  TR_EDECODE = -8,      /* answered, but values are unusable (NaN, bad unit) */
  TR_ENOTCONN = -9,     /* the bus's DTU has not dialled in (rtu-dtu) */
} tr_code;
/* How many failure kinds there are: codes -1 .. -TR_NKINDS. */
#define TR_NKINDS 9

typedef struct {
  int code;          /* tr_code */
  int exception;     /* TR_EEXCEPTION: the exception code */
  char detail[160];  /* human-readable detail */
} tr_error;

/* Short stable name of a failure kind: "timeout", "crc", "exception",
 * "connection_refused", "connection_reset", "malformed", "io", "decode",
 * "not_connected". */
const char *tr_code_name(int code);

/* Fill E with CODE and a formatted detail; returns CODE. E may be NULL. */
int tr_fail(tr_error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fill E for a Modbus exception (code and "exception 0x02 (illegal data
 * address)"); returns TR_EEXCEPTION. */
int tr_fail_exception(tr_error *e, int exc);

/* A short name of an exception code ("illegal data address"). */
const char *tr_exception_name(int exc);

/* strerror into BUF, thread-safe. */
const char *tr_strerror(int err, char *buf, size_t len);

typedef struct transport transport;

/* The kinds of line. */
typedef enum {
  TR_KIND_RTU = 0,
  TR_KIND_TCP,
  TR_KIND_RTU_OVER_TCP,
  TR_KIND_RTU_DTU, /* RTU over a DTU's connection that dials in: listen */
} tr_kind;

#define TR_ID_MAX 64
#define TR_DEVICE_MAX 256
#define TR_HOST_MAX 256

/* What a transport needs to know of its bus. Strings need not be terminated
 * within their room: transport_new refuses one that is not. */
typedef struct transport_options {
  char id[TR_ID_MAX]; /* the bus's name, for messages */
  tr_kind kind;
  /* rtu: the serial device; tcp, rtu-over-tcp: the host. */
  union {
    char device[TR_DEVICE_MAX];
    char host[TR_HOST_MAX];
  };
  /* rtu */
  int baud;      /* > 0 */
  char parity;   /* 'N', 'E' or 'O' */
  int data_bits; /* 5..8 */
  int stop_bits; /* 1 or 2 */
  /* tcp, rtu-over-tcp; rtu-dtu: the address to listen on */
  int port;      /* 1..65535 */
  /* rtu-dtu */
  uint8_t registration[40], heartbeat[40];
  size_t reglen, hblen;            /* reglen 1..40, hblen 0..40 */
  bool registration_every_packet;
  int64_t wait_ms;                 /* how long opening waits for the DTU */
  int64_t register_timeout_ms;     /* a connection's registration, within */
  /* Is a peer at SA (a struct sockaddr) let in? NULL: any. */
  bool (*allow)(const void *ctx, const void *sa);
  const void *allow_ctx;
  /* Whose registration a connection's first bytes BUF (LEN) are, among the
   * server's buses (the longest match wins): 1 this bus's, -1 another's or
   * none, 0 not known yet (a longer registration is still possible);
   * AT_DEADLINE: decide on what came. NULL: this bus's registration is
   * compared alone. REG_MAX: the server's longest registration (at least
   * reglen; 0 for reglen), the most read before deciding. */
  int (*judge)(const void *ctx, const uint8_t *buf, size_t len, bool at_deadline);
  const void *judge_ctx;
  size_t reg_max;
  /* all */
  int64_t timeout_ms;    /* response timeout, 1 ms..1 h */
  int64_t turnaround_ms; /* extra silence between frames, 0..60 s */
} transport_options;

/* Create (not connect) a transport for a bus described by OPT (copied: it
 * may go first). NULL with err on bad options. */
transport *transport_new(const transport_options *opt, char *err,
                         size_t errlen);

/* Open the line or connect. 0 or a tr_code with e filled. */
int transport_open(transport *t, tr_error *e);

/* Read COUNT (1..125) registers of TABLE at ADDRESS from UNIT into OUT.
 * Opens the transport first when needed. On a timeout the line is flushed so a
 * late answer is not taken for the next request; on a broken connection the
 * transport is closed and reopened by the next call. */
int transport_read(transport *t, int unit, mb_table table, uint16_t address,
                   uint16_t count, uint16_t *out, tr_error *e);

/* Is it open? */
int transport_is_open(const transport *t);

void transport_close(transport *t);

/* Close and free; NULL is a no-op. */
void transport_free(transport *t);

#endif
