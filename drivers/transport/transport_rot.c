/* transport_rot: the `rtu-over-tcp` transport.
 *
 * Serial device servers and 4G DTUs carry RTU frames, CRC and all, over a
 * plain TCP connection. libmodbus cannot speak that, so this backend stands on
 * the protocol core: it builds RTU frames with mb_proto, and reassembles the
 * answer with the streaming framer, since TCP splits and merges the bytes as
 * it likes (mb_xchg judges the answers). It waits with poll(2), not select(2), so any descriptor number
 * works, and measures its deadline on CLOCK_MONOTONIC so a wall-clock jump
 * cannot stretch or cut a timeout. Behind a DTU one serial line carries
 * several meters: a frame from another unit id, or for another function (a
 * late answer to an earlier request), is passed over and the wait for ours
 * goes on until the deadline.
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/mb_proto.h"
#include "proto/mb_xchg.h"
#include "transport/transport_impl.h"

/* At most this much unsolicited data is discarded before a request; a peer
 * that sends more without pause is answered by the request going out anyway
 * (its answer is then checked like any other). */
#define ROT_DRAIN_MAX 65536

typedef struct {
  int fd;
  mb_xchg x; /* the exchange in progress */
} rot;

static rot *impl_of(transport *t) { return (rot *)t->impl; }

static void rot_close(transport *t) {
  rot *r = impl_of(t);
  if (r->fd >= 0) close(r->fd);
  r->fd = -1;
  t->is_open = 0;
}

static void rot_destroy(transport *t) {
  free(t->impl);
  t->impl = NULL;
}

static bool is_reset(int err) {
  return err == ECONNRESET || err == EPIPE || err == ENOTCONN ||
         err == ECONNABORTED;
}

static int rot_open(transport *t, tr_error *e) {
  rot *r = impl_of(t);
  int fd;
  int rc = tr_tcp_connect(t, false, &fd, e);
  if (rc != TR_OK) return rc;
  r->fd = fd;
  t->is_open = 1;
  return TR_OK;
}

/* Discard whatever is readable now: the late answer to a request that timed
 * out, or a DTU's heartbeat, is not the answer to the request about to go.
 * 0 when the connection is still up, -1 when the peer closed it or it broke. */
static int drain(rot *r) {
  uint8_t tmp[512];
  size_t total = 0;
  while (total < ROT_DRAIN_MAX) {
    ssize_t n = recv(r->fd, tmp, sizeof tmp, MSG_DONTWAIT);
    if (n > 0) {
      total += (size_t)n;
      continue;
    }
    if (n == 0) return -1;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return -1;
  }
  return 0;
}

static int send_all(transport *t, const uint8_t *buf, size_t len,
                    uint64_t deadline, uint8_t unit, tr_error *e) {
  rot *r = impl_of(t);
  char eb[128];
  size_t off = 0;
  while (off < len) {
    ssize_t n = send(r->fd, buf + off, len - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += (size_t)n;
      continue;
    }
    int err = n < 0 ? errno : EIO;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      int w = tr_wait_fd(r->fd, POLLOUT, deadline);
      if (w > 0) continue;
      if (w == 0)
        return tr_fail(e, TR_ETIMEOUT,
                       "request to unit %u not sent within %lld ms",
                       (unsigned)unit, (long long)t->opt.timeout_ms);
      err = errno;
    }
    rot_close(t);
    if (is_reset(err))
      return tr_fail(e, TR_ECONNRESET, "connection to %s lost: %s", t->where,
                     tr_strerror(err, eb, sizeof eb));
    return tr_fail(e, TR_EIO, "send to %s: %s", t->where,
                   tr_strerror(err, eb, sizeof eb));
  }
  return TR_OK;
}

static int rot_read(transport *t, uint8_t unit, uint8_t fc, uint16_t addr,
                    uint16_t count, uint16_t *out, tr_error *e) {
  rot *r = impl_of(t);
  char eb[128];

  if (drain(r) != 0) {
    /* The peer closed the idle connection (DTUs do): no request was lost,
     * so connect again now rather than fail this read. */
    rot_close(t);
    int rc = rot_open(t, e);
    if (rc != TR_OK) return rc;
  }

  uint8_t frame[MB_TCP_MAX];
  int flen = mb_xchg_begin(&r->x, true, 0, unit, fc, addr, count, out, frame,
                           sizeof frame, e);
  if (flen < 0) return flen;

  uint64_t deadline = tr_now_ns() + (uint64_t)t->opt.timeout_ms * 1000000u;
  int rc = send_all(t, frame, (size_t)flen, deadline, unit, e);
  if (rc != TR_OK) return rc;

  for (;;) {
    int w = tr_wait_fd(r->fd, POLLIN, deadline);
    /* What is buffered belongs to this request; what comes later is drained
     * before the next one. */
    if (w == 0) return mb_xchg_timeout(&r->x, t->opt.timeout_ms, e);
    int err = 0;
    if (w > 0) {
      uint8_t tmp[512];
      ssize_t n = recv(r->fd, tmp, sizeof tmp, 0);
      if (n > 0) {
        rc = mb_xchg_feed(&r->x, tmp, (size_t)n, e);
        if (rc != MB_XCHG_MORE) return rc;
        continue;
      }
      if (n == 0) {
        rot_close(t);
        return tr_fail(e, TR_ECONNRESET, "connection closed by %s", t->where);
      }
      err = errno;
    } else {
      err = errno;
    }
    if (err == EINTR || err == EAGAIN || err == EWOULDBLOCK) continue;
    rot_close(t);
    if (is_reset(err))
      return tr_fail(e, TR_ECONNRESET, "connection to %s lost: %s", t->where,
                     tr_strerror(err, eb, sizeof eb));
    return tr_fail(e, TR_EIO, "receive from %s: %s", t->where,
                   tr_strerror(err, eb, sizeof eb));
  }
}

static const transport_ops rot_ops = {
    .open = rot_open,
    .read = rot_read,
    .close = rot_close,
    .destroy = rot_destroy,
};

int tr_rot_create(transport *t, char *err, size_t errlen) {
  rot *r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(err, errlen, "bus %s: out of memory", t->opt.id);
    return -1;
  }
  r->fd = -1;
  t->ops = &rot_ops;
  t->impl = r;
  return 0;
}
