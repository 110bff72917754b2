/* ic-tcprelay: a TCP relay on loopback that a test can black-hole or hang
 * up, and that can delay what it forwards.
 *
 *   ic-tcprelay LISTEN_PORT TARGET_PORT DIR [DELAY_MS]
 *
 * Forwards every connection to 127.0.0.1:TARGET_PORT. While the file
 * DIR/blackhole exists it stops forwarding without closing anything: no
 * byte is read or written and no new connection is accepted, so peers hang
 * as on a dead 4G path; when the file goes, the bytes flow again. When the
 * file DIR/hangup appears, it closes every connection, as a DTU closes an
 * idle link, removes the file and prints "hangup N" (the N-th). Prints
 * "ready" once it listens and "accepted N" for each connection; SIGTERM
 * ends it. At most 64 connections.
 *
 * With DELAY_MS (> 0) every chunk read from either side is written to the
 * other DELAY_MS later, each direction in order, so the relay adds DELAY_MS
 * each way (2 x DELAY_MS to a round trip) as a slow link does. Each
 * direction buffers at most 4 MiB: past that it stops reading from its
 * sender until the backlog shrinks. The sockets are then non-blocking,
 * without Nagle's delay (TCP_NODELAY) and acknowledge each segment at once
 * (TCP_QUICKACK), so nothing but DELAY_MS is added; a
 * side that closes has what was read from it delivered first. The blackhole
 * and hangup files work as without a delay (a black hole holds back the
 * delayed bytes too; a hangup drops them). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* ppoll */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAIRS 64

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

static int listen_on(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0) return -1;
  return s;
}

static int dial(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
    close(s);
    return -1;
  }
  return s;
}

/* --- the delayed relay (DELAY_MS > 0) ------------------------------------ */

#define QUEUE_CAP (4u << 20)

/* A chunk read from one side, due for the other at DUE (monotonic ns). */
typedef struct chunk {
  struct chunk *next;
  int64_t due;
  size_t len, off;
  char data[];
} chunk;

/* One direction of a pair: side 0 reads a and writes b, side 1 the reverse. */
typedef struct {
  chunk *head, *tail;
  size_t bytes;
  bool eof;      /* the sender closed: close the pair once delivered */
  bool blocked;  /* the receiver's buffer was full: wait for POLLOUT */
} dir_q;

static int64_t mono_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void q_free(dir_q *q) {
  while (q->head) {
    chunk *c = q->head;
    q->head = c->next;
    free(c);
  }
  *q = (dir_q){0};
}

static void prepare_delayed(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Write what is due in Q to FD. Returns -1 when the pair is to be closed. */
static int q_flush(dir_q *q, int fd, int64_t now) {
  while (q->head && q->head->due <= now) {
    chunk *c = q->head;
    ssize_t k = write(fd, c->data + c->off, c->len - c->off);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      q->blocked = true;
      return 0;
    }
    if (k <= 0) return -1;
    c->off += (size_t)k;
    q->bytes -= (size_t)k;
    if (c->off < c->len) {
      q->blocked = true;
      return 0;
    }
    q->head = c->next;
    if (!q->head) q->tail = NULL;
    free(c);
  }
  q->blocked = false;
  return q->eof && !q->head ? -1 : 0;
}

/* Read what FD has into Q, due DELAY_NS from now. Returns -1 on an error. */
static int q_read(dir_q *q, int fd, int64_t delay_ns) {
  char buf[16384];
  ssize_t r = read(fd, buf, sizeof buf);
  /* Acknowledge at once, as the link this models does: Linux leaves quick
   * acknowledgement mode on its own, and a delayed ACK (up to 40 ms) would
   * hold back a sender's next small segment behind Nagle's algorithm, a
   * delay no real link of this round trip adds. Re-armed after each read. */
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
  if (r < 0) return -1;
  if (r == 0) {
    q->eof = true;
    return 0;
  }
  chunk *c = malloc(sizeof *c + (size_t)r);
  if (!c) return -1;
  c->next = NULL;
  c->due = mono_ns() + delay_ns;
  c->len = (size_t)r;
  c->off = 0;
  memcpy(c->data, buf, (size_t)r);
  if (q->tail)
    q->tail->next = c;
  else
    q->head = c;
  q->tail = c;
  q->bytes += (size_t)r;
  return 0;
}

static void close_pair(int *a, int *b, dir_q q[2]) {
  close(*a);
  close(*b);
  *a = *b = -1;
  q_free(&q[0]);
  q_free(&q[1]);
}

/* One turn of the delayed relay: deliver what is due, wait for the next
 * due chunk or for input (at most 50 ms, so the control files are seen),
 * accept and read. Returns -1 when poll fails. */
static int relay_delayed(int ls, int *a, int *b, dir_q (*dq)[2], int blocked, int target,
                         int64_t delay_ns, unsigned *accepted) {
  int64_t now = mono_ns();
  if (!blocked)
    for (int i = 0; i < PAIRS; i++)
      if (a[i] >= 0 &&
          (q_flush(&dq[i][0], b[i], now) < 0 || q_flush(&dq[i][1], a[i], now) < 0))
        close_pair(&a[i], &b[i], dq[i]);
  int64_t wait = 50 * 1000000LL;
  struct pollfd p[1 + 2 * PAIRS];
  int n = 0;
  p[n++] = (struct pollfd){.fd = blocked ? -1 : ls, .events = POLLIN};
  for (int i = 0; i < PAIRS; i++) {
    short ea = 0, eb = 0;
    if (!blocked && a[i] >= 0) {
      dir_q *ab = &dq[i][0], *ba = &dq[i][1];
      if (!ab->eof && ab->bytes < QUEUE_CAP) ea |= POLLIN;
      if (!ba->eof && ba->bytes < QUEUE_CAP) eb |= POLLIN;
      if (ab->blocked) eb |= POLLOUT;
      if (ba->blocked) ea |= POLLOUT;
      for (int s = 0; s < 2; s++) {
        dir_q *q = &dq[i][s];
        if (q->head && !q->blocked && q->head->due - now < wait)
          wait = q->head->due - now > 0 ? q->head->due - now : 0;
      }
    }
    p[n++] = (struct pollfd){.fd = ea ? a[i] : -1, .events = ea};
    p[n++] = (struct pollfd){.fd = eb ? b[i] : -1, .events = eb};
  }
  struct timespec ts = {.tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000};
  if (ppoll(p, (nfds_t)n, &ts, NULL) < 0) return errno == EINTR ? 0 : -1;
  if (blocked) return 0;
  if (p[0].revents & POLLIN) {
    int c = accept(ls, NULL, NULL);
    int slot = -1;
    for (int i = 0; i < PAIRS && slot < 0; i++)
      if (a[i] < 0) slot = i;
    int t = c >= 0 && slot >= 0 ? dial(target) : -1;
    if (t < 0) {
      if (c >= 0) close(c);
    } else {
      prepare_delayed(c);
      prepare_delayed(t);
      a[slot] = c;
      b[slot] = t;
      dq[slot][0] = dq[slot][1] = (dir_q){0};
      printf("accepted %u\n", ++*accepted);
      fflush(stdout);
    }
  }
  for (int i = 0; i < PAIRS; i++) {
    for (int side = 0; side < 2 && a[i] >= 0; side++) {
      struct pollfd *q = &p[1 + 2 * i + side];
      if (q->fd < 0 || !(q->events & POLLIN) || !(q->revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      if (q_read(&dq[i][side], side ? b[i] : a[i], delay_ns) < 0) close_pair(&a[i], &b[i], dq[i]);
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 4 && argc != 5) {
    fprintf(stderr, "usage: ic-tcprelay LISTEN_PORT TARGET_PORT DIR [DELAY_MS]\n");
    return 2;
  }
  long delay_ms = argc == 5 ? atol(argv[4]) : 0;
  if (delay_ms < 0) {
    fprintf(stderr, "ic-tcprelay: DELAY_MS must be 0 or more\n");
    return 2;
  }
  int64_t delay_ns = (int64_t)delay_ms * 1000000;
  struct sigaction sa = {.sa_handler = on_term};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  int target = atoi(argv[2]);
  char hole[4096], hangup[4096];
  snprintf(hole, sizeof hole, "%s/blackhole", argv[3]);
  snprintf(hangup, sizeof hangup, "%s/hangup", argv[3]);
  unsigned accepted = 0, hangups = 0;
  int ls = listen_on(atoi(argv[1]));
  if (ls < 0) {
    perror("ic-tcprelay");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  int a[PAIRS], b[PAIRS];
  static dir_q dq[PAIRS][2];
  for (int i = 0; i < PAIRS; i++) a[i] = b[i] = -1;
  while (!stop) {
    if (access(hangup, F_OK) == 0) {
      for (int i = 0; i < PAIRS; i++) {
        if (a[i] >= 0) close(a[i]);
        if (b[i] >= 0) close(b[i]);
        a[i] = b[i] = -1;
        q_free(&dq[i][0]);
        q_free(&dq[i][1]);
      }
      unlink(hangup);
      printf("hangup %u\n", ++hangups);
      fflush(stdout);
    }
    int blocked = access(hole, F_OK) == 0;
    if (delay_ns > 0) {
      if (relay_delayed(ls, a, b, dq, blocked, target, delay_ns, &accepted) < 0) break;
      continue;
    }
    struct pollfd p[1 + 2 * PAIRS];
    int n = 0;
    p[n++] = (struct pollfd){.fd = blocked ? -1 : ls, .events = POLLIN};
    for (int i = 0; i < PAIRS; i++) {
      p[n++] = (struct pollfd){.fd = blocked ? -1 : a[i], .events = POLLIN};
      p[n++] = (struct pollfd){.fd = blocked ? -1 : b[i], .events = POLLIN};
    }
    if (poll(p, (nfds_t)n, 50) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (blocked) continue;
    if (p[0].revents & POLLIN) {
      int c = accept(ls, NULL, NULL);
      int slot = -1;
      for (int i = 0; i < PAIRS && slot < 0; i++)
        if (a[i] < 0) slot = i;
      int t = c >= 0 && slot >= 0 ? dial(target) : -1;
      if (t < 0) {
        if (c >= 0) close(c);
      } else {
        a[slot] = c;
        b[slot] = t;
        printf("accepted %u\n", ++accepted);
        fflush(stdout);
      }
    }
    for (int i = 0; i < PAIRS; i++) {
      for (int side = 0; side < 2; side++) {
        struct pollfd *q = &p[1 + 2 * i + side];
        if (q->fd < 0 || !(q->revents & (POLLIN | POLLHUP | POLLERR))) continue;
        int from = side ? b[i] : a[i], to = side ? a[i] : b[i];
        char buf[16384];
        ssize_t r = read(from, buf, sizeof buf);
        ssize_t w = 0;
        while (r > 0 && w < r) {
          ssize_t k = write(to, buf + w, (size_t)(r - w));
          if (k <= 0) break;
          w += k;
        }
        if (r <= 0 || w < r) {
          close(a[i]);
          close(b[i]);
          a[i] = b[i] = -1;
          break;
        }
      }
    }
  }
  for (int i = 0; i < PAIRS; i++) {
    if (a[i] >= 0) close(a[i]);
    if (b[i] >= 0) close(b[i]);
  }
  close(ls);
  return 0;
}
