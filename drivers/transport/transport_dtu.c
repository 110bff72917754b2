/* transport_dtu: waiting for an rtu-dtu bus's DTU to dial in, blocking.
 *
 * What `intake-collector read` does for a bus whose DTU dials in: listen on
 * the bus's DTU server address, take connections until one sends the bus's
 * registration, and poll over it. The daemon's DTU server
 * (collector/poll/dtuserver.c) does the same on its event loop for every
 * bus at once; here one bus is waited for, with poll(2), so a few pending
 * connections at a time are enough: others wait in the backlog.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/transport_impl.h"

/* Connections waiting for their registration at once, at most. */
#define PENDING_MAX 16

typedef struct {
  int fd;
  uint64_t deadline;
  size_t len;
  uint8_t buf[DTU_PKT_MAX];
} waiting;

static int listen_fd(transport *t, tr_error *e) {
  struct addrinfo *ai = NULL;
  int grc = tr_net_resolve(t->opt.host, t->opt.port, true, &ai);
  if (grc != 0) return tr_net_resolve_failed(e, t->opt.host, grc, errno);
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1, zero = 0, err = 0;
  if (fd < 0) {
    err = errno;
  } else {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) err = errno;
  }
  freeaddrinfo(ai);
  if (err) {
    if (fd >= 0) close(fd);
    char buf[128];
    return tr_fail(e, TR_EIO, "listen on %s: %s", t->where, tr_strerror(err, buf, sizeof buf));
  }
  return fd;
}

/* The most bytes read before deciding whose registration they are. */
static size_t reg_max(const transport *t) {
  size_t m = t->opt.reg_max > t->opt.reglen ? t->opt.reg_max : t->opt.reglen;
  return m < DTU_PKT_MAX ? m : DTU_PKT_MAX;
}

/* W's bytes: 1 the registration, 0 not yet, -1 another. */
static int judge(const transport *t, const waiting *w, bool at_deadline) {
  if (w->len >= reg_max(t)) at_deadline = true;
  if (t->opt.judge) return t->opt.judge(t->opt.judge_ctx, w->buf, w->len, at_deadline);
  size_t n = w->len < t->opt.reglen ? w->len : t->opt.reglen;
  if (memcmp(w->buf, t->opt.registration, n) != 0) return -1;
  if (w->len >= t->opt.reglen) return 1;
  return at_deadline ? -1 : 0;
}

static void drop(waiting *ws, size_t *n, size_t i) {
  close(ws[i].fd);
  ws[i] = ws[--*n];
}

int tr_dtu_accept(transport *t, int *out, dtu_filter *flt, tr_error *e) {
  *out = -1;
  int lfd = listen_fd(t, e);
  if (lfd < 0) return lfd;
  waiting ws[PENDING_MAX];
  size_t n = 0;
  uint64_t deadline = tr_now_ns() + (uint64_t)t->opt.wait_ms * 1000000u;
  uint64_t reg_ns = (uint64_t)(t->opt.register_timeout_ms > 0 ? t->opt.register_timeout_ms
                                                              : 5000) * 1000000u;
  int perr = 0;
  uint8_t left[DTU_PKT_MAX];
  size_t nleft = 0;
  while (*out < 0) {
    uint64_t now = tr_now_ns();
    if (now >= deadline) break;
    uint64_t until = deadline;
    for (size_t i = 0; i < n && *out < 0;)
      if (ws[i].deadline <= now) {
        /* Its time is up: it is this bus's DTU if what it sent says so
         * (a registration others' start with), else closed. */
        if (judge(t, &ws[i], true) > 0) {
          *out = ws[i].fd;
          nleft = ws[i].len - t->opt.reglen;
          memcpy(left, ws[i].buf + t->opt.reglen, nleft);
          ws[i] = ws[--n];
        } else {
          drop(ws, &n, i);
        }
      } else {
        if (ws[i].deadline < until) until = ws[i].deadline;
        i++;
      }
    struct pollfd p[PENDING_MAX + 1];
    p[0] = (struct pollfd){.fd = lfd, .events = n < PENDING_MAX ? POLLIN : 0};
    for (size_t i = 0; i < n; i++) p[i + 1] = (struct pollfd){.fd = ws[i].fd, .events = POLLIN};
    uint64_t ms = (until - now + 999999u) / 1000000u;
    int r = poll(p, n + 1, ms > 60000 ? 60000 : (int)ms);
    if (r < 0 && errno != EINTR) {
      perr = errno;
      break;
    }
    if (*out >= 0 || r <= 0) continue;
    /* Pending connections first: the array changes as they go. */
    for (size_t i = n; i-- > 0;) {
      if (!p[i + 1].revents) continue;
      waiting *w = &ws[i];
      ssize_t got = recv(w->fd, w->buf + w->len, reg_max(t) - w->len, MSG_DONTWAIT);
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (got <= 0) {
        drop(ws, &n, i);
        continue;
      }
      w->len += (size_t)got;
      int j = judge(t, w, false);
      if (j < 0) drop(ws, &n, i);
      if (j > 0 && *out < 0) {
        *out = w->fd;
        nleft = w->len - t->opt.reglen; /* the bus's bytes, after it */
        memcpy(left, w->buf + t->opt.reglen, nleft);
        ws[i] = ws[--n];
      }
    }
    if (*out >= 0 || !(p[0].revents & POLLIN)) continue;
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    int fd = accept4(lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) continue;
    if (t->opt.allow && !t->opt.allow(t->opt.allow_ctx, &sa)) {
      close(fd); /* before a byte of it is read */
      continue;
    }
    ws[n++] = (waiting){.fd = fd, .deadline = tr_now_ns() + reg_ns};
  }
  while (n) drop(ws, &n, n - 1);
  close(lfd);
  if (*out < 0 && perr) {
    char buf[128];
    return tr_fail(e, TR_EIO, "wait on %s: %s", t->where, tr_strerror(perr, buf, sizeof buf));
  }
  if (*out < 0)
    return tr_fail(e, TR_ENOTCONN, "DTU did not register on %s within %lld ms", t->where,
                   (long long)t->opt.wait_ms);
  tr_net_connected(*out);
  dtu_filter_reset(flt);
  if (nleft) dtu_filter_feed(flt, left, nleft);
  return TR_OK;
}
