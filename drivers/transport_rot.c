/* transport_rot: the `rtu-over-tcp` transport.
 *
 * Serial device servers and 4G DTUs carry RTU frames, CRC and all, over a
 * plain TCP connection. libmodbus cannot speak that, so this backend stands on
 * the protocol core: it builds RTU frames with mb_proto, and reassembles the
 * answer with the streaming framer, since TCP splits and merges the bytes as
 * it likes. It waits with poll(2), not select(2), so any descriptor number
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

#include "mb_proto.h"
#include "transport_impl.h"

/* At most this much unsolicited data is discarded before a request; a peer
 * that sends more without pause is answered by the request going out anyway
 * (its answer is then checked like any other). */
#define ROT_DRAIN_MAX 65536

typedef struct {
  int fd;
  mb_rtu_framer fr;
} rot;

static rot *impl_of(transport *t) { return (rot *)t->impl; }

static void rot_close(transport *t) {
  rot *r = impl_of(t);
  if (r->fd >= 0) close(r->fd);
  r->fd = -1;
  mb_rtu_framer_reset(&r->fr);
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
  mb_rtu_framer_reset(&r->fr);
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
                       (unsigned)unit, (long long)t->bus.timeout_ms);
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

/* Frames passed over while waiting for the answer, for the timeout's
 * detail. */
typedef struct {
  unsigned n;
  uint8_t unit, fc;
} foreign;

/* Is FRAME (whole, CRC checked) plainly not an answer to a request with FC
 * to UNIT: from another unit id, or with another function code (an
 * exception to our function is an answer)? */
static bool is_foreign(const uint8_t *frame, uint8_t unit, uint8_t fc) {
  return frame[0] != unit ||
         (frame[1] != fc && frame[1] != (uint8_t)(fc | 0x80));
}

/* Judge one whole frame (its CRC already checked by the framer). */
static int classify(const uint8_t *frame, size_t len, uint8_t unit, uint8_t fc,
                    uint16_t count, uint16_t *out, tr_error *e) {
  uint8_t exc = 0;
  int rc = mb_rtu_parse_read_resp(frame, len, unit, fc, count, out, &exc);
  switch (rc) {
  case MB_OK:
    return TR_OK;
  case MB_EEXCEPTION:
    return tr_fail_exception(e, exc);
  case MB_EUNIT:
    return tr_fail(e, TR_EMALFORMED, "answer from unit %u, expected %u",
                   (unsigned)frame[0], (unsigned)unit);
  case MB_ECRC:
    return tr_fail(e, TR_ECRC, "bad CRC in the answer from unit %u",
                   (unsigned)unit);
  case MB_EMISMATCH:
    return tr_fail(e, TR_EMALFORMED,
                   "answer from unit %u does not match the request "
                   "(function 0x%02X, %zu bytes for %u registers)",
                   (unsigned)unit, (unsigned)frame[1], len, (unsigned)count);
  default:
    return tr_fail(e, TR_EMALFORMED, "malformed answer from unit %u (%s)",
                   (unsigned)unit, mb_proto_strerror(rc));
  }
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
  mb_rtu_framer_reset(&r->fr);

  uint8_t pdu[8], frame[MB_RTU_MAX];
  int plen = mb_pdu_read_req(pdu, sizeof pdu, fc, addr, count);
  if (plen < 0)
    return tr_fail(e, TR_EIO, "cannot build the request: %s",
                   mb_proto_strerror(plen));
  int flen = mb_rtu_frame(frame, sizeof frame, unit, pdu, (size_t)plen);
  if (flen < 0)
    return tr_fail(e, TR_EIO, "cannot build the request: %s",
                   mb_proto_strerror(flen));

  uint64_t deadline = tr_now_ns() + (uint64_t)t->bus.timeout_ms * 1000000u;
  int rc = send_all(t, frame, (size_t)flen, deadline, unit, e);
  if (rc != TR_OK) return rc;

  foreign fx = {0};
  for (;;) {
    /* Judge every whole frame buffered before waiting for more: a late
     * answer of another meter and ours may arrive in one segment. */
    uint8_t got[MB_RTU_MAX];
    int glen;
    while ((glen = mb_rtu_framer_next(&r->fr, got, sizeof got)) !=
           MB_ENEEDMORE) {
      if (glen > 0 && is_foreign(got, unit, fc)) {
        /* Another meter's late answer (or one to an earlier request of
         * another kind) on the shared line: not ours, and not a fault of
         * the unit asked. Keep waiting for ours. */
        if (fx.n++ == 0) {
          fx.unit = got[0];
          fx.fc = got[1];
        }
        continue;
      }
      if (glen > 0) {
        rc = classify(got, (size_t)glen, unit, fc, count, out, e);
      } else if (glen == MB_ECRC) {
        rc = tr_fail(e, TR_ECRC, "bad CRC in the answer from unit %u",
                     (unsigned)unit);
      } else {
        rc = tr_fail(e, TR_EMALFORMED,
                     "unframeable answer from unit %u (%s)", (unsigned)unit,
                     mb_proto_strerror(glen));
      }
      /* One answer per request: whatever follows it is not ours. */
      mb_rtu_framer_reset(&r->fr);
      return rc;
    }

    int w = tr_wait_fd(r->fd, POLLIN, deadline);
    if (w == 0) {
      size_t partial = r->fr.len;
      /* What is buffered belongs to this request; what comes later is
       * drained before the next one. */
      mb_rtu_framer_reset(&r->fr);
      char why[96] = "";
      if (fx.n)
        snprintf(why, sizeof why,
                 "; discarded %u frame%s not for it (first: unit %u, "
                 "function 0x%02X)",
                 fx.n, fx.n == 1 ? "" : "s", (unsigned)fx.unit,
                 (unsigned)fx.fc);
      if (partial)
        return tr_fail(e, TR_ETIMEOUT,
                       "incomplete answer from unit %u within %lld ms "
                       "(%zu bytes)%s",
                       (unsigned)unit, (long long)t->bus.timeout_ms, partial,
                       why);
      return tr_fail(e, TR_ETIMEOUT, "no answer from unit %u within %lld ms%s",
                     (unsigned)unit, (long long)t->bus.timeout_ms, why);
    }
    int err = 0;
    if (w > 0) {
      /* Never take more than the framer has room for, so nothing read is
       * lost. The loop above left less than one whole frame in it (a frame
       * is at most half its size), so there is always room. */
      size_t room = sizeof r->fr.buf - r->fr.len;
      uint8_t tmp[sizeof r->fr.buf];
      ssize_t n = recv(r->fd, tmp, room, 0);
      if (n > 0) {
        mb_rtu_framer_feed(&r->fr, tmp, (size_t)n);
      } else if (n == 0) {
        rot_close(t);
        return tr_fail(e, TR_ECONNRESET, "connection closed by %s", t->where);
      } else {
        err = errno;
      }
    } else {
      err = errno;
    }
    if (err) {
      if (err == EINTR || err == EAGAIN || err == EWOULDBLOCK) continue;
      rot_close(t);
      if (is_reset(err))
        return tr_fail(e, TR_ECONNRESET, "connection to %s lost: %s",
                       t->where, tr_strerror(err, eb, sizeof eb));
      return tr_fail(e, TR_EIO, "receive from %s: %s", t->where,
                     tr_strerror(err, eb, sizeof eb));
    }
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
    snprintf(err, errlen, "bus %s: out of memory", t->bus.id);
    return -1;
  }
  r->fd = -1;
  /* The framer reads answers: response layouts. */
  mb_rtu_framer_init(&r->fr, false);
  t->ops = &rot_ops;
  t->impl = r;
  return 0;
}
