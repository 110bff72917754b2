#include "transport/tr_net.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

const char *tr_net_where(char *buf, size_t cap, const char *host, int port) {
  /* An IPv6 literal needs brackets to be read back with its port. */
  if (strchr(host, ':'))
    snprintf(buf, cap, "[%s]:%d", host, port);
  else
    snprintf(buf, cap, "%s:%d", host, port);
  return buf;
}

int tr_net_resolve(const char *host, int port, bool numeric_only,
                   struct addrinfo **res) {
  char serv[8];
  snprintf(serv, sizeof serv, "%d", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV};
  if (numeric_only) hints.ai_flags |= AI_NUMERICHOST;
  *res = NULL;
  return getaddrinfo(host, serv, &hints, res);
}

int tr_net_resolve_failed(tr_error *e, const char *host, int grc, int syserr) {
  char eb[128];
  return tr_fail(e, TR_EIO, "resolve %s: %s", host,
                 grc == EAI_SYSTEM && syserr ? tr_strerror(syserr, eb, sizeof eb)
                                             : gai_strerror(grc));
}

int tr_net_socket(const struct addrinfo *ai) {
  return socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
}

int tr_net_connect(int fd, const struct addrinfo *ai) {
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return 0;
  return errno == EINPROGRESS ? 1 : -1;
}

int tr_net_connect_result(int fd) {
  int soerr = 0;
  socklen_t sl = sizeof soerr;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) soerr = errno;
  return soerr;
}

void tr_net_connected(int fd) {
  /* A request is one small frame that must leave now, not wait for Nagle. */
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int tr_net_connect_failed(tr_error *e, int err, const char *where,
                          int64_t timeout_ms) {
  char eb[128];
  if (err == ECONNREFUSED)
    return tr_fail(e, TR_ECONNREFUSED, "connect %s: %s", where,
                   tr_strerror(err, eb, sizeof eb));
  if (err == ETIMEDOUT)
    return tr_fail(e, TR_ETIMEOUT, "connect %s: no answer within %lld ms",
                   where, (long long)timeout_ms);
  return tr_fail(e, TR_EIO, "connect %s: %s", where,
                 err ? tr_strerror(err, eb, sizeof eb) : "no address");
}

bool tr_net_is_reset(int err) {
  return err == ECONNRESET || err == EPIPE || err == ENOTCONN ||
         err == ECONNABORTED;
}

int tr_net_lost(tr_error *e, int err, const char *where) {
  char eb[128];
  if (err == 0)
    return tr_fail(e, TR_ECONNRESET, "connection closed by %s", where);
  if (tr_net_is_reset(err))
    return tr_fail(e, TR_ECONNRESET, "connection to %s lost: %s", where,
                   tr_strerror(err, eb, sizeof eb));
  return tr_fail(e, TR_EIO, "%s: %s", where, tr_strerror(err, eb, sizeof eb));
}

int tr_net_junk(tr_error *e, const char *where, size_t n) {
  return tr_fail(e, TR_EMALFORMED,
                 "%s sent %zu bytes that frame no answer: connection closed",
                 where, n);
}

int tr_net_drain(int fd) {
  uint8_t buf[1024];
  size_t total = 0;
  while (total < TR_NET_DRAIN_MAX) {
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      total += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
  }
  return 0;
}
