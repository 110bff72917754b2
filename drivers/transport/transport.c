/* transport: the public face of the bus transports and their dispatch.
 *
 * Arguments are checked here once, so the backends can trust them; the
 * silence a bus needs between exchanges (3.5 characters on a serial line, the
 * configured turnaround everywhere) is kept here too, so every backend honours
 * it the same way.
 */
#include "transport/transport.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proto/mb_proto.h"
#include "transport/tr_net.h"
#include "transport/transport_impl.h"

/* Bounds that keep arithmetic on them safe and catch unit mistakes (a
 * timeout given in seconds where milliseconds were meant reads as 1 ms). */
#define TR_TIMEOUT_MAX_MS 3600000
#define TR_TURNAROUND_MAX_MS 60000

const char *tr_code_name(int code) {
  switch (code) {
  case TR_OK: return "ok";
  case TR_ETIMEOUT: return "timeout";
  case TR_ECRC: return "crc";
  case TR_EEXCEPTION: return "exception";
  case TR_ECONNREFUSED: return "connection_refused";
  case TR_ECONNRESET: return "connection_reset";
  case TR_EMALFORMED: return "malformed";
  case TR_EIO: return "io";
  case TR_EDECODE: return "decode";
  case TR_ENOTCONN: return "not_connected";
  default: return "unknown";
  }
}

const char *tr_exception_name(int exc) {
  switch (exc) {
  case 0x01: return "illegal function";
  case 0x02: return "illegal data address";
  case 0x03: return "illegal data value";
  case 0x04: return "server device failure";
  case 0x05: return "acknowledge";
  case 0x06: return "server device busy";
  case 0x07: return "negative acknowledge";
  case 0x08: return "memory parity error";
  case 0x0A: return "gateway path unavailable";
  case 0x0B: return "gateway target device failed to respond";
  default: return "unknown exception";
  }
}

int tr_fail(tr_error *e, int code, const char *fmt, ...) {
  if (!e) return code;
  e->code = code;
  e->exception = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->detail, sizeof e->detail, fmt, ap);
  va_end(ap);
  return code;
}

int tr_fail_exception(tr_error *e, int exc) {
  tr_fail(e, TR_EEXCEPTION, "exception 0x%02X (%s)", (unsigned)(exc & 0xFF),
          tr_exception_name(exc));
  if (e) e->exception = exc;
  return TR_EEXCEPTION;
}

const char *tr_strerror(int err, char *buf, size_t len) {
  /* _GNU_SOURCE is on for the whole build: this is the GNU strerror_r,
   * which may return a static string instead of filling BUF. */
  const char *s = strerror_r(err, buf, len);
  return s ? s : "unknown error";
}

uint64_t tr_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int tr_wait_fd(int fd, short events, uint64_t deadline) {
  for (;;) {
    uint64_t now = tr_now_ns();
    if (now >= deadline) return 0;
    uint64_t ms = (deadline - now + 999999u) / 1000000u;
    struct pollfd p = {.fd = fd, .events = events};
    int rc = poll(&p, 1, ms > INT_MAX ? INT_MAX : (int)ms);
    if (rc > 0) return 1;
    if (rc < 0 && errno != EINTR) return -1;
    /* rc == 0 with time left happens when poll rounds down: go again. */
  }
}

/* Connect to one address without blocking past DEADLINE. The descriptor,
 * or -1 with the reason in *err. */
static int connect_one(const struct addrinfo *ai, uint64_t deadline, int *err) {
  int fd = tr_net_socket(ai);
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  int rc = tr_net_connect(fd, ai);
  if (rc == 0) return fd;
  if (rc < 0) {
    *err = errno;
    close(fd);
    return -1;
  }
  int w = tr_wait_fd(fd, POLLOUT, deadline);
  if (w <= 0) {
    *err = w == 0 ? ETIMEDOUT : errno;
    close(fd);
    return -1;
  }
  int soerr = tr_net_connect_result(fd);
  if (soerr != 0) {
    *err = soerr;
    close(fd);
    return -1;
  }
  return fd;
}

int tr_tcp_connect(transport *t, int *out, tr_error *e) {
  *out = -1;
  struct addrinfo *list = NULL;
  int grc = tr_net_resolve(t->opt.host, t->opt.port, false, &list);
  if (grc != 0) return tr_net_resolve_failed(e, t->opt.host, grc, errno);

  /* One deadline for all the addresses a name has: connecting costs at
   * most the bus timeout, like a read. */
  uint64_t deadline = tr_now_ns() + (uint64_t)t->opt.timeout_ms * 1000000u;
  int fd = -1, last = 0;
  for (struct addrinfo *ai = list; ai && fd < 0; ai = ai->ai_next) {
    fd = connect_one(ai, deadline, &last);
    /* No time left for the others. */
    if (fd < 0 && last == ETIMEDOUT) break;
  }
  freeaddrinfo(list);

  if (fd < 0) return tr_net_connect_failed(e, last, t->where, t->opt.timeout_ms);
  tr_net_connected(fd);
  *out = fd;
  return TR_OK;
}

static void sleep_until_ns(uint64_t when) {
  struct timespec ts = {.tv_sec = (time_t)(when / 1000000000u),
                        .tv_nsec = (long)(when % 1000000000u)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

/* Is S a non-empty string that ends within its CAP bytes? Options filled
 * by hand need not be terminated. */
static bool str_set(const char *s, size_t cap) {
  size_t n = strnlen(s, cap);
  return n > 0 && n < cap;
}

static int check_options(const transport_options *b, char *err,
                         size_t errlen) {
  const char *id = str_set(b->id, sizeof b->id) ? b->id : "?";
  if (b->timeout_ms < 1 || b->timeout_ms > TR_TIMEOUT_MAX_MS) {
    snprintf(err, errlen, "bus %s: timeout %lld ms outside 1..%d ms", id,
             (long long)b->timeout_ms, TR_TIMEOUT_MAX_MS);
    return -1;
  }
  if (b->turnaround_ms < 0 || b->turnaround_ms > TR_TURNAROUND_MAX_MS) {
    snprintf(err, errlen, "bus %s: turnaround %lld ms outside 0..%d ms", id,
             (long long)b->turnaround_ms, TR_TURNAROUND_MAX_MS);
    return -1;
  }
  switch (b->kind) {
  case TR_KIND_RTU:
    if (!str_set(b->device, sizeof b->device)) {
      snprintf(err, errlen, "bus %s: no serial device", id);
      return -1;
    }
    if (b->baud <= 0) {
      snprintf(err, errlen, "bus %s: baud rate %d is not positive", id,
               b->baud);
      return -1;
    }
    if (b->parity != 'N' && b->parity != 'E' && b->parity != 'O') {
      snprintf(err, errlen, "bus %s: parity must be N, E or O", id);
      return -1;
    }
    if (b->data_bits < 5 || b->data_bits > 8) {
      snprintf(err, errlen, "bus %s: data bits %d outside 5..8", id,
               b->data_bits);
      return -1;
    }
    if (b->stop_bits != 1 && b->stop_bits != 2) {
      snprintf(err, errlen, "bus %s: stop bits must be 1 or 2", id);
      return -1;
    }
    return 0;
  case TR_KIND_RTU_DTU:
    if (b->reglen < 1 || b->reglen > sizeof b->registration ||
        b->hblen > sizeof b->heartbeat) {
      snprintf(err, errlen, "bus %s: registration of %zu bytes or heartbeat of %zu "
               "outside 1..40 and 0..40", id, b->reglen, b->hblen);
      return -1;
    }
    /* The address to listen on, as for the others: */
    __attribute__((fallthrough));
  case TR_KIND_TCP:
  case TR_KIND_RTU_OVER_TCP:
    if (!str_set(b->host, sizeof b->host)) {
      snprintf(err, errlen, "bus %s: no host", id);
      return -1;
    }
    if (b->port < 1 || b->port > 65535) {
      snprintf(err, errlen, "bus %s: port %d outside 1..65535", id, b->port);
      return -1;
    }
    return 0;
  }
  snprintf(err, errlen, "bus %s: unknown transport %d", id, (int)b->kind);
  return -1;
}

transport *transport_new(const transport_options *opt, char *err,
                         size_t errlen) {
  char dummy[1];
  if (!err || errlen == 0) {
    err = dummy;
    errlen = sizeof dummy;
  }
  err[0] = '\0';
  if (!opt) {
    snprintf(err, errlen, "no bus");
    return NULL;
  }
  if (check_options(opt, err, errlen) != 0) return NULL;

  transport *t = calloc(1, sizeof *t);
  if (!t) {
    snprintf(err, errlen, "bus %s: out of memory", opt->id);
    return NULL;
  }
  t->opt = *opt;
  /* The copy is ours now: make sure every string in it ends. */
  t->opt.id[sizeof t->opt.id - 1] = '\0';
  t->opt.device[sizeof t->opt.device - 1] = '\0';
  t->opt.host[sizeof t->opt.host - 1] = '\0';

  uint64_t gap_ns = (uint64_t)t->opt.turnaround_ms * 1000000u;
  int rc;
  if (t->opt.kind == TR_KIND_RTU) {
    snprintf(t->where, sizeof t->where, "%s", t->opt.device);
    int bits = mb_rtu_char_bits(t->opt.data_bits, t->opt.parity != 'N',
                                t->opt.stop_bits);
    gap_ns += mb_rtu_silence_us(t->opt.baud, bits) * 1000u;
    rc = tr_modbus_create(t, err, errlen);
  } else {
    tr_net_where(t->where, sizeof t->where, t->opt.host, t->opt.port);
    /* A DTU's serial side keeps the line's silence too. */
    if (t->opt.kind == TR_KIND_RTU_DTU && t->opt.baud > 0) {
      int bits = mb_rtu_char_bits(t->opt.data_bits ? t->opt.data_bits : 8,
                                  t->opt.parity != 'N' && t->opt.parity,
                                  t->opt.stop_bits ? t->opt.stop_bits : 1);
      gap_ns += mb_rtu_silence_us(t->opt.baud, bits) * 1000u;
    }
    rc = tr_net_create(t, err, errlen);
  }
  if (rc != 0) {
    free(t);
    return NULL;
  }
  t->gap_ns = gap_ns;
  return t;
}

int transport_open(transport *t, tr_error *e) {
  tr_error local;
  if (!e) e = &local;
  memset(e, 0, sizeof *e);
  if (!t) return tr_fail(e, TR_EIO, "no transport");
  if (t->is_open) return TR_OK;
  int rc = t->ops->open(t, e);
  if (rc == TR_OK) memset(e, 0, sizeof *e);
  return rc;
}

int transport_read(transport *t, int unit, mb_table table, uint16_t address,
                   uint16_t count, uint16_t *out, tr_error *e) {
  tr_error local;
  if (!e) e = &local;
  memset(e, 0, sizeof *e);
  if (!t || !out) return tr_fail(e, TR_EIO, "no transport or no buffer");

  /* Unit 255 is what Modbus TCP devices without a serial side expect; on a
   * serial line (or one carried over TCP) 248..255 are reserved. */
  bool tcp = t->opt.kind == TR_KIND_TCP;
  if (unit < 1 || (unit > 247 && !(tcp && unit == 255)))
    return tr_fail(e, TR_EIO, "unit %d outside 1..247", unit);
  uint8_t fc;
  if (table == MB_TABLE_HOLDING)
    fc = MB_FC_READ_HOLDING;
  else if (table == MB_TABLE_INPUT)
    fc = MB_FC_READ_INPUT;
  else
    return tr_fail(e, TR_EIO, "unknown register table %d", (int)table);
  if (count < 1 || count > MB_READ_MAX)
    return tr_fail(e, TR_EIO, "register count %u outside 1..%d",
                   (unsigned)count, MB_READ_MAX);
  if ((uint32_t)address + count > 0x10000u)
    return tr_fail(e, TR_EIO, "registers %u..%u run past 65535",
                   (unsigned)address, (unsigned)address + count - 1);

  if (!t->is_open) {
    int rc = t->ops->open(t, e);
    if (rc != TR_OK) return rc;
  }
  /* The previous exchange's silence is not part of this one's timeout. */
  if (t->ready_ns > tr_now_ns()) sleep_until_ns(t->ready_ns);
  int rc = t->ops->read(t, (uint8_t)unit, fc, address, count, out, e);
  t->ready_ns = tr_now_ns() + t->gap_ns;
  if (rc == TR_OK) memset(e, 0, sizeof *e);
  return rc;
}

int transport_is_open(const transport *t) { return t && t->is_open; }

void transport_close(transport *t) {
  if (!t) return;
  t->ops->close(t);
  t->is_open = 0;
}

void transport_free(transport *t) {
  if (!t) return;
  transport_close(t);
  t->ops->destroy(t);
  free(t);
}
