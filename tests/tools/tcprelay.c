/* ic-tcprelay: a TCP relay on loopback that a test can black-hole or hang
 * up.
 *
 *   ic-tcprelay LISTEN_PORT TARGET_PORT DIR
 *
 * Forwards every connection to 127.0.0.1:TARGET_PORT. While the file
 * DIR/blackhole exists it stops forwarding without closing anything: no
 * byte is read or written and no new connection is accepted, so peers hang
 * as on a dead 4G path; when the file goes, the bytes flow again. When the
 * file DIR/hangup appears, it closes every connection, as a DTU closes an
 * idle link, removes the file and prints "hangup N" (the N-th). Prints
 * "ready" once it listens and "accepted N" for each connection; SIGTERM
 * ends it. At most 64 connections. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: ic-tcprelay LISTEN_PORT TARGET_PORT DIR\n");
    return 2;
  }
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
  for (int i = 0; i < PAIRS; i++) a[i] = b[i] = -1;
  while (!stop) {
    if (access(hangup, F_OK) == 0) {
      for (int i = 0; i < PAIRS; i++) {
        if (a[i] >= 0) close(a[i]);
        if (b[i] >= 0) close(b[i]);
        a[i] = b[i] = -1;
      }
      unlink(hangup);
      printf("hangup %u\n", ++hangups);
      fflush(stdout);
    }
    int blocked = access(hole, F_OK) == 0;
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
