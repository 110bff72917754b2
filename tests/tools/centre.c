/* ic-centre: a water-resources monitoring centre standing in for the
 * bureau's in tests and the demo (SZY206 / SL/T 427 over TCP).
 *
 *   ic-centre PORT MODEFILE [--station ADDRESS]...
 *
 * Listens on 127.0.0.1:PORT and prints "ready" when it does. Terminals
 * connect and send frames; each frame is checked (start and end bytes,
 * length, CS, and with --station, that its five address bytes, given as ten
 * hex digits, are one of those) and logged on stdout as one JSON line:
 *
 *   {"ms":..., "conn":N, "event":"frame", "ok":true, "hex":"68...",
 *    "frame":{...uplink-decode's fields...}, "answer":"confirmed"}
 *
 * and "accept", "close", "garbage" (bytes that start no frame) and "mode"
 * events. MODEFILE's first word says what the centre does, read at every
 * frame and every 50 ms (absent: confirm):
 *
 *   confirm  confirm every good uplink frame: the same address and AFN,
 *            C with DIR = 0 and the frame's FCB and data type, data 00
 *   silent   log, never confirm
 *   refuse   stop listening (connections are refused) and close the
 *            connections it has
 *   drop     close the connections it has, and each new one at its first frame
 *   garbage  confirm, each confirm preceded by noise, the same confirm with
 *            a bad CS and a header too short to be a frame
 *   query    confirm, and send one B0H query (real-time data) for each
 *            address a connection has sent frames from, once on entering
 *            the mode
 *
 * An answer to a query (an uplink B0H frame) is logged and never confirmed.
 *
 * A mode change is logged ({"event":"mode",...}) once it is in force, so a
 * test can wait for it. SIGTERM ends it with status 0. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proto/szy206.h"

#define CONNS_MAX 16
#define BUF_MAX 4096
#define STATIONS_MAX 64

enum mode { M_CONFIRM, M_SILENT, M_REFUSE, M_DROP, M_QUERY, M_GARBAGE, M_NMODES };
static const char *const MODE_NAMES[] = {"confirm", "silent", "refuse", "drop", "query",
                                         "garbage"};

typedef struct {
  int fd;
  unsigned id;
  uint8_t buf[BUF_MAX];
  size_t len;
  bool have_addr; /* the address of its last good frame */
  uint8_t addr[SZY_ADDR_LEN];
  /* The addresses it has sent from (a gateway reports several stations on
   * one connection), for the queries. */
  uint8_t seen[8][SZY_ADDR_LEN];
  int nseen;
} conn;

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

static conn conns[CONNS_MAX];
static int listen_fd = -1;
static unsigned next_id = 1;
static uint8_t stations[STATIONS_MAX][SZY_ADDR_LEN];
static int nstations;

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hex(char *out, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02X", p[i]);
  out[2 * n] = '\0';
}

static enum mode read_mode(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return M_CONFIRM;
  char word[32] = "";
  if (fscanf(f, "%31s", word) != 1) word[0] = '\0';
  fclose(f);
  for (int m = 0; m < M_NMODES; m++)
    if (strcmp(word, MODE_NAMES[m]) == 0) return (enum mode)m;
  return M_CONFIRM;
}

static int open_listener(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void close_conn(conn *c, const char *why) {
  printf("{\"ms\":%lld,\"conn\":%u,\"event\":\"close\",\"why\":\"%s\"}\n", now_ms(), c->id,
         why);
  close(c->fd);
  c->fd = -1;
  c->len = 0;
  c->have_addr = false;
}

static bool station_known(const uint8_t addr[SZY_ADDR_LEN]) {
  if (nstations == 0) return true;
  for (int i = 0; i < nstations; i++)
    if (memcmp(stations[i], addr, SZY_ADDR_LEN) == 0) return true;
  return false;
}

static void send_frame(conn *c, uint8_t ctl, uint8_t afn, const uint8_t *data, size_t n) {
  uint8_t out[SZY_FRAME_MAX];
  int len = szy_build(out, sizeof out, ctl, c->addr, afn, data, n);
  if (len > 0 && write(c->fd, out, (size_t)len) != len)
    close_conn(c, "write failed");
}

/* Before a confirm in garbage mode: noise, the same confirm with a bad CS,
 * and a header too short to be a frame. None of it may count as a confirm. */
static void send_garbage(conn *c, uint8_t ctl, uint8_t afn) {
  uint8_t g[64], zero = 0;
  size_t n = 0;
  static const uint8_t noise[] = {0x00, 0xFF, 0x16, 0x16, 0xAA, 0x55};
  memcpy(g, noise, sizeof noise);
  n += sizeof noise;
  int fl = szy_build(g + n, sizeof g - n, ctl, c->addr, afn, &zero, 1);
  if (fl > 0) {
    g[n + (size_t)fl - 2] ^= 0x5A; /* CS */
    n += (size_t)fl;
  }
  static const uint8_t shorthdr[] = {0x68, 0x03, 0x68, 0x33};
  memcpy(g + n, shorthdr, sizeof shorthdr);
  n += sizeof shorthdr;
  if (write(c->fd, g, n) != (ssize_t)n) close_conn(c, "write failed");
}

/* One whole frame (or the bytes that claim to be one) from C. */
static void on_frame(conn *c, const uint8_t *p, size_t n, enum mode mode) {
  static char hx[2 * SZY_FRAME_MAX + 1], desc[8192];
  szy_frame f;
  int rc = szy_parse(p, n, &f);
  bool addr_ok = rc == SZY_OK && station_known(f.addr);
  bool up = rc == SZY_OK && (f.c & SZY_C_DIR);
  hex(hx, p, n);
  szy_describe(p, n, desc, sizeof desc);
  const char *answer = "none";
  if (rc == SZY_OK && addr_ok && up) {
    memcpy(c->addr, f.addr, SZY_ADDR_LEN);
    c->have_addr = true;
    bool known = false;
    for (int i = 0; i < c->nseen; i++) known |= memcmp(c->seen[i], f.addr, SZY_ADDR_LEN) == 0;
    if (!known && c->nseen < 8) memcpy(c->seen[c->nseen++], f.addr, SZY_ADDR_LEN);
    if (mode == M_DROP) {
      answer = "dropped";
    } else if (f.afn == SZY_AFN_QUERY) {
      answer = "none"; /* an answer to a query is not confirmed */
    } else if (mode == M_CONFIRM || mode == M_QUERY || mode == M_GARBAGE) {
      /* DIR 0, the frame's FCB and data type echoed. */
      uint8_t ctl = (uint8_t)(f.c & 0x3F);
      uint8_t zero = 0;
      if (mode == M_GARBAGE) send_garbage(c, ctl, f.afn);
      if (c->fd >= 0) send_frame(c, ctl, f.afn, &zero, 1);
      answer = "confirmed";
    }
  }
  printf("{\"ms\":%lld,\"conn\":%u,\"event\":\"frame\",\"ok\":%s,\"address_ok\":%s,"
         "\"hex\":\"%s\",\"frame\":%s,\"answer\":\"%s\"}\n",
         now_ms(), c->id, rc == SZY_OK ? "true" : "false", addr_ok ? "true" : "false", hx,
         desc, answer);
  if (mode == M_DROP && c->fd >= 0) close_conn(c, "dropped");
}

/* Frames out of what C has buffered; bytes that start none are dropped up to
 * the next 0x68 and logged. */
static void take_frames(conn *c, enum mode mode) {
  size_t at = 0;
  while (c->fd >= 0 && at < c->len) {
    int len = szy_frame_len(c->buf + at, c->len - at);
    if (len == SZY_ENEEDMORE) break;
    if (len == SZY_EMALFORMED) {
      size_t skip = 1;
      while (at + skip < c->len && c->buf[at + skip] != SZY_START) skip++;
      static char hx[2 * BUF_MAX + 1];
      hex(hx, c->buf + at, skip);
      printf("{\"ms\":%lld,\"conn\":%u,\"event\":\"garbage\",\"hex\":\"%s\"}\n", now_ms(),
             c->id, hx);
      at += skip;
      continue;
    }
    if ((size_t)len > c->len - at) break;
    on_frame(c, c->buf + at, (size_t)len, mode);
    at += (size_t)len;
  }
  if (c->fd < 0) return;
  memmove(c->buf, c->buf + at, c->len - at);
  c->len -= at;
}

static void send_queries(void) {
  for (int i = 0; i < CONNS_MAX; i++) {
    conn *c = &conns[i];
    for (int k = 0; c->fd >= 0 && k < c->nseen; k++) {
      memcpy(c->addr, c->seen[k], SZY_ADDR_LEN);
      send_frame(c, 0x30, SZY_AFN_QUERY, NULL, 0);
      printf("{\"ms\":%lld,\"conn\":%u,\"event\":\"query\",\"address\":\"%02X%02X%02X%02X%02X\"}\n",
             now_ms(), c->id, c->seen[k][0], c->seen[k][1], c->seen[k][2], c->seen[k][3],
             c->seen[k][4]);
    }
  }
}

/* The mode changes: what it means at once. */
static int enter_mode(enum mode m, int port) {
  if (m == M_REFUSE || m == M_DROP) {
    for (int i = 0; i < CONNS_MAX; i++)
      if (conns[i].fd >= 0) close_conn(&conns[i], MODE_NAMES[m]);
  }
  if (m == M_REFUSE && listen_fd >= 0) {
    close(listen_fd);
    listen_fd = -1;
  }
  if (m != M_REFUSE && listen_fd < 0) {
    listen_fd = open_listener(port);
    if (listen_fd < 0) {
      fprintf(stderr, "ic-centre: cannot listen again on port %d: %s\n", port,
              strerror(errno));
      return -1;
    }
  }
  if (m == M_QUERY) send_queries();
  printf("{\"ms\":%lld,\"event\":\"mode\",\"mode\":\"%s\"}\n", now_ms(), MODE_NAMES[m]);
  return 0;
}

static void accept_one(enum mode mode) {
  int fd = accept(listen_fd, NULL, NULL);
  if (fd < 0) return;
  for (int i = 0; i < CONNS_MAX; i++) {
    if (conns[i].fd >= 0) continue;
    conns[i].fd = fd;
    conns[i].id = next_id++;
    conns[i].len = 0;
    conns[i].have_addr = false;
    conns[i].nseen = 0;
    printf("{\"ms\":%lld,\"conn\":%u,\"event\":\"accept\"}\n", now_ms(), conns[i].id);
    return;
  }
  (void)mode;
  close(fd); /* full: a terminal more than a test needs */
}

static int parse_args(int argc, char **argv, int *port) {
  if (argc < 3) return -1;
  *port = atoi(argv[1]);
  for (int i = 3; i < argc; i++) {
    if (strcmp(argv[i], "--station") != 0 || i + 1 >= argc || nstations >= STATIONS_MAX ||
        strlen(argv[i + 1]) != 10)
      return -1;
    const char *h = argv[++i];
    for (int k = 0; k < SZY_ADDR_LEN; k++) {
      unsigned v;
      if (sscanf(h + 2 * k, "%2x", &v) != 1) return -1;
      stations[nstations][k] = (uint8_t)v;
    }
    nstations++;
  }
  return *port > 0 && *port < 65536 ? 0 : -1;
}

int main(int argc, char **argv) {
  int port;
  if (parse_args(argc, argv, &port) < 0) {
    fprintf(stderr, "usage: ic-centre PORT MODEFILE [--station ADDRESS]...\n");
    return 2;
  }
  const char *modefile = argv[2];
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {.sa_handler = on_term};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  for (int i = 0; i < CONNS_MAX; i++) conns[i].fd = -1;
  enum mode mode = read_mode(modefile);
  if (mode != M_REFUSE) listen_fd = open_listener(port);
  if (mode != M_REFUSE && listen_fd < 0) {
    fprintf(stderr, "ic-centre: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
    return 1;
  }
  printf("ready %s\n", MODE_NAMES[mode]);
  while (!stop) {
    struct pollfd pfd[CONNS_MAX + 1];
    int map[CONNS_MAX + 1], n = 0;
    if (listen_fd >= 0) {
      pfd[n] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
      map[n++] = -1;
    }
    for (int i = 0; i < CONNS_MAX; i++) {
      if (conns[i].fd < 0) continue;
      pfd[n] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
      map[n++] = i;
    }
    int r = poll(pfd, (nfds_t)n, 50);
    if (r < 0 && errno != EINTR) break;
    enum mode now = read_mode(modefile);
    if (now != mode) {
      if (enter_mode(now, port) < 0) return 1;
      mode = now;
      continue; /* the descriptors polled may be closed */
    }
    for (int k = 0; r > 0 && k < n; k++) {
      if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      if (map[k] < 0) {
        accept_one(mode);
        continue;
      }
      conn *c = &conns[map[k]];
      if (c->fd < 0) continue;
      ssize_t got = read(c->fd, c->buf + c->len, BUF_MAX - c->len);
      if (got <= 0) {
        close_conn(c, got == 0 ? "eof" : "error");
        continue;
      }
      c->len += (size_t)got;
      take_frames(c, mode);
      if (c->fd >= 0 && c->len == BUF_MAX) close_conn(c, "overflow");
    }
  }
  for (int i = 0; i < CONNS_MAX; i++)
    if (conns[i].fd >= 0) close(conns[i].fd);
  if (listen_fd >= 0) close(listen_fd);
  return 0;
}
