/* transport_impl: what the transport backends share (internal).
 *
 * transport.c owns the public functions: it validates arguments, keeps the
 * silence between exchanges and dispatches through the vtable below. Each
 * backend (transport_modbus.c for rtu, transport_net.c for tcp and
 * rtu-over-tcp) fills the vtable and keeps its state behind `impl`.
 */
#ifndef IC_TRANSPORT_IMPL_H
#define IC_TRANSPORT_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

#include "transport/tr_net.h"
#include "proto/dtu_filter.h"

_Static_assert(TR_WHERE_MAX > TR_DEVICE_MAX, "a device path fits in where");

typedef struct transport_ops {
  /* Open the line or connect; on success set t->is_open. */
  int (*open)(transport *t, tr_error *e);
  /* One exchange: read COUNT registers with FC from UNIT. Called only when
   * open, with arguments already validated. On a broken connection the
   * backend closes itself (t->is_open = 0). */
  int (*read)(transport *t, uint8_t unit, uint8_t fc, uint16_t addr,
              uint16_t count, uint16_t *out, tr_error *e);
  /* Close; harmless when closed. */
  void (*close)(transport *t);
  /* Free the backend's state (after close). */
  void (*destroy)(transport *t);
} transport_ops;

struct transport {
  const transport_ops *ops;
  void *impl;
  transport_options opt; /* a copy: the caller's may go first */
  char where[TR_WHERE_MAX]; /* "host:port" or the device, for messages */
  int is_open;
  uint64_t gap_ns;    /* silence to keep before sending a request */
  uint64_t ready_ns;  /* CLOCK_MONOTONIC time the next request may go */
};

/* Backend constructors: set t->ops and t->impl. 0, or -1 with err. */
int tr_modbus_create(transport *t, char *err, size_t errlen);
int tr_net_create(transport *t, char *err, size_t errlen);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t tr_now_ns(void);

/* Wait with poll(2) (any descriptor number works) for EVENTS on FD until
 * DEADLINE (monotonic ns). 1 when ready (or in error: the next call on the
 * socket tells which), 0 on timeout, -1 with errno on failure. */
int tr_wait_fd(int fd, short events, uint64_t deadline);

/* Resolve the bus's host and connect to it (tr_net), every address the name
 * has sharing one deadline of the bus timeout. The socket comes back
 * non-blocking, close-on-exec, with TCP_NODELAY. 0 with *FD set, or a
 * tr_code with E filled ("connect HOST:PORT: ..."). */
int tr_tcp_connect(transport *t, int *fd, tr_error *e);

/* rtu-dtu: listen on the bus's address until a DTU dials in and sends the
 * bus's registration (within opt.register_timeout_ms of connecting), for at
 * most opt.wait_ms; a peer opt.allow refuses is closed unread, one with
 * another registration closed. The connection comes back in *FD (non-
 * blocking, close-on-exec, TCP_NODELAY), what followed the registration fed
 * to FLT. 0, or TR_ENOTCONN ("DTU REG did not connect within ...") or
 * TR_EIO with E filled. */
int tr_dtu_accept(transport *t, int *fd, dtu_filter *flt, tr_error *e);

#endif
