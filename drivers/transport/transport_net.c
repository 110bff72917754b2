/* transport_net: the `tcp`, `rtu-over-tcp` and `rtu-dtu` transports,
 * blocking.
 *
 * Modbus TCP (MBAP frames) and RTU frames with CRC carried over a plain TCP
 * connection, as serial device servers and 4G DTUs carry them. The requests
 * are built and the answers judged by mb_xchg, and the connection is opened
 * and its failures named by tr_net: the very code the daemon's event loop
 * runs for the same buses (collector/poll/netbus.c), so a meter that passes
 * `intake-collector read` is judged the same way once the daemon polls it.
 * Only the waiting differs: here poll(2) on one socket, until the bus
 * timeout, measured on CLOCK_MONOTONIC so a wall-clock jump cannot stretch or
 * cut it; any descriptor number works.
 *
 * As in the daemon: a frame plainly not for this request (another
 * transaction id on Modbus TCP, another unit or function on an RTU line
 * behind a DTU) is passed over and the wait goes on until the deadline;
 * bytes that can no longer be framed close the connection; past
 * TR_NET_JUNK_MAX bytes that frame no answer the connection is closed and
 * the exchange counted malformed; a connection the peer closed while idle is
 * opened again before the request, and one that breaks fails the exchange
 * and is opened again by the next.
 *
 * `rtu-dtu` does not connect: opening listens for the DTU to dial in and
 * register (tr_dtu_accept, transport_dtu.c), and its bytes go through a
 * dtu_filter before the exchange judges them.
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/dtu_filter.h"
#include "proto/mb_proto.h"
#include "proto/mb_xchg.h"
#include "transport/tr_net.h"
#include "transport/transport_impl.h"

typedef struct {
  int fd;
  uint16_t tid;  /* MBAP transaction id of the last request */
  size_t junk;   /* bytes since the last good answer (TR_NET_JUNK_MAX) */
  mb_xchg x;     /* the exchange in progress */
  dtu_filter *flt; /* rtu-dtu: the DTU's packets taken out */
} netx;

static netx *impl_of(transport *t) { return (netx *)t->impl; }

static bool is_rtu(const transport *t) {
  return t->opt.kind != TR_KIND_TCP;
}

static void net_close(transport *t) {
  netx *n = impl_of(t);
  if (n->fd >= 0) close(n->fd);
  n->fd = -1;
  t->is_open = 0;
}

static void net_destroy(transport *t) {
  free(impl_of(t)->flt);
  free(t->impl);
  t->impl = NULL;
}

static int net_open(transport *t, tr_error *e) {
  netx *n = impl_of(t);
  int fd;
  int rc = n->flt ? tr_dtu_accept(t, &fd, n->flt, e) : tr_tcp_connect(t, &fd, e);
  if (rc != TR_OK) return rc;
  n->fd = fd;
  n->junk = 0;
  t->is_open = 1;
  return TR_OK;
}

/* The connection broke with ERR (0: closed by the peer): close it and name
 * the failure. */
static int net_lost(transport *t, int err, tr_error *e) {
  net_close(t);
  return tr_net_lost(e, err, t->where);
}

static int send_all(transport *t, const uint8_t *buf, size_t len,
                    uint64_t deadline, tr_error *e) {
  netx *n = impl_of(t);
  size_t off = 0;
  while (off < len) {
    ssize_t w = send(n->fd, buf + off, len - off, MSG_NOSIGNAL);
    if (w > 0) {
      off += (size_t)w;
      continue;
    }
    int err = w < 0 ? errno : EPIPE;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      int r = tr_wait_fd(n->fd, POLLOUT, deadline);
      if (r > 0) continue;
      /* The bus timeout covers the request's going out too. */
      if (r == 0) return mb_xchg_timeout(&n->x, t->opt.timeout_ms, e);
      err = errno;
    }
    return net_lost(t, err, e);
  }
  return TR_OK;
}

/* A DTU's bytes: its packets taken out, what is left judged. Only what the
 * filter hands on counts towards TR_NET_JUNK_MAX. */
static int dtu_feed(transport *t, const uint8_t *data, size_t len, tr_error *e) {
  netx *n = impl_of(t);
  size_t off = 0;
  while (off < len) {
    off += dtu_filter_feed(n->flt, data + off, len - off);
    uint8_t frame[MB_RTU_MAX];
    size_t k;
    while ((k = dtu_filter_next(n->flt, frame, sizeof frame)) > 0) {
      n->junk += k;
      if (n->junk > TR_NET_JUNK_MAX) {
        size_t junk = n->junk;
        net_close(t);
        return tr_net_junk(e, t->where, junk);
      }
      int rc = mb_xchg_feed(&n->x, frame, k, e);
      if (rc == TR_OK) n->junk = 0;
      if (rc != MB_XCHG_MORE) return rc;
    }
  }
  return MB_XCHG_MORE;
}

static int net_read(transport *t, uint8_t unit, uint8_t fc, uint16_t addr,
                    uint16_t count, uint16_t *out, tr_error *e) {
  netx *n = impl_of(t);

  /* Whatever came unasked (a late answer, a DTU's heartbeat) is not the
   * answer to the request about to go. */
  if (tr_net_drain(n->fd) != 0) {
    /* The peer closed the idle connection (DTUs do): no request was lost,
     * so connect again now rather than fail this read. */
    net_close(t);
    int rc = net_open(t, e);
    if (rc != TR_OK) return rc;
  }

  if (n->flt) dtu_filter_reset(n->flt);
  if (n->flt) dtu_filter_expect(n->flt, unit, fc, 5 + 2u * count);
  uint8_t frame[MB_XCHG_REQ_MAX];
  int flen = mb_xchg_begin(&n->x, is_rtu(t), ++n->tid, unit, fc, addr, count,
                           out, frame, sizeof frame, e);
  if (flen < 0) return flen;

  uint64_t deadline = tr_now_ns() + (uint64_t)t->opt.timeout_ms * 1000000u;
  int rc = send_all(t, frame, (size_t)flen, deadline, e);
  if (rc != TR_OK) return rc;

  for (;;) {
    int w = tr_wait_fd(n->fd, POLLIN, deadline);
    /* What is buffered belongs to this request; what comes later is drained
     * before the next one. */
    if (w == 0) return mb_xchg_timeout(&n->x, t->opt.timeout_ms, e);
    if (w < 0) {
      if (errno == EINTR) continue;
      return net_lost(t, errno, e);
    }
    uint8_t tmp[1024];
    ssize_t got = recv(n->fd, tmp, sizeof tmp, MSG_DONTWAIT);
    if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
      continue;
    if (got <= 0) return net_lost(t, got == 0 ? 0 : errno, e);
    if (n->flt) {
      rc = dtu_feed(t, tmp, (size_t)got, e);
      if (rc == MB_XCHG_MORE) continue;
      return rc;
    }
    n->junk += (size_t)got;
    if (n->junk > TR_NET_JUNK_MAX) {
      size_t junk = n->junk;
      net_close(t);
      return tr_net_junk(e, t->where, junk);
    }
    rc = mb_xchg_feed(&n->x, tmp, (size_t)got, e);
    if (rc == MB_XCHG_MORE) continue;
    if (rc == TR_OK) n->junk = 0;
    /* Nothing later on a connection whose bytes cannot be framed can be
     * trusted. */
    if (n->x.desync) net_close(t);
    return rc;
  }
}

static const transport_ops net_ops = {
    .open = net_open,
    .read = net_read,
    .close = net_close,
    .destroy = net_destroy,
};

int tr_net_create(transport *t, char *err, size_t errlen) {
  netx *n = calloc(1, sizeof *n);
  if (!n) {
    snprintf(err, errlen, "bus %s: out of memory", t->opt.id);
    return -1;
  }
  n->fd = -1;
  if (t->opt.kind == TR_KIND_RTU_DTU) {
    n->flt = malloc(sizeof *n->flt);
    if (!n->flt || dtu_filter_init(n->flt, t->opt.registration, t->opt.reglen,
                                   t->opt.registration_every_packet, t->opt.heartbeat,
                                   t->opt.hblen) != 0) {
      snprintf(err, errlen, "bus %s: out of memory", t->opt.id);
      free(n->flt);
      free(n);
      return -1;
    }
  }
  t->ops = &net_ops;
  t->impl = n;
  return 0;
}
