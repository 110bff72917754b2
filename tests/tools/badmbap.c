/* ic-badmbap: a Modbus TCP meter on loopback whose answers carry a bad MBAP
 * header, as some gateways' firmware sends them.
 *
 *   ic-badmbap MODE PORT
 *
 * Accepts connections on 127.0.0.1:PORT and answers every read (function
 * 0x03 or 0x04) with a well-formed PDU (every register 0, which the
 * profiles decode) under the right transaction id and unit, but with the
 * header's length field wrong:
 *
 *   len0      length 0
 *   len65535  length 65535, the PDU followed by 16 bytes of filler
 *
 * Prints "ready" once it listens and "request N" for each request it
 * answers. Closes a connection when the peer does; SIGTERM ends it. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONNS_MAX 16

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

typedef struct {
  int fd;
  uint8_t buf[260];
  size_t len;
} client;

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Answer the whole requests C holds. -1 when the connection must go. */
static int serve(client *c, int mode65535, unsigned long *nreq) {
  while (c->len >= 7) {
    size_t flen = 6 + (size_t)((c->buf[4] << 8) | c->buf[5]);
    if (flen < 8 || flen > sizeof c->buf) return -1;
    if (c->len < flen) return 0;
    uint8_t fc = c->buf[7];
    uint16_t count = (uint16_t)((c->buf[10] << 8) | c->buf[11]);
    if (flen != 12 || (fc != 0x03 && fc != 0x04) || count < 1 || count > 125)
      return -1;
    uint8_t out[7 + 2 + 250 + 16];
    size_t n = 0;
    out[n++] = c->buf[0]; /* transaction id */
    out[n++] = c->buf[1];
    out[n++] = 0; /* protocol id */
    out[n++] = 0;
    out[n++] = mode65535 ? 0xFF : 0x00; /* the length: wrong */
    out[n++] = mode65535 ? 0xFF : 0x00;
    out[n++] = c->buf[6]; /* unit */
    out[n++] = fc;
    out[n++] = (uint8_t)(count * 2);
    memset(out + n, 0, (size_t)count * 2);
    n += (size_t)count * 2;
    if (mode65535) {
      memset(out + n, 0xA5, 16);
      n += 16;
    }
    if (write_all(c->fd, out, n) != 0) return -1;
    printf("request %lu\n", ++*nreq);
    fflush(stdout);
    memmove(c->buf, c->buf + flen, c->len - flen);
    c->len -= flen;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3 || (strcmp(argv[1], "len0") != 0 && strcmp(argv[1], "len65535") != 0)) {
    fprintf(stderr, "usage: ic-badmbap len0|len65535 PORT\n");
    return 2;
  }
  int mode65535 = strcmp(argv[1], "len65535") == 0;
  signal(SIGTERM, on_term);
  signal(SIGPIPE, SIG_IGN);
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)atoi(argv[2]))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 8) != 0) {
    perror("ic-badmbap: listen");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  client cl[CONNS_MAX];
  size_t ncl = 0;
  unsigned long nreq = 0;
  while (!stop) {
    struct pollfd p[CONNS_MAX + 1];
    p[0] = (struct pollfd){.fd = ls, .events = POLLIN};
    for (size_t i = 0; i < ncl; i++)
      p[i + 1] = (struct pollfd){.fd = cl[i].fd, .events = POLLIN};
    if (poll(p, ncl + 1, 200) <= 0) continue;
    for (size_t i = ncl; i-- > 0;) {
      if (!p[i + 1].revents) continue;
      client *c = &cl[i];
      ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (r > 0) c->len += (size_t)r;
      if (r <= 0 || serve(c, mode65535, &nreq) != 0) {
        close(c->fd);
        cl[i] = cl[--ncl];
      }
    }
    if (p[0].revents & POLLIN) {
      int fd = accept(ls, NULL, NULL);
      if (fd < 0) continue;
      if (ncl == CONNS_MAX) {
        close(fd);
        continue;
      }
      cl[ncl++] = (client){.fd = fd};
    }
  }
  for (size_t i = 0; i < ncl; i++) close(cl[i].fd);
  close(ls);
  return 0;
}