/* ic-babbler: a TCP peer on loopback that sends bytes that frame nothing,
 * without end, as a broken serial server or a DTU with a stuck line does.
 *
 *   ic-babbler PORT
 *
 * Accepts connections on 127.0.0.1:PORT, one at a time, and writes
 * pseudo-random bytes to each as fast as it takes them, reading and
 * dropping whatever it is sent. Prints "ready" once it listens,
 * "accepted N" for each connection and "closed N BYTES" when the other
 * side closes the N-th after BYTES were sent. SIGTERM ends it.
 *
 *   ic-babbler --silent-udp PORT
 *
 * A DNS server that never answers: takes UDP datagrams on 127.0.0.1:PORT,
 * prints "query N" for each and answers none. */
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

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

/* --silent-udp: a DNS server that never answers. */
static int silent_udp(int port) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) {
    perror("ic-babbler: bind");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  unsigned long n = 0;
  while (!stop) {
    char buf[2048];
    struct pollfd p = {.fd = s, .events = POLLIN};
    if (poll(&p, 1, 200) <= 0) continue;
    if (recv(s, buf, sizeof buf, 0) > 0) printf("query %lu\n", ++n), fflush(stdout);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--silent-udp") == 0) {
    signal(SIGTERM, on_term);
    return silent_udp(atoi(argv[2]));
  }
  if (argc != 2) {
    fprintf(stderr, "usage: ic-babbler PORT | ic-babbler --silent-udp PORT\n");
    return 2;
  }
  signal(SIGTERM, on_term);
  signal(SIGPIPE, SIG_IGN);
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 4) != 0) {
    perror("ic-babbler: listen");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  uint32_t x = 2463534242u;
  unsigned conns = 0;
  while (!stop) {
    struct pollfd p = {.fd = ls, .events = POLLIN};
    if (poll(&p, 1, 200) <= 0) continue;
    int c = accept(ls, NULL, NULL);
    if (c < 0) continue;
    printf("accepted %u\n", ++conns);
    fflush(stdout);
    unsigned long long sent = 0;
    while (!stop) {
      char buf[512];
      for (size_t i = 0; i < sizeof buf; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5; /* xorshift32 */
        buf[i] = (char)x;
      }
      struct pollfd q = {.fd = c, .events = POLLIN | POLLOUT};
      if (poll(&q, 1, 200) <= 0) continue;
      if (q.revents & POLLIN) {
        ssize_t r = read(c, buf, sizeof buf);
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) break;
        continue;
      }
      if (q.revents & (POLLERR | POLLHUP)) break;
      ssize_t w = write(c, buf, sizeof buf);
      if (w < 0 && errno != EINTR && errno != EAGAIN) break;
      if (w > 0) sent += (unsigned long long)w;
    }
    close(c);
    printf("closed %u %llu\n", conns, sent);
    fflush(stdout);
  }
  close(ls);
  return 0;
}
